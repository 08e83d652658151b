//! Calls made with reqwest over rustls (this binary keeps its symbols), printing one JSON
//! record per call, like the Python clients (tests/clients/common.py). All I/O happens on the
//! main thread (single-threaded runtime), so the thread id is the pid.
//!
//! Usage: rustls-client SCENARIO...   (chat_json, chat_stream, messages_json, messages_stream)
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};

struct Mock {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Mock {
    fn from_env() -> Result<Mock> {
        let base = std::env::var("MOCK_BASE").context("MOCK_BASE")?;
        let key = std::env::var("MOCK_API_KEY").context("MOCK_API_KEY")?;
        let ca = std::fs::read(std::env::var("MOCK_CA").context("MOCK_CA")?)?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .build()?;
        Ok(Mock { base, key, http })
    }

    /// POSTs `body`; returns the status and the body, read as a stream of pieces when asked.
    async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, String)],
    ) -> Result<(u16, String)> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let mut stream = response.bytes_stream();
        let mut payload = Vec::new();
        while let Some(piece) = stream.next().await {
            payload.extend_from_slice(&piece?);
        }
        Ok((status, String::from_utf8(payload)?))
    }
}

fn emit(call: &str, fields: Value) {
    let pid = std::process::id();
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let exe = std::env::current_exe().ok();
    let mut record = json!({
        "call": call, "pid": pid, "tid": pid, "comm": comm.trim(),
        "exe": exe.as_deref().and_then(|p| p.file_name()).and_then(|n| n.to_str()),
    });
    if let (Some(record), Value::Object(fields)) = (record.as_object_mut(), fields) {
        record.extend(fields);
    }
    println!("{record}");
}

fn sse_data(payload: &str) -> Result<Vec<Value>> {
    payload
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| *d != "[DONE]")
        .map(|d| Ok(serde_json::from_str(d)?))
        .collect()
}

async fn openai_chat(mock: &Mock, name: &str, stream: bool) -> Result<()> {
    let model = if stream { "gpt-4o-mini" } else { "gpt-4o" };
    let prompt = format!("{name}: hello from reqwest over rustls");
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": prompt}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let auth = [("authorization", format!("Bearer {}", mock.key))];
    let (status, payload) = mock.post("/v1/chat/completions", &body, &auth).await?;
    let (text, finish, usage, id, response_model) = if stream {
        let chunks = sse_data(&payload)?;
        let choices: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"][0].is_object())
            .collect();
        let text: String = choices
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        let finish = choices
            .iter()
            .rev()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str());
        let usage = chunks
            .iter()
            .rev()
            .find(|c| c["usage"].is_object())
            .context("no usage")?;
        (
            text,
            finish.map(str::to_owned),
            usage["usage"].clone(),
            chunks[0]["id"].clone(),
            chunks[0]["model"].clone(),
        )
    } else {
        let r: Value = serde_json::from_str(&payload)?;
        let text = r["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let finish = r["choices"][0]["finish_reason"].as_str().map(str::to_owned);
        (
            text,
            finish,
            r["usage"].clone(),
            r["id"].clone(),
            r["model"].clone(),
        )
    };
    emit(
        name,
        json!({
            "path": "/v1/chat/completions", "model": model, "prompt": prompt, "stream": stream,
            "status": status, "response_id": id, "response_model": response_model, "text": text,
            "tool_calls": [], "finish_reason": finish, "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
        }),
    );
    Ok(())
}

async fn anthropic_messages(mock: &Mock, name: &str, stream: bool) -> Result<()> {
    let model = "claude-haiku-4-5";
    let prompt = format!("{name}: hello claude from reqwest over rustls");
    let body = json!({"model": model, "max_tokens": 512, "stream": stream,
        "messages": [{"role": "user", "content": prompt}]});
    let headers = [
        ("x-api-key", mock.key.clone()),
        ("anthropic-version", "2023-06-01".into()),
    ];
    let (status, payload) = mock.post("/v1/messages", &body, &headers).await?;
    let (text, id, response_model, finish, input, output) = if stream {
        let events = sse_data(&payload)?;
        let of = |kind: &str| {
            events
                .iter()
                .find(|e| e["type"] == kind)
                .cloned()
                .unwrap_or_default()
        };
        let (start, delta) = (of("message_start")["message"].clone(), of("message_delta"));
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "content_block_delta" && e["delta"]["type"] == "text_delta")
            .filter_map(|e| e["delta"]["text"].as_str())
            .collect();
        (
            text,
            start["id"].clone(),
            start["model"].clone(),
            delta["delta"]["stop_reason"].clone(),
            start["usage"]["input_tokens"].clone(),
            delta["usage"]["output_tokens"].clone(),
        )
    } else {
        let m: Value = serde_json::from_str(&payload)?;
        let text: String = m["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect();
        (
            text,
            m["id"].clone(),
            m["model"].clone(),
            m["stop_reason"].clone(),
            m["usage"]["input_tokens"].clone(),
            m["usage"]["output_tokens"].clone(),
        )
    };
    emit(
        name,
        json!({
            "path": "/v1/messages", "model": model, "prompt": prompt, "stream": stream,
            "status": status, "response_id": id, "response_model": response_model, "text": text,
            "tool_calls": [], "finish_reason": finish, "input_tokens": input, "output_tokens": output,
            "max_tokens": 512,
        }),
    );
    Ok(())
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mock = Mock::from_env()?;
        for name in std::env::args().skip(1) {
            match name.as_str() {
                "chat_json" => openai_chat(&mock, &name, false).await?,
                "chat_stream" => openai_chat(&mock, &name, true).await?,
                "messages_json" => anthropic_messages(&mock, &name, false).await?,
                "messages_stream" => anthropic_messages(&mock, &name, true).await?,
                other => bail!("unknown scenario {other}"),
            }
        }
        Ok(())
    })
}
