use serde_json::{Value, json};

use super::*;
use crate::store::{Retention, tests::span};

/// A server over a sample store on a loopback port, open to all unless given a token; its
/// thread lives as long as the tests.
fn start_server(token: Option<&str>) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("observer.db"), &Retention::default()).unwrap();
    store
        .insert(&[
            span("a", "1", None, 50, json!({})),
            span(
                "a",
                "2",
                Some("1"),
                40,
                json!({"gen_ai.request.model": "gpt-4o-mini"}),
            ),
            span("a", "3", Some("2"), 30, json!({"error.type": "429"})),
            span(
                "b",
                "4",
                None,
                10,
                json!({"gen_ai.provider.name": "anthropic"}),
            ),
        ])
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let bound = listener.local_addr().unwrap();
    let access = token.map_or(Access::Open, |token| Access::Token(token.into()));
    let app = router(store, access, bound);
    let url = format!("http://{bound}");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve(listener, app).await.unwrap();
        });
    });
    (url, dir)
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    )
}

/// Status and JSON body (null when not JSON) of a GET.
fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = agent().get(url);
    if let Some(token) = token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    let response = request.call().unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().read_to_string().unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A GET with the given headers, redirects not followed: status and headers.
fn raw_get(url: &str, headers: &[(&str, &str)]) -> (u16, ureq::http::HeaderMap) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build(),
    );
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.call().unwrap();
    (response.status().as_u16(), response.headers().clone())
}

fn id(body: &Value, pointer: &str) -> String {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap()
        .trim_start_matches('0')
        .to_string()
}

#[test]
fn lists_and_filters_traces_and_spans() {
    let (url, _dir) = start_server(None);
    let (status, body) = get(&format!("{url}/api/traces"), None);
    assert_eq!(status, 200);
    assert_eq!(body["traces"].as_array().unwrap().len(), 2);
    assert_eq!(body["traces"][1]["span_count"], 3);

    let (_, body) = get(
        &format!("{url}/api/traces?where=gen_ai.provider.name:eq:anthropic"),
        None,
    );
    assert_eq!(id(&body, "/traces/0/trace_id"), "b");

    let (_, body) = get(
        &format!(
            "{url}/api/spans?where=gen_ai.request.model:contains:mini&where=process.pid:eq:4242"
        ),
        None,
    );
    assert_eq!(body["spans"].as_array().unwrap().len(), 1);
    assert_eq!(id(&body, "/spans/0/span_id"), "2");
    assert_eq!(
        body["spans"][0]["attributes"]["gen_ai.request.model"],
        "gpt-4o-mini"
    );

    let (_, body) = get(
        &format!("{url}/api/spans?order_by=start_time&limit=2&offset=1"),
        None,
    );
    assert_eq!(id(&body, "/spans/0/span_id"), "2");
    assert_eq!(body["spans"].as_array().unwrap().len(), 2);

    let (_, body) = get(&format!("{url}/api/spans?since=35s"), None);
    assert_eq!(body["spans"].as_array().unwrap().len(), 2);
}

#[test]
fn returns_a_trace_and_a_span_tree() {
    let (url, _dir) = start_server(None);
    let trace_id = format!("{:0>32}", "a");
    let (status, body) = get(&format!("{url}/api/traces/{trace_id}"), None);
    assert_eq!(status, 200);
    assert_eq!(body["spans"].as_array().unwrap().len(), 3);

    let root = format!("{:0>16}", "1");
    let (_, tree) = get(&format!("{url}/api/spans/{root}/tree"), None);
    assert_eq!(id(&tree, "/children/0/span_id"), "2");
    assert_eq!(id(&tree, "/children/0/children/0/span_id"), "3");
    assert_eq!(
        tree["children"][0]["children"][0]["attributes"]["error.type"],
        "429"
    );

    let (_, cut) = get(
        &format!(
            "{url}/api/spans/{root}/tree?max_depth=1&attributes_to_return=gen_ai.request.model,error.type"
        ),
        None,
    );
    let child = &cut["children"][0];
    assert_eq!(child["children"], json!([]));
    assert_eq!(child["children_count"], 1);
    assert_eq!(
        child["attributes"],
        json!({"gen_ai.request.model": "gpt-4o-mini"})
    );
}

#[test]
fn answers_mistakes_with_a_status_and_a_reason() {
    let (url, _dir) = start_server(None);
    let (status, body) = get(&format!("{url}/api/traces/{:0>32}", "f"), None);
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("no trace"));
    let (status, _) = get(&format!("{url}/api/spans/{:0>16}/tree", "f"), None);
    assert_eq!(status, 404);
    for bad in [
        "where=a:like:b",
        "since=soon",
        "limit=0",
        "order_by=gen_ai.request.model",
        "colour=red",
    ] {
        let (status, body) = get(&format!("{url}/api/traces?{bad}"), None);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string());
    }
    let injection = "where=gen_ai.request.model:eq:x%27%20OR%20%271%27%3D%271";
    let (status, body) = get(&format!("{url}/api/spans?{injection}"), None);
    assert_eq!((status, body["spans"].as_array().unwrap().len()), (200, 0));
}

#[test]
fn requires_the_token_when_one_is_set() {
    let (url, _dir) = start_server(Some("s3cret"));
    for path in ["/api/traces", "/", "/static/app.js", "/api/live"] {
        assert_eq!(get(&format!("{url}{path}"), None).0, 401, "{path}");
    }
    assert_eq!(get(&format!("{url}/api/traces"), Some("wrong")).0, 401);
    assert_eq!(get(&format!("{url}/api/traces"), Some("s3cret")).0, 200);
}

/// The address with the token sets an HttpOnly, SameSite=Strict cookie and sends the browser
/// to the same place without the token; the cookie then lets it in.
#[test]
fn takes_the_token_from_the_address_into_a_cookie() {
    let (url, _dir) = start_server(Some("s3cret"));
    let (status, headers) = raw_get(&format!("{url}/?token=s3cret&x=1"), &[]);
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/?x=1");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert!(
        pair.starts_with("observer_token_") && pair.ends_with("=s3cret"),
        "{pair}"
    );
    assert_eq!(raw_get(&format!("{url}/"), &[("cookie", pair)]).0, 200);
    assert_eq!(raw_get(&format!("{url}/?token=wrong"), &[]).0, 401);
    let other = pair.replace("s3cret", "wrong");
    assert_eq!(
        raw_get(&format!("{url}/api/traces"), &[("cookie", &other)]).0,
        401
    );
}

#[test]
fn serves_the_pages_with_a_strict_policy_and_refuses_foreign_hosts() {
    let (url, _dir) = start_server(None);
    let (status, headers) = raw_get(&format!("{url}/"), &[]);
    assert_eq!(status, 200);
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe"),
        "{policy}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let (status, headers) = raw_get(&format!("{url}/static/app.js"), &[]);
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(raw_get(&format!("{url}/static/nothing.js"), &[]).0, 404);
    // A page whose name was rebound to 127.0.0.1 is refused, even with no token required.
    assert_eq!(
        raw_get(&format!("{url}/api/traces"), &[("host", "evil.example")]).0,
        403
    );
}

#[test]
fn answers_what_the_pages_ask() {
    let (url, _dir) = start_server(None);
    let (_, page) = get(&format!("{url}/api/traces?limit=1"), None);
    assert_eq!(page["traces"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap();
    let (_, older) = get(&format!("{url}/api/traces?limit=1&before={next}"), None);
    assert_eq!(id(&older, "/traces/0/trace_id"), "a");
    assert_eq!(older["traces"][0]["call_count"], 3);
    assert_eq!(get(&format!("{url}/api/traces?before=x"), None).0, 400);

    let (_, facets) = get(&format!("{url}/api/facets"), None);
    assert_eq!(facets["providers"], json!(["anthropic", "openai"]));

    let trace_id = format!("{:0>32}", "a");
    let (_, trace) = get(&format!("{url}/api/traces/{trace_id}?content=false"), None);
    assert_eq!(trace["spans"][0]["kind"], "CLIENT");

    let (status, span) = get(&format!("{url}/api/spans/{:0>16}", "2"), None);
    assert_eq!(status, 200);
    assert_eq!(
        span["span"]["attributes"]["gen_ai.request.model"],
        "gpt-4o-mini"
    );
    assert_eq!(span["links_to"], json!([]));

    let now = crate::store::now_unix_nanos();
    let (status, usage) = get(
        &format!(
            "{url}/api/usage?from={}&to={now}&buckets=10&by=provider",
            now - 3_600_000_000_000
        ),
        None,
    );
    assert_eq!(status, 200);
    let calls: u64 = usage["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(calls, 4);
    assert_eq!(
        get(&format!("{url}/api/usage?from=1&to=2&by=colour"), None).0,
        400
    );
}
