//! Who may read the store through the server. By default every request needs the token, on
//! loopback too: any local user can connect to 127.0.0.1. A browser brings the token once in
//! the address (`/?token=…`): the server answers with an HttpOnly, SameSite=Strict cookie and
//! sends it to the same address without the token; API clients send
//! `Authorization: Bearer TOKEN`. On loopback the Host header must name loopback too, so that
//! a web page whose name was rebound to 127.0.0.1 is refused even with `--no-auth`.
use std::net::SocketAddr;

use anyhow::{Result, bail};
use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq;

/// What a request must show to be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// The token, in a header, a cookie or (once, for a page) the address.
    Token(String),
    /// Nothing: whoever reaches the port reads every captured prompt (`--no-auth`).
    Open,
}

impl Access {
    /// What `--auth-token` and `--no-auth` (or the config) ask for on `listen`: a random token
    /// unless given one; a non-loopback address only with a token given on purpose.
    pub fn choose(listen: &SocketAddr, token: Option<String>, no_auth: bool) -> Result<Access> {
        let loopback = listen.ip().is_loopback();
        match (token, no_auth) {
            (Some(_), true) => bail!("--auth-token and --no-auth contradict each other: pick one"),
            (None, true) if !loopback => bail!(
                "refusing to serve captured prompts and answers on {listen} without \
                 authentication: drop --no-auth and pass --auth-token TOKEN, or listen on \
                 127.0.0.1"
            ),
            (None, true) => Ok(Access::Open),
            (Some(token), false) if token.trim().is_empty() => {
                bail!(
                    "the auth token is empty: give a long random one, or leave it out to have one made"
                )
            }
            (Some(token), false) => Ok(Access::Token(token)),
            (None, false) if !loopback => bail!(
                "refusing to listen on {listen} with a made-up token: anything but loopback \
                 needs --auth-token TOKEN (clients send `Authorization: Bearer TOKEN`; the \
                 traffic is plain HTTP, so put TLS in front on an untrusted network)"
            ),
            (None, false) => Ok(Access::Token(random_token())),
        }
    }

    /// The address to open in a browser, on `bound`.
    pub fn url(&self, bound: SocketAddr) -> String {
        match self {
            Access::Token(token) => {
                let token = percent_encoding::utf8_percent_encode(
                    token,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                format!("http://{bound}/?token={token}")
            }
            Access::Open => format!("http://{bound}/"),
        }
    }
}

/// 256 random bits, hex.
fn random_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The server's side of [`Access`].
pub struct Gate {
    access: Access,
    /// One cookie per port: browsers share cookies across the ports of a host.
    cookie: String,
    loopback: bool,
}

impl Gate {
    pub fn new(access: Access, listen: SocketAddr) -> Gate {
        Gate {
            access,
            cookie: format!("observer_token_{}", listen.port()),
            loopback: listen.ip().is_loopback(),
        }
    }
}

pub async fn authorize(
    State(gate): State<std::sync::Arc<Gate>>,
    request: Request,
    next: Next,
) -> Response {
    if gate.loopback && !names_loopback(request.headers()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this server answers only to 127.0.0.1, localhost or [::1] in the Host header",
        );
    }
    let Access::Token(token) = &gate.access else {
        return next.run(request).await;
    };
    let shown = bearer(request.headers()).or_else(|| cookie(request.headers(), &gate.cookie));
    if shown.is_some_and(|shown| same_secret(shown, token)) {
        return next.run(request).await;
    }
    if request.method() == Method::GET {
        let (in_address, rest) = split_token(request.uri().query().unwrap_or_default());
        let in_address =
            in_address.map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy());
        if in_address.is_some_and(|shown| same_secret(&shown, token)) {
            return take_token_into_cookie(&gate.cookie, token, request.uri().path(), &rest);
        }
    }
    refuse(
        StatusCode::UNAUTHORIZED,
        "open the address `observer serve` printed (it ends in ?token=…), or send \
         `Authorization: Bearer TOKEN`",
    )
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("{} {why}\n", status.as_u16())).into_response()
}

/// Sends the browser to the same address without the token, holding it in a cookie that
/// scripts cannot read and other sites cannot make it send.
fn take_token_into_cookie(name: &str, token: &str, path: &str, rest: &str) -> Response {
    let location = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{rest}")
    };
    let cookie = format!("{name}={token}; HttpOnly; SameSite=Strict; Path=/");
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    for (key, value) in [(header::LOCATION, location), (header::SET_COOKIE, cookie)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(key, value);
        }
    }
    response
}

/// Compares in time independent of where the two differ.
fn same_secret(shown: &str, token: &str) -> bool {
    shown.as_bytes().ct_eq(token.as_bytes()).into()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// The `token` parameter of a query string, and the other parameters as they were.
fn split_token(query: &str) -> (Option<&str>, String) {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.strip_prefix("token=") {
            Some(value) => token = Some(value),
            None => rest.push(pair),
        }
    }
    (token, rest.join("&"))
}

/// The Host header names a loopback address (or is absent, as from HTTP/1.0 clients).
fn names_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_token_in_a_query_and_keeps_the_rest() {
        assert_eq!(split_token("token=abc"), (Some("abc"), String::new()));
        assert_eq!(
            split_token("a=1&token=abc&b=2"),
            (Some("abc"), "a=1&b=2".to_string())
        );
        assert_eq!(split_token("a=1"), (None, "a=1".to_string()));
    }

    #[test]
    fn knows_loopback_host_names() {
        let host = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(value).unwrap());
            names_loopback(&headers)
        };
        for good in [
            "127.0.0.1:4319",
            "localhost:4319",
            "[::1]:4319",
            "127.0.0.2",
        ] {
            assert!(host(good), "{good}");
        }
        for bad in [
            "evil.example:4319",
            "10.0.0.1:4319",
            "localhost.evil.example",
        ] {
            assert!(!host(bad), "{bad}");
        }
    }

    #[test]
    fn chooses_access_by_address_and_flags() {
        let loopback: SocketAddr = "127.0.0.1:4319".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:4319".parse().unwrap();
        let Access::Token(made) = Access::choose(&loopback, None, false).unwrap() else {
            panic!("a token is made by default");
        };
        assert_eq!(made.len(), 64);
        assert_ne!(
            Access::choose(&loopback, None, false).unwrap(),
            Access::Token(made)
        );
        assert_eq!(Access::choose(&loopback, None, true).unwrap(), Access::Open);
        let error = Access::choose(&public, None, false).unwrap_err();
        assert!(error.to_string().contains("--auth-token"), "{error}");
        assert!(Access::choose(&public, None, true).is_err());
        assert!(Access::choose(&public, Some(" ".into()), false).is_err());
        assert!(Access::choose(&loopback, Some("t".into()), true).is_err());
        assert_eq!(
            Access::choose(&public, Some("t".into()), false).unwrap(),
            Access::Token("t".into())
        );
    }
}
