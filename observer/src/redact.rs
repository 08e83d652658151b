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

/// A program's arguments with secrets replaced, by the same rules as headers: the value after a
/// flag or in a `NAME=value` / `Header: value` whose name is a secret (`--api-key X`,
/// `OPENAI_API_KEY=…`, `-H 'Authorization: Bearer …'`, keeping the scheme), secret query
/// parameters of URLs, and words shaped like API keys (`sk-…`). Words inside an argument count
/// too: a shell's `-c` script is one argument.
pub fn arguments(args: &[String]) -> Vec<String> {
    let mut next = NextWord::Plain;
    args.iter().map(|arg| argument(arg, &mut next)).collect()
}

/// What the word to come is, after the words before it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NextWord {
    Plain,
    /// The value of a secret flag or header.
    Secret,
    /// An `Authorization` header's value: a scheme (kept), then the secret.
    Authorization,
}

fn argument(text: &str, next: &mut NextWord) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_end);
        let space_end = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        let (space, after) = after.split_at(space_end);
        out.push_str(&redact_word(word, next));
        out.push_str(space);
        rest = after;
    }
    out
}

/// One word, with the quotes and punctuation around it kept.
fn redact_word<'a>(word: &'a str, next: &mut NextWord) -> Cow<'a, str> {
    let is_edge = |c: char| matches!(c, '\'' | '"' | ';' | ',' | '(' | ')' | '`');
    let core = word.trim_matches(is_edge);
    if core.is_empty() {
        return Cow::Borrowed(word);
    }
    let start = word.find(core).unwrap_or(0);
    let (before, after) = (&word[..start], &word[start + core.len()..]);
    let replaced = |value: &str| Cow::Owned(format!("{before}{value}{after}"));
    match std::mem::replace(next, NextWord::Plain) {
        NextWord::Secret => return replaced(REDACTED),
        NextWord::Authorization => {
            let scheme = core.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if scheme && !looks_like_a_key(core) {
                *next = NextWord::Secret;
                return Cow::Borrowed(word);
            }
            return replaced(REDACTED);
        }
        NextWord::Plain => {}
    }
    if looks_like_a_key(core) {
        return replaced(REDACTED);
    }
    if let Some((name, value)) = core.split_once('=')
        && !name.contains(['/', '?', ':'])
    {
        if is_secret_name(name) && !value.is_empty() {
            return replaced(&format!("{name}={REDACTED}"));
        }
        if value.is_empty() && is_secret_name(name) {
            *next = NextWord::Secret;
        }
        return match target(core) {
            Cow::Owned(redacted) => replaced(&redacted),
            Cow::Borrowed(_) => Cow::Borrowed(word),
        };
    }
    if let Some((name, value)) = core.split_once(':')
        && !name.is_empty()
        && !name.contains(['/', '.'])
        && is_secret_header(name)
    {
        if !value.is_empty() {
            return replaced(&format!("{name}:{REDACTED}"));
        }
        *next = if name.eq_ignore_ascii_case("authorization")
            || name.eq_ignore_ascii_case("proxy-authorization")
        {
            NextWord::Authorization
        } else {
            NextWord::Secret
        };
        return Cow::Borrowed(word);
    }
    if core.starts_with('-') && is_secret_name(core) {
        *next = NextWord::Secret;
        return Cow::Borrowed(word);
    }
    match target(core) {
        Cow::Owned(redacted) => replaced(&redacted),
        Cow::Borrowed(_) => Cow::Borrowed(word),
    }
}

/// A flag or variable name (`--api-key`, `OPENAI_API_KEY`, `token`) that names a secret.
fn is_secret_name(name: &str) -> bool {
    let name = name.trim_start_matches('-').replace('_', "-");
    !name.is_empty()
        && (is_secret_header(&name)
            || SECRET_QUERY_PARAMS
                .iter()
                .any(|secret| name.eq_ignore_ascii_case(&secret.replace('_', "-"))))
}

/// OpenAI's and Anthropic's key shape (`sk-…`, `sk-ant-…`, `sk-proj-…`).
fn looks_like_a_key(word: &str) -> bool {
    word.len() > 8 && (word.starts_with("sk-") || word.starts_with("sk_"))
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

    fn redacted_args(args: &[&str]) -> Vec<String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        arguments(&args)
    }

    #[test]
    fn arguments_lose_secret_values_and_keep_the_rest() {
        assert_eq!(
            redacted_args(&["tool", "--api-key", "abc123", "--max-tokens", "100"]),
            ["tool", "--api-key", REDACTED, "--max-tokens", "100"]
        );
        assert_eq!(
            redacted_args(&["env", "OPENAI_API_KEY=abc", "GITHUB_TOKEN=t", "LANG=C"]),
            [
                "env",
                "OPENAI_API_KEY=[REDACTED]",
                "GITHUB_TOKEN=[REDACTED]",
                "LANG=C"
            ]
        );
        assert_eq!(
            redacted_args(&[
                "curl",
                "-H",
                "Authorization: Bearer xyz",
                "-H",
                "x-api-key: k"
            ]),
            [
                "curl",
                "-H",
                "Authorization: Bearer [REDACTED]",
                "-H",
                "x-api-key: [REDACTED]"
            ]
        );
        assert_eq!(
            redacted_args(&["curl", "https://h/v1/m?key=abc&alt=sse", "--password=pw"]),
            [
                "curl",
                "https://h/v1/m?key=[REDACTED]&alt=sse",
                "--password=[REDACTED]"
            ]
        );
    }

    #[test]
    fn arguments_redact_inside_a_shell_script() {
        let script =
            "curl -s -H 'Authorization: Bearer abc' -d '{}' x && echo sk-canary-4f1d9a7e; ls -la";
        let [_, _, redacted] = &redacted_args(&["sh", "-c", script])[..] else {
            panic!("three arguments")
        };
        assert_eq!(
            redacted,
            "curl -s -H 'Authorization: Bearer [REDACTED]' -d '{}' x && echo [REDACTED]; ls -la"
        );
        // Nothing secret: the script is as it was.
        let plain = "echo hi; exit 3";
        assert_eq!(redacted_args(&["bash", "-c", plain])[2], plain);
    }
}
