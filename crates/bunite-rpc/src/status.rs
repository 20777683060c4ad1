//! The wire error model (PROTOCOL §12): [`Status`] with a [`Code`], message, details and retry.

use std::fmt;

use bunite_wire::{Record, Value, WireStatus};

/// A status code. Unknown codes from a peer become [`Code::Internal`] (PROTOCOL §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The cap, method or name does not exist.
    NotFound,
    /// The call cannot run in the current state (version, policy, revocation).
    FailedPrecondition,
    /// The name is taken or reserved.
    AlreadyExists,
    /// The arguments or a frame are malformed.
    InvalidArgument,
    /// The call was cancelled.
    Cancelled,
    /// The deadline passed.
    DeadlineExceeded,
    /// A limit was hit.
    ResourceExhausted,
    /// The connection is closed or closing.
    Unavailable,
    /// Anything else.
    Internal,
}

impl Code {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::NotFound => "not_found",
            Code::FailedPrecondition => "failed_precondition",
            Code::AlreadyExists => "already_exists",
            Code::InvalidArgument => "invalid_argument",
            Code::Cancelled => "cancelled",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }

    /// Parses a wire string.
    pub fn parse(s: &str) -> Option<Code> {
        Some(match s {
            "not_found" => Code::NotFound,
            "failed_precondition" => Code::FailedPrecondition,
            "already_exists" => Code::AlreadyExists,
            "invalid_argument" => Code::InvalidArgument,
            "cancelled" => Code::Cancelled,
            "deadline_exceeded" => Code::DeadlineExceeded,
            "resource_exhausted" => Code::ResourceExhausted,
            "unavailable" => Code::Unavailable,
            "internal" => Code::Internal,
            _ => return None,
        })
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `details.reason` strings of PROTOCOL §12.
pub mod reason {
    /// failed_precondition: client and server versions differ.
    pub const VERSION_MISMATCH: &str = "version_mismatch";
    /// failed_precondition: the policy denied the bootstrap.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// failed_precondition: a cap-returning handler returned something else.
    pub const UNREGISTERED_CAP_RETURN: &str = "unregistered_cap_return";
    /// failed_precondition: the server revoked the cap.
    pub const REVOKED: &str = "revoked";
    /// resource_exhausted: a frame above `maxBytes`.
    pub const MAX_FRAME_BYTES: &str = "max_frame_bytes";
    /// resource_exhausted: the in-flight limit.
    pub const MAX_CONCURRENT_CALLS: &str = "max_concurrent_calls";
    /// resource_exhausted: the cap-table limit.
    pub const MAX_CAPS_PER_CONNECTION: &str = "max_caps_per_connection";
    /// resource_exhausted: stream credit window.
    pub const STREAM_CREDIT_WINDOW: &str = "stream_credit_window";
    /// resource_exhausted: rate limited.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// unavailable: the local peer is closing.
    pub const PEER_CLOSING: &str = "peer_closing";
    /// unavailable: the remote peer sent goaway.
    pub const GOAWAY: &str = "goaway";
    /// unavailable: the plugin is unloading.
    pub const PLUGIN_UNLOADING: &str = "plugin_unloading";
    /// already_exists: the name is already served.
    pub const NAME_COLLISION: &str = "name_collision";
    /// already_exists: the name uses the reserved `bunite.` prefix.
    pub const RESERVED_NAMESPACE: &str = "reserved_namespace";
}

/// When a caller may retry (PROTOCOL §12). Handlers may set it; the peer itself never does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Never retry.
    Never,
    /// Retry at once.
    Transparent,
    /// Retry after at least this many milliseconds.
    AfterCooldown {
        /// The cooldown.
        min_ms: u64,
    },
    /// Retry after resynchronizing state.
    AfterResync,
}

impl Retry {
    fn to_value(&self) -> Value {
        let kind = |k: &str| Record::new().with("kind", k);
        Value::Record(match self {
            Retry::Never => kind("never"),
            Retry::Transparent => kind("transparent"),
            Retry::AfterCooldown { min_ms } => {
                kind("after-cooldown").with("minMs", Value::uint(*min_ms))
            }
            Retry::AfterResync => kind("after-resync"),
        })
    }

    fn from_value(v: &Value) -> Option<Retry> {
        let r = v.as_record()?;
        Some(match r.get("kind")?.as_str()? {
            "never" => Retry::Never,
            "transparent" => Retry::Transparent,
            "after-cooldown" => Retry::AfterCooldown {
                min_ms: r
                    .get("minMs")
                    .and_then(Value::as_integer)
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            },
            "after-resync" => Retry::AfterResync,
            _ => return None,
        })
    }
}

/// An RPC status: what a failed call, bootstrap or registry operation reports.
///
/// Handlers return `Err(Status)` to fail a call with a chosen code; any other error they
/// convert with [`Status::internal`] (or `?` on a `std::error::Error`, through `From`)
/// arrives as `internal` with its message (PROTOCOL §9).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The code.
    pub code: Code,
    /// The message.
    pub message: String,
    /// Structured details, usually `{reason}`.
    pub details: Option<Value>,
    /// Retry advice.
    pub retry: Option<Retry>,
}

impl Status {
    /// A status with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
            details: None,
            retry: None,
        }
    }

    /// Adds `details = {reason}`.
    pub fn with_reason(mut self, reason: &str) -> Self {
        self.details = Some(Value::Record(Record::new().with("reason", reason)));
        self
    }

    /// Sets the retry advice.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// `details.reason`, if any.
    pub fn reason(&self) -> Option<&str> {
        match &self.details {
            Some(Value::Record(r)) => r.get("reason").and_then(Value::as_str),
            _ => None,
        }
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Status::new(Code::NotFound, message)
    }

    /// `invalid_argument`.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Status::new(Code::InvalidArgument, message)
    }

    /// `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Status::new(Code::Internal, message)
    }

    /// `internal` `result: <error>`: a result or stream value that did not serialize,
    /// whether in the handler or when its frame was written.
    pub(crate) fn unserializable(e: &bunite_wire::SerdeError) -> Self {
        Status::internal(format!("result: {e}"))
    }

    /// `failed_precondition` with a reason.
    pub fn failed_precondition(message: impl Into<String>, reason: &str) -> Self {
        Status::new(Code::FailedPrecondition, message).with_reason(reason)
    }

    /// `resource_exhausted` with a reason.
    pub fn resource_exhausted(message: impl Into<String>, reason: &str) -> Self {
        Status::new(Code::ResourceExhausted, message).with_reason(reason)
    }

    /// `resource_exhausted` `in-flight calls limit {max}` `{reason:"max_concurrent_calls"}`:
    /// a call over [`Limits::max_in_flight`](crate::Limits::max_in_flight), ours or the
    /// peer's.
    pub(crate) fn in_flight_limit(max: usize) -> Self {
        Status::resource_exhausted(
            format!("in-flight calls limit {max}"),
            reason::MAX_CONCURRENT_CALLS,
        )
    }

    /// `unavailable` `connection closed`: what every call fails with after close.
    pub fn connection_closed() -> Self {
        Status::new(Code::Unavailable, "connection closed")
    }

    /// `failed_precondition` `cap revoked` `{reason:"revoked"}`.
    pub fn revoked() -> Self {
        Status::failed_precondition("cap revoked", reason::REVOKED)
    }

    /// The compact wire form `{code, message[, details]}` the peer itself sends.
    pub fn to_wire(&self) -> WireStatus {
        WireStatus {
            code: self.code.as_str().to_owned(),
            message: Some(self.message.clone()),
            details: self.details.clone(),
            retry: self.retry.as_ref().map(Retry::to_value),
            full: false,
        }
    }

    /// The form a handler's Status error takes: `toStatus()` of the reference, all four
    /// keys, except a bare `internal` which is sent as a plain error would be.
    pub(crate) fn to_wire_from_handler(&self) -> WireStatus {
        let mut w = self.to_wire();
        w.full = self.code != Code::Internal || self.details.is_some() || self.retry.is_some();
        w
    }

    /// A status received from a peer. Unknown codes become `internal` with the original code
    /// in the message.
    pub fn from_wire(w: WireStatus) -> Self {
        let message = w.message.unwrap_or_default();
        let (code, message) = match Code::parse(&w.code) {
            Some(code) => (code, message),
            None => (Code::Internal, format!("{}: {}", w.code, message)),
        };
        Status {
            code,
            message,
            details: w.details,
            retry: w.retry.as_ref().and_then(Retry::from_value),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(reason) = self.reason() {
            write!(f, " ({reason})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Status {}

impl From<bunite_wire::SerdeError> for Status {
    fn from(e: bunite_wire::SerdeError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_become_internal_with_the_original_text() {
        let s = Status::from_wire(WireStatus::new("teapot", "short and stout"));
        assert_eq!(s.code, Code::Internal);
        assert_eq!(s.message, "teapot: short and stout");
    }

    #[test]
    fn wire_round_trip_keeps_reason_and_retry() {
        let s = Status::failed_precondition("nope", reason::UNAUTHORIZED)
            .with_retry(Retry::AfterCooldown { min_ms: 250 });
        let back = Status::from_wire(s.to_wire_from_handler());
        assert_eq!(back, s);
        assert_eq!(back.reason(), Some("unauthorized"));
    }
}
