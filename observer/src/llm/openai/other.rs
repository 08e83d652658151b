//! OpenAI's endpoint families beyond text generation (images, audio, moderations, files,
//! batches, fine-tuning, models): model, usage and status where the bodies say them.
//! Multipart uploads (image edits, transcriptions) are not JSON and give the status only.
use serde_json::Value;

use super::record_usage;
use crate::llm::exchange::{ApiReader, record_identity};
use crate::llm::params::record_model;
use crate::llm::{LlmCall, attr};

pub(super) struct OtherApi {
    /// `gen_ai.output.type`, for families whose output is not text.
    output_type: Option<&'static str>,
}

pub(super) const PLAIN: OtherApi = OtherApi { output_type: None };
pub(super) const IMAGES: OtherApi = OtherApi {
    output_type: Some("image"),
};
pub(super) const SPEECH: OtherApi = OtherApi {
    output_type: Some("speech"),
};

impl ApiReader for OtherApi {
    fn read_request(&self, call: &mut LlmCall, request: &Value) {
        record_model(call, request);
        if let Some(output_type) = self.output_type {
            call.set(attr::OUTPUT_TYPE, output_type);
        }
    }

    fn read_json_response(&self, call: &mut LlmCall, response: &Value) {
        record_identity(call, response);
        record_usage(call, response);
    }
}
