//! Secrets out of headers and URLs.
//!
//! Every header value and request target passes through here before the HTTP stage builds a
//! `Request`/`Response`, so credentials never reach a span, a file or an exporter.
use std::borrow::Cow;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Headers whose whole value is a secret (compared case-insensitively).
const SECRET_HEADERS: &[&str] = &[
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-security-token",
    "cookie",
    "set-cookie",
];

/// Substrings of header names that mark the value as a secret (`x-foo-api-key`, `x-client-secret`).
const SECRET_NAME_PARTS: &[&str] = &["api-key", "apikey", "secret", "password"];

/// Query parameters whose value is a secret (compared case-insensitively).
pub const SECRET_QUERY_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "api-key",
    "apikey",
    "access_token",
    "token",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// AWS SigV4 `Authorization` fields that are secret; `SignedHeaders` is kept because it helps debugging.
const SIGV4_SECRET_FIELDS: &[&str] = &["credential", "signature"];

/// The value to record for header `name`.
pub fn header_value<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    if name.eq_ignore_ascii_case("authorization") {
        return Cow::Owned(authorization(value));
    }
    if is_secret_header(name) {
        return Cow::Borrowed(REDACTED);
    }
    Cow::Borrowed(value)
}

/// Whether the value of header `name` is (or contains) a secret.
pub fn is_secret_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "authorization"
        || SECRET_HEADERS.contains(&lower.as_str())
        || SECRET_NAME_PARTS.iter().any(|part| lower.contains(part))
        || names_a_token(&lower)
}

/// `x-auth-token` is a secret; `x-ratelimit-remaining-tokens` is a count worth keeping.
fn names_a_token(lower: &str) -> bool {
    lower
        .match_indices("token")
        .any(|(at, word)| lower.as_bytes().get(at + word.len()) != Some(&b's'))
}

/// Keeps the scheme (`Bearer`, `Basic`, …) so a reader can tell how a call authenticated.
fn authorization(value: &str) -> String {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, params)) if scheme.eq_ignore_ascii_case("AWS4-HMAC-SHA256") => {
            format!("{scheme} {}", sigv4_params(params))
        }
        Some((scheme, _)) => format!("{scheme} {REDACTED}"),
        None => REDACTED.to_owned(),
    }
}

/// `Credential=…, SignedHeaders=…, Signature=…` with the secret fields replaced.
fn sigv4_params(params: &str) -> String {
    params
        .split(',')
        .map(|field| {
            let field = field.trim();
            match field.split_once('=') {
                Some((key, _))
                    if !SIGV4_SECRET_FIELDS.contains(&key.to_ascii_lowercase().as_str()) =>
                {
                    field.to_owned()
                }
                Some((key, _)) => format!("{key}={REDACTED}"),
                None => REDACTED.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The request target with secret query parameter values replaced; path and other parameters kept.
pub fn target(target: &str) -> Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    if !query.split('&').any(is_secret_param) {
        return Cow::Borrowed(target);
    }
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, param) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match param.split_once('=') {
            Some((name, _)) if is_secret_param(param) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(param),
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Cow::Owned(out)
}

fn is_secret_param(param: &str) -> bool {
    let name = param.split_once('=').map_or(param, |(name, _)| name);
    SECRET_QUERY_PARAMS
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
        && param.contains('=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_keeps_scheme_only() {
        assert_eq!(
            header_value("Authorization", "Bearer sk-abc"),
            "Bearer [REDACTED]"
        );
        assert_eq!(
            header_value("authorization", "Basic dXNlcjpwYXNz"),
            "Basic [REDACTED]"
        );
        assert_eq!(header_value("Authorization", "sk-abc"), "[REDACTED]");
    }

    #[test]
    fn sigv4_keeps_algorithm_and_signed_headers() {
        let value = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/bedrock/aws4_request, \
                     SignedHeaders=host;x-amz-date, Signature=deadbeef";
        assert_eq!(
            header_value("Authorization", value),
            "AWS4-HMAC-SHA256 Credential=[REDACTED], SignedHeaders=host;x-amz-date, Signature=[REDACTED]"
        );
    }

    #[test]
    fn secret_headers_are_redacted() {
        for name in [
            "x-api-key",
            "Api-Key",
            "x-goog-api-key",
            "X-Amz-Security-Token",
            "Cookie",
            "set-cookie",
            "Proxy-Authorization",
            "x-custom-api-key",
            "X-Auth-Token",
            "x-client-secret",
        ] {
            assert_eq!(header_value(name, "s3cr3t"), REDACTED, "{name}");
        }
    }

    #[test]
    fn ordinary_headers_are_kept() {
        for name in [
            "content-type",
            "x-request-id",
            "anthropic-version",
            "openai-organization",
        ] {
            assert_eq!(header_value(name, "v"), "v", "{name}");
        }
        // Token counts are not tokens.
        assert_eq!(header_value("x-ratelimit-remaining-tokens", "12"), "12");
        assert_eq!(
            header_value("anthropic-ratelimit-input-tokens-limit", "9"),
            "9"
        );
    }

    #[test]
    fn target_redacts_secret_params_case_insensitively() {
        assert_eq!(
            target("/v1beta/models/gemini:generateContent?KEY=abc&alt=sse"),
            "/v1beta/models/gemini:generateContent?KEY=[REDACTED]&alt=sse"
        );
        assert_eq!(
            target("/x?X-Amz-Signature=1&X-Amz-Credential=2&x-amz-security-token=3&a=b#frag"),
            "/x?X-Amz-Signature=[REDACTED]&X-Amz-Credential=[REDACTED]&x-amz-security-token=[REDACTED]&a=b#frag"
        );
        assert_eq!(
            target("/p?access_token=t&token=u&api_key=v&api-key=w"),
            "/p?access_token=[REDACTED]&token=[REDACTED]&api_key=[REDACTED]&api-key=[REDACTED]"
        );
    }

    #[test]
    fn target_without_secrets_is_borrowed() {
        assert!(matches!(target("/v1/chat/completions"), Cow::Borrowed(_)));
        assert!(matches!(
            target("/v1/models?limit=10&monkey=1"),
            Cow::Borrowed(_)
        ));
    }
}
