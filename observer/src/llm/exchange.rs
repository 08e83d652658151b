//! The flow every API shares: read the request once, then the response in whichever form it
//! came (missing, an HTTP error, a stream, or a JSON body).
use serde_json::Value;

use super::error::ProviderError;
use super::estimate::estimate_missing_usage;
use super::json::{self, str_at};
use super::ratelimit::record_rate_limits;
use super::stream::StreamSummary;
use super::{LlmCall, attr};
use crate::http::{Body, Exchange, ExchangeEnd, Response};

/// One API's reading of its request and response bodies.
pub(crate) trait ApiReader {
    /// The request body, `Value::Null` when it is not JSON.
    fn read_request(&self, call: &mut LlmCall, request: &Value);

    /// A successful, whole JSON response.
    fn read_json_response(&self, call: &mut LlmCall, response: &Value);

    /// Whether a successful response is streamed; by default, whether it is SSE.
    fn is_stream(&self, response: &Response) -> bool {
        is_event_stream(response)
    }

    /// A successful streamed response; `None` for APIs that never stream.
    fn read_stream_response(&self, _call: &mut LlmCall, _body: &Body) -> Option<StreamSummary> {
        None
    }
}

/// The call `exchange` makes to `api`, as far as it can be read.
pub(crate) fn read_call(
    provider: &str,
    operation: &str,
    exchange: &Exchange,
    api: &dyn ApiReader,
) -> LlmCall {
    read_into(LlmCall::new(provider, operation), exchange, api)
}

/// As [`read_call`], into a call already holding what the URL said (APIs that name the
/// model in the path).
pub(crate) fn read_into(mut call: LlmCall, exchange: &Exchange, api: &dyn ApiReader) -> LlmCall {
    read_exchange(&mut call, exchange, api);
    call
}

fn read_exchange(call: &mut LlmCall, exchange: &Exchange, api: &dyn ApiReader) {
    let request = json::parse(&exchange.request.body.data).unwrap_or(Value::Null);
    api.read_request(call, &request);
    if exchange.end != ExchangeEnd::Complete {
        call.set(attr::OBSERVER_EXCHANGE_END, end_name(exchange.end));
    }
    let Some(response) = &exchange.response else {
        call.set(attr::ERROR_TYPE, end_name(exchange.end));
        return;
    };
    record_rate_limits(call, &response.headers);
    if !(200..300).contains(&response.status) {
        record_http_error(call, response);
        return;
    }
    if api.is_stream(response)
        && let Some(summary) = api.read_stream_response(call, &response.body)
    {
        estimate_missing_usage(call);
        summary.record(call, exchange);
        return;
    }
    match json::parse(&response.body.data) {
        Some(body) => api.read_json_response(call, &body),
        // A cut-off JSON body: the request side is all we have.
        None if exchange.end != ExchangeEnd::Complete => {
            call.set(attr::ERROR_TYPE, end_name(exchange.end));
        }
        None => {}
    }
}

/// `gen_ai.response.id` and `gen_ai.response.model`, named alike by every provider.
pub(crate) fn record_identity(call: &mut LlmCall, response: &Value) {
    record_response_names(call, str_at(response, "id"), str_at(response, "model"));
}

/// The response's id and model, as a whole response or each stream chunk names them (the
/// latest wins; most chunks repeat the same ones, which are then left in place).
pub(crate) fn record_response_names(call: &mut LlmCall, id: Option<&str>, model: Option<&str>) {
    for (key, value) in [(attr::RESPONSE_ID, id), (attr::RESPONSE_MODEL, model)] {
        if let Some(value) = value
            && call.attribute(key).and_then(Value::as_str) != Some(value)
        {
            call.set(key, value);
        }
    }
}

fn record_http_error(call: &mut LlmCall, response: &Response) {
    let status = response.status.to_string();
    let body = json::parse(&response.body.data);
    let error = body.as_ref().and_then(ProviderError::from_error_body);
    let error = match aws_error_type(response) {
        Some(kind) => error.unwrap_or_default().with_kind(kind),
        None => error.unwrap_or_default(),
    };
    error.record(call, &status);
}

/// AWS names the error in a header (`x-amzn-ErrorType: ThrottlingException:http://...`),
/// its body carrying only a message.
fn aws_error_type(response: &Response) -> Option<&str> {
    let header = response.headers.get("x-amzn-errortype")?;
    let kind = header.split(':').next().unwrap_or(header).trim();
    (!kind.is_empty()).then_some(kind)
}

pub(crate) fn is_event_stream(response: &Response) -> bool {
    let declared = response
        .headers
        .get("content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("text/event-stream"));
    // Some servers stream without saying so.
    let looks_like_sse = || {
        let start = response.body.data.trim_ascii_start();
        [&b"data:"[..], b"event:", b":"]
            .iter()
            .any(|prefix| start.starts_with(prefix))
    };
    declared || looks_like_sse()
}

fn end_name(end: ExchangeEnd) -> &'static str {
    match end {
        // A complete exchange without a response cannot happen; name it plainly if it does.
        ExchangeEnd::Complete => "no_response",
        ExchangeEnd::ConnectionClosed => "connection_closed",
        ExchangeEnd::ObserverStopped => "observer_stopped",
        ExchangeEnd::DataLost => "data_lost",
    }
}
