//! End-to-end tests of the observer: a mock LLM API server (`llm-mock-server`), real clients
//! (curl, Python, the official SDKs, in `clients/`) and the harness the tests in `tests/` use.

pub mod mock;
