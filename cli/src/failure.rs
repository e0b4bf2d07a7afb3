//! Why a command stopped, and the exit codes (docs/cli.md, "Exit codes").
//!
//! A job's outcome gives 0, 3 or 1; everything else is a [`Failure`] of one [`Kind`], which a
//! script can act on: 2 fix the command, 4 log in again, 75 try again later.

use reqwest::StatusCode;
use serde_json::{json, Value};

/// The job is done without bad rows (and every command that is not about a job's outcome).
pub const DONE: u8 = 0;
/// The job failed or was cancelled.
pub const FAILED: u8 = 1;
/// The job is done, with bad rows.
pub const DONE_WITH_BAD_ROWS: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A wrong argument or configuration, or a request the API refuses as asked (4xx other
    /// than 401, 403, 408 and 429): running it again changes nothing.
    Usage,
    /// Wrong password, not logged in, the token expired or lacks the right (401, 403).
    Authentication,
    /// The API is unreachable or overloaded (connection errors, 5xx, 408, 429 after
    /// retries), or `--timeout` ran out: the same command may succeed later.
    Temporary,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Usage => 2,
            Kind::Authentication => 4,
            // EX_TEMPFAIL of sysexits.h, which mail and backup tools use for "try again".
            Kind::Temporary => 75,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Usage => "usage",
            Kind::Authentication => "authentication",
            Kind::Temporary => "temporary",
        }
    }
}

#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    /// The API's error `code`, when the API answered one.
    pub code: Option<String>,
    /// The HTTP status of the API's answer, when there was one.
    pub status: Option<u16>,
}

impl Failure {
    fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            code: None,
            status: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Usage, message)
    }

    pub fn authentication(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Authentication, message)
    }

    pub fn temporary(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Temporary, message)
    }

    pub fn is_temporary(&self) -> bool {
        self.kind == Kind::Temporary
    }

    /// An error answer of the API (its `{code, message}` body if it has one).
    pub fn from_answer(status: StatusCode, body: &[u8]) -> Failure {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let code = parsed
            .as_ref()
            .and_then(|v| v["code"].as_str())
            .map(str::to_string);
        let message = parsed.as_ref().and_then(|v| v["message"].as_str());
        let text = match (&code, message) {
            (Some(c), Some(m)) => format!("{m} ({c}, HTTP {})", status.as_u16()),
            (Some(c), None) => format!("{c} (HTTP {})", status.as_u16()),
            _ => format!("the API answered HTTP {status}"),
        };
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Kind::Authentication,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => Kind::Temporary,
            s if s.is_server_error() => Kind::Temporary,
            _ => Kind::Usage,
        };
        Failure {
            kind,
            message: text,
            code,
            status: Some(status.as_u16()),
        }
    }

    /// What `--json` prints on stderr.
    pub fn to_json(&self) -> Value {
        json!({"error": {
            "exit_code": self.kind.exit_code(),
            "kind": self.kind.as_str(),
            "message": self.message,
            "code": self.code,
            "http_status": self.status,
        }})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_what_a_script_should_do() {
        let kind = |s: u16| Failure::from_answer(StatusCode::from_u16(s).unwrap(), b"").kind;
        assert_eq!(kind(401), Kind::Authentication);
        assert_eq!(kind(403), Kind::Authentication);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(kind(s), Kind::Temporary, "{s}");
        }
        for s in [400, 404, 409, 413, 422] {
            assert_eq!(kind(s), Kind::Usage, "{s}");
        }
        let f = Failure::from_answer(
            StatusCode::CONFLICT,
            br#"{"code":"not_failed","message":"only a failed import can be retried"}"#,
        );
        assert_eq!(f.code.as_deref(), Some("not_failed"));
        assert_eq!(f.to_json()["error"]["exit_code"], 2);
        assert_eq!(f.to_json()["error"]["http_status"], 409);
    }
}
