//! Where a request went: its path, and the provider name its host implies.
use super::json::{self, str_at};
use crate::http::Request;

/// Hosts whose provider is obvious, for APIs that any server may implement.
/// A leading '.' matches any subdomain; a '*' any run of characters.
const KNOWN_HOSTS: &[(&str, &str)] = &[
    ("api.openai.com", "openai"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("*-aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("bedrock-runtime.*.amazonaws.com", "aws.bedrock"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
    (".openai.azure.com", "azure.ai.openai"),
    ("api.anthropic.com", "anthropic"),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.x.ai", "x_ai"),
    ("openrouter.ai", "openrouter"),
];

/// Ollama's default port; it serves plain HTTP, usually on localhost.
const OLLAMA_PORT: &str = "11434";

/// The path of the request target: no query, and no scheme or authority when a proxy was sent
/// the absolute form.
pub(crate) fn request_path(target: &str) -> &str {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => path,
    }
}

pub(crate) fn is_post(request: &Request) -> bool {
    request.method.eq_ignore_ascii_case("POST")
}

/// `gen_ai.provider.name` for a request to an API family whose own name is `default`.
pub(crate) fn provider_name(request: &Request, default: &'static str) -> &'static str {
    known_provider(request).unwrap_or(default)
}

/// The provider the request's host (or Ollama's port) names, if it names one.
pub(crate) fn known_provider(request: &Request) -> Option<&'static str> {
    let authority = request
        .headers
        .get("host")
        .or_else(|| request.headers.get(":authority"))?;
    let authority = authority.trim().to_ascii_lowercase();
    let (host, port) = split_port(&authority);
    if port == Some(OLLAMA_PORT) {
        return Some("ollama");
    }
    KNOWN_HOSTS
        .iter()
        .find(|(pattern, _)| host_matches(host, pattern))
        .map(|(_, name)| *name)
}

fn host_matches(host: &str, pattern: &str) -> bool {
    if let Some((prefix, suffix)) = pattern.split_once('*') {
        return host.len() > prefix.len() + suffix.len()
            && host.starts_with(prefix)
            && host.ends_with(suffix);
    }
    match pattern.strip_prefix('.') {
        Some(domain) => host.ends_with(pattern) || host == domain,
        None => host == pattern,
    }
}

/// Whether a request on an unknown host looks enough like an LLM API call to claim a path
/// other APIs might also use (`/api/chat`, `/v2/chat`): a known host, or a JSON body naming a model.
pub(crate) fn known_host_or_names_model(request: &Request) -> bool {
    known_provider(request).is_some()
        || json::parse(&request.body.data).is_some_and(|body| str_at(&body, "model").is_some())
}

/// Percent-decodes a path segment (Bedrock model ids and ARNs travel encoded).
pub(crate) fn decode_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        // An IPv6 literal has colons of its own, inside brackets.
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            (host, Some(port))
        }
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Body, Headers};

    fn request_to(host: &str) -> Request {
        Request {
            method: "POST".into(),
            target: "/v1/chat/completions".into(),
            headers: Headers(vec![("Host".into(), host.into())]),
            body: Body::default(),
            ts_start: 0,
            ts_end: 0,
        }
    }

    #[test]
    fn names_providers_by_host() {
        for (host, name) in [
            ("api.openai.com", "openai"),
            ("API.OpenAI.com:443", "openai"),
            ("my-resource.openai.azure.com", "azure.ai.openai"),
            ("api.groq.com", "groq"),
            ("generativelanguage.googleapis.com", "gcp.gemini"),
            ("us-central1-aiplatform.googleapis.com", "gcp.vertex_ai"),
            ("aiplatform.googleapis.com", "gcp.vertex_ai"),
            ("bedrock-runtime.eu-west-1.amazonaws.com", "aws.bedrock"),
            ("bedrock-runtime..amazonaws.com", "fallback"),
            ("s3.amazonaws.com", "fallback"),
            ("api.cohere.com", "cohere"),
            ("api.deepseek.com", "deepseek"),
            ("api.mistral.ai", "mistral_ai"),
            ("api.x.ai", "x_ai"),
            ("openrouter.ai", "openrouter"),
            ("localhost:11434", "ollama"),
            ("[::1]:11434", "ollama"),
            ("vllm.internal:8000", "fallback"),
            ("notapi.openai.com.evil", "fallback"),
        ] {
            assert_eq!(provider_name(&request_to(host), "fallback"), name, "{host}");
        }
    }

    #[test]
    fn finds_the_path_of_any_target_form() {
        assert_eq!(request_path("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(
            request_path("/openai/deployments/gpt/chat/completions?api-version=2024-10-21"),
            "/openai/deployments/gpt/chat/completions"
        );
        assert_eq!(
            request_path("https://api.openai.com/v1/embeddings?x=1"),
            "/v1/embeddings"
        );
        assert_eq!(request_path("http://host"), "/");
    }
}
