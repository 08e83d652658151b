//! `POST …/embeddings`.
use serde_json::Value;

use super::record_usage;
use crate::llm::exchange::{ApiReader, record_identity};
use crate::llm::json::str_at;
use crate::llm::params::{record_model, record_numbers};
use crate::llm::{LlmCall, attr};

pub(super) struct EmbeddingsApi;

impl ApiReader for EmbeddingsApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        record_model(call, request);
        record_numbers(
            call,
            request,
            &[("dimensions", attr::EMBEDDINGS_DIMENSION_COUNT)],
        );
        if let Some(format) = str_at(request, "encoding_format") {
            call.set(attr::REQUEST_ENCODING_FORMATS, vec![format]);
        }
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        record_identity(call, response);
        record_usage(call, response);
    }
}
