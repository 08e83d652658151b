//! Secrets out of headers and URLs.
