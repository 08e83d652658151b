//! The OTLP specification's retry rules: which failures are worth another try, and how long to
//! wait before it (the receiver's `Retry-After` or `RetryInfo`, else exponential backoff with
//! jitter).
use std::time::{Duration, SystemTime};

/// How one export request went.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The receiver took the request; it refused `rejected` items of it (a partial success),
    /// saying why in `message`.
    Accepted { rejected: u64, message: String },
    /// A transient failure: worth another try, after `after` when the receiver said when.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// A permanent failure: the same request would fail again.
    Refused { reason: String },
}

/// HTTP statuses worth retrying: the receiver is throttling or briefly unavailable. Every
/// other 4xx and 5xx says the request itself will not be taken.
pub fn http_retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// gRPC codes worth retrying; RESOURCE_EXHAUSTED only when the receiver says when to come
/// back (RetryInfo), since otherwise the request may simply be too large.
pub fn grpc_retryable(code: tonic::Code, has_retry_info: bool) -> bool {
    use tonic::Code;
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => has_retry_info,
        _ => false,
    }
}

/// A `Retry-After` value: a number of seconds or an HTTP date (a date past gives no wait).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or_default())
}

/// Exponential backoff: the first wait, doubled after each failure up to `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// The waits between the attempts at one request.
pub struct Backoff {
    policy: BackoffPolicy,
    next: Duration,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff {
            policy,
            next: policy.initial,
        }
    }

    /// The wait before the next attempt: the current step, spread ±50% so that a fleet of
    /// observers cut off together does not come back in step.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.policy.max);
        step.mul_f64(rand::random_range(0.5..1.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_what_the_specification_calls_transient() {
        for status in [429, 502, 503, 504] {
            assert!(http_retryable(status), "{status}");
        }
        for status in [400, 401, 403, 404, 408, 413, 500, 501] {
            assert!(!http_retryable(status), "{status}");
        }
        use tonic::Code;
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert!(grpc_retryable(code, false), "{code:?}");
        }
        assert!(!grpc_retryable(Code::ResourceExhausted, false));
        assert!(grpc_retryable(Code::ResourceExhausted, true));
        for code in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Unimplemented,
            Code::Internal,
        ] {
            assert!(!grpc_retryable(code, true), "{code:?}");
        }
    }

    #[test]
    fn reads_retry_after_as_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
        });
        let waits: Vec<f64> = (0..6).map(|_| backoff.next_wait().as_secs_f64()).collect();
        let steps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0];
        for (wait, step) in waits.iter().zip(steps) {
            assert!(
                (step * 0.5..step * 1.5).contains(wait),
                "{waits:?} against steps {steps:?}"
            );
        }
        // Jitter: a hundred first waits are not all the same.
        let firsts: Vec<Duration> = (0..100)
            .map(|_| Backoff::new(BackoffPolicy::default()).next_wait())
            .collect();
        assert!(firsts.iter().any(|w| *w != firsts[0]));
    }
}
