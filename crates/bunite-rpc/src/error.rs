//! The local error layer: why a call, stream or bootstrap failed, told apart by where the
//! failure came from (STYLE habit 14).
//!
//! An [`Error`] is one of:
//!
//! - [`Error::Remote`]: the peer answered with a [`Status`] (a `result` or `stream error`
//!   frame, or the revocation of the cap).
//! - [`Error::Local`]: this process decided, with a [`LocalError`] saying why: the call never
//!   left (connection closed, reference released, in-flight limit, unencodable or oversize
//!   arguments, revoked cap), or we stopped waiting for it (our cancellation, our deadline),
//!   or its answer did not fit what we expected.
//! - [`Error::Disconnected`]: the connection ended while the call was pending, with a
//!   [`Disconnect`] saying how: the peer's goaway, our own close, the transport ending or
//!   failing (with its [`std::io::ErrorKind`]), or a protocol error.
//!
//! Every error also carries the [`Status`] the protocol gives that failure (code, message,
//! `details.reason`), so code that only cares about the wire's view matches on
//! [`Error::status`] or [`Error::code`], and `?` turns an `Error` into a `Status` inside a
//! handler. Nothing here changes what goes on the wire.
//!
//! ```
//! use std::sync::Arc;
//! use bunite_rpc::dynamic::DynCap;
//! use bunite_rpc::transport::memory;
//! use bunite_rpc::{CapDef, Code, Connection, Disconnect, Error, LocalError, MethodDef};
//! use bunite_rpc::{Status, Value};
//! use tokio::sync::Notify;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let def = CapDef::builder("demo.Files")
//!     .method(MethodDef::call("open"))
//!     .method(MethodDef::call("wait"))
//!     .build();
//! let waiting = Arc::new(Notify::new());
//! let imp = DynCap::new()
//!     .call("open", |_, _| async { Err::<Value, _>(Status::not_found("no such file")) })
//!     .call("wait", {
//!         let waiting = waiting.clone();
//!         move |_, _| {
//!             waiting.notify_one();
//!             std::future::pending::<Result<Value, Status>>()
//!         }
//!     });
//! let (a, b) = memory::pair();
//! let server = Connection::builder().serve(def.clone(), imp.build()).connect(a);
//! let client = Connection::new(b);
//! let files = client.bootstrap(&def).await?;
//!
//! // The peer answered with an error status.
//! let e = files.call_value("open", Value::Undefined).await.unwrap_err();
//! assert!(matches!(&e, Error::Remote(status) if status.code == Code::NotFound));
//!
//! // The connection ended (here the server closed it) while a call was pending.
//! let pending = tokio::spawn({
//!     let files = files.clone();
//!     async move { files.call_value("wait", Value::Undefined).await }
//! });
//! waiting.notified().await;
//! server.close();
//! let e = pending.await?.unwrap_err();
//! assert!(matches!(e.disconnect(), Some(Disconnect::Goaway { .. })));
//! assert_eq!(e.code(), Code::Unavailable);
//!
//! // This process refused: the connection is closed, so nothing was sent.
//! let e = files.call_value("open", Value::Undefined).await.unwrap_err();
//! assert_eq!(e.local_kind(), Some(LocalError::Closed));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::time::Duration;

use crate::status::{reason, Code, Status};

/// Why a call, stream or bootstrap failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The peer answered with this status.
    Remote(Status),
    /// This process decided: see [`LocalError`].
    Local {
        /// Why.
        kind: LocalError,
        /// The status the protocol gives it.
        status: Status,
    },
    /// The connection ended before the outcome arrived.
    Disconnected {
        /// How it ended.
        cause: Disconnect,
        /// The status the protocol gives it (`unavailable`, reason `goaway` or
        /// `peer_closing`).
        status: Status,
    },
}

/// What this process decided, for [`Error::Local`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LocalError {
    /// The connection was already closed; nothing was sent.
    Closed,
    /// The client's reference was released; nothing was sent.
    Released,
    /// Our in-flight limit was reached; nothing was sent.
    InFlightLimit,
    /// The arguments could not be encoded; nothing was sent.
    Encode,
    /// The frame exceeds the peer's advertised `maxBytes`; nothing was sent.
    TooLarge,
    /// The cap was revoked earlier; nothing was sent.
    Revoked,
    /// Our cancellation fired; the peer was sent `cancel`.
    Cancelled,
    /// Our deadline (plus grace) passed; the peer was sent `cancel`.
    DeadlineExceeded,
    /// The peer's answer did not have the expected shape or type.
    BadAnswer,
    /// The peer answered with the other kind of answer: stream frames for a unary call (the
    /// method is a server stream; a stream still running was cancelled), or a `result` for
    /// a stream (the method is unary). The status is the stream's `error` when it sent one,
    /// else `invalid_argument` (PROTOCOL §10).
    WrongKind,
    /// The peer sent more stream values than the credit it was given, or values the
    /// consumer had not read yet would have taken more than
    /// [`Limits::max_buffered_stream_bytes`](crate::Limits::max_buffered_stream_bytes); we
    /// cancelled the stream.
    StreamOverflow,
}

/// How the connection ended, for [`Error::Disconnected`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The peer sent goaway.
    Goaway {
        /// Its reason, if it gave one.
        reason: Option<String>,
        /// Its error, if it gave one: why the peer closed (e.g. `resource_exhausted` with
        /// details `{reason:"max_frame_bytes"}` for a message over its `maxBytes`). Pending
        /// calls still fail `unavailable` with the goaway's reason (PROTOCOL §11); this is
        /// where the peer's own words are kept (boxed: errors stay small on the call path).
        ///
        /// Every pending call gets a copy, so both are bounded: the reason and the error's
        /// message are cut at 1 KiB (marked `…`), and of the details only a short `reason`
        /// is kept.
        error: Option<Box<Status>>,
    },
    /// We closed the connection ([`Connection::close`](crate::Connection::close)).
    LocalClose,
    /// The transport ended cleanly: the peer closed it, or exited.
    Eof,
    /// The transport failed.
    Transport {
        /// The I/O error's kind.
        kind: io::ErrorKind,
        /// Its text.
        message: String,
    },
    /// The peer stopped reading: bytes were waiting to be written and the transport took
    /// none of them for [`Limits::write_stall_timeout`](crate::Limits::write_stall_timeout).
    /// The transport was dropped without a goaway (nothing more could be written).
    WriteStalled {
        /// The limit that passed without progress.
        after: Duration,
    },
    /// The peer read too slowly: while a listener's send budget paid for what waited for
    /// it, it took `taken` bytes in `after`, behind
    /// [`Limits::send_deadline`](crate::Limits::send_deadline). The transport was dropped
    /// without a goaway, as for [`WriteStalled`](Disconnect::WriteStalled).
    SlowReader {
        /// The bytes the peer took since the connection started paying.
        taken: u64,
        /// The time since.
        after: Duration,
    },
    /// The peer broke the protocol (undecodable, invalid or oversize message); we sent goaway.
    ProtocolError {
        /// What we told the peer.
        message: String,
    },
}

impl Error {
    /// The peer's answer.
    pub fn remote(status: Status) -> Self {
        Error::Remote(status)
    }

    /// A local failure with the status the protocol gives it.
    pub fn local(kind: LocalError, status: Status) -> Self {
        Error::Local { kind, status }
    }

    /// The connection was closed before the call: `unavailable` `connection closed`.
    pub fn closed() -> Self {
        Error::local(LocalError::Closed, Status::connection_closed())
    }

    /// A call's arguments that did not serialize: a local `invalid_argument` (nothing was
    /// sent).
    pub(crate) fn args_failed(e: bunite_wire::SerdeError) -> Self {
        Error::local(
            LocalError::Encode,
            Status::invalid_argument(format!("params: {e}")),
        )
    }

    /// Our own in-flight limit refused the call ([`Status::in_flight_limit`]).
    pub(crate) fn in_flight_limit(max: usize) -> Self {
        Error::local(LocalError::InFlightLimit, Status::in_flight_limit(max))
    }

    /// The answer did not fit: `invalid_argument` with `message`.
    pub fn bad_answer(message: impl Into<String>) -> Self {
        Error::local(LocalError::BadAnswer, Status::invalid_argument(message))
    }

    /// The status the protocol gives this failure.
    pub fn status(&self) -> &Status {
        match self {
            Error::Remote(status)
            | Error::Local { status, .. }
            | Error::Disconnected { status, .. } => status,
        }
    }

    /// The status, owned.
    pub fn into_status(self) -> Status {
        match self {
            Error::Remote(status)
            | Error::Local { status, .. }
            | Error::Disconnected { status, .. } => status,
        }
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.status().code
    }

    /// The status message.
    pub fn message(&self) -> &str {
        &self.status().message
    }

    /// `details.reason` of the status, if any.
    pub fn reason(&self) -> Option<&str> {
        self.status().reason()
    }

    /// Whether the peer answered (rather than this process or the connection failing).
    pub fn is_remote(&self) -> bool {
        matches!(self, Error::Remote(_))
    }

    /// The local kind, for [`Error::Local`].
    pub fn local_kind(&self) -> Option<LocalError> {
        match self {
            Error::Local { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// How the connection ended, for [`Error::Disconnected`].
    pub fn disconnect(&self) -> Option<&Disconnect> {
        match self {
            Error::Disconnected { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

impl Disconnect {
    /// The status every pending call gets when the connection ends this way (PROTOCOL §11):
    /// `unavailable`, reason `goaway` for the peer's goaway, `peer_closing` otherwise.
    pub fn status(&self) -> Status {
        match self {
            Disconnect::Goaway { reason: why, .. } => {
                let message = why.clone().unwrap_or_else(|| "remote goaway".to_owned());
                Status::new(Code::Unavailable, message).with_reason(reason::GOAWAY)
            }
            Disconnect::LocalClose => {
                Status::new(Code::Unavailable, "peer_closing").with_reason(reason::PEER_CLOSING)
            }
            Disconnect::Eof => {
                Status::new(Code::Unavailable, "transport closed").with_reason(reason::PEER_CLOSING)
            }
            Disconnect::Transport { message, .. } => {
                Status::new(Code::Unavailable, format!("transport closed: {message}"))
                    .with_reason(reason::PEER_CLOSING)
            }
            Disconnect::WriteStalled { after } => Status::new(
                Code::Unavailable,
                format!(
                    "write stalled: the peer stopped reading for {:.1} s",
                    after.as_secs_f64()
                ),
            )
            .with_reason(reason::PEER_CLOSING),
            Disconnect::SlowReader { taken, after } => Status::new(
                Code::Unavailable,
                format!(
                    "the peer read too slowly: {taken} bytes in {:.1} s while its answers \
                     waited on the send budget",
                    after.as_secs_f64()
                ),
            )
            .with_reason(reason::PEER_CLOSING),
            Disconnect::ProtocolError { message } => {
                let message = match self.hint() {
                    Some(hint) => format!("protocol error: {message} ({hint})"),
                    None => format!("protocol error: {message}"),
                };
                Status::new(Code::Unavailable, message).with_reason(reason::PEER_CLOSING)
            }
        }
    }

    /// What probably caused this end, when a decode error alone would not tell a user:
    /// shown in the local status of pending calls and in logs, never sent to the peer
    /// (the goaway keeps the protocol's message).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            // A sealed message starts with 0x01: a plain decoder reads the number 1, then
            // finds the IV and ciphertext after it.
            Disconnect::ProtocolError { message }
                if message == "trailing bytes after the value" =>
            {
                Some(
                    "is the peer sealed? A sealed message starts with 0x01, which a plain peer \
                     reads as the number 1 followed by trailing bytes: give both ends the same \
                     key (--key)",
                )
            }
            _ => None,
        }
    }

    /// The error of a call pending when the connection ended this way.
    pub fn error(&self) -> Error {
        Error::Disconnected {
            cause: self.clone(),
            status: self.status(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Remote(status) => write!(f, "{status}"),
            Error::Local { kind, status } => write!(f, "{status} [{kind}]"),
            Error::Disconnected { cause, status } => {
                write!(f, "{status}")?;
                if let Disconnect::Goaway {
                    error: Some(why), ..
                } = cause
                {
                    write!(f, " [the peer's goaway: {why}]")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LocalError::Closed => "local: connection closed",
            LocalError::Released => "local: reference released",
            LocalError::InFlightLimit => "local: in-flight limit",
            LocalError::Encode => "local: encode error",
            LocalError::TooLarge => "local: frame too large for the peer",
            LocalError::Revoked => "local: cap revoked",
            LocalError::Cancelled => "local: cancelled",
            LocalError::DeadlineExceeded => "local: deadline exceeded",
            LocalError::BadAnswer => "local: unexpected answer",
            LocalError::WrongKind => "local: answered as the other kind of method",
            LocalError::StreamOverflow => "local: stream over its credit or its buffer",
        })
    }
}

impl std::error::Error for Error {}

/// A handler that calls another peer can fail with that call's error through `?`.
impl From<Error> for Status {
    fn from(e: Error) -> Status {
        e.into_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnects_map_to_the_protocol_statuses() {
        let goaway = Disconnect::Goaway {
            reason: Some("bye".into()),
            error: None,
        };
        assert_eq!(goaway.status().code, Code::Unavailable);
        assert_eq!(goaway.status().message, "bye");
        assert_eq!(goaway.status().reason(), Some("goaway"));
        assert_eq!(goaway.error().to_string(), "unavailable: bye (goaway)");
        // The peer's own words, when its goaway said why, follow the protocol's status.
        let said = Disconnect::Goaway {
            reason: Some("resource_exhausted".into()),
            error: Some(Box::new(
                Status::new(Code::ResourceExhausted, "too long").with_reason("max_frame_bytes"),
            )),
        };
        assert_eq!(said.status().message, "resource_exhausted");
        assert_eq!(
            said.error().to_string(),
            "unavailable: resource_exhausted (goaway) [the peer's goaway: \
             resource_exhausted: too long (max_frame_bytes)]"
        );
        let eof = Disconnect::Eof.error();
        assert_eq!(eof.reason(), Some("peer_closing"));
        assert_eq!(eof.disconnect(), Some(&Disconnect::Eof));
        let io = Disconnect::Transport {
            kind: io::ErrorKind::ConnectionReset,
            message: "reset".into(),
        };
        assert_eq!(io.status().message, "transport closed: reset");
        let stalled = Disconnect::WriteStalled {
            after: Duration::from_millis(30_000),
        };
        assert_eq!(
            stalled.status().message,
            "write stalled: the peer stopped reading for 30.0 s"
        );
        assert_eq!(stalled.status().reason(), Some("peer_closing"));
        let slow = Disconnect::SlowReader {
            taken: 12_288,
            after: Duration::from_millis(1_250),
        };
        assert_eq!(
            slow.status().message,
            "the peer read too slowly: 12288 bytes in 1.2 s while its answers waited on the \
             send budget"
        );
        assert_eq!(slow.status().code, Code::Unavailable);
        assert_eq!(slow.status().reason(), Some("peer_closing"));
    }

    #[test]
    fn local_errors_keep_their_kind_and_status() {
        let e = Error::closed();
        assert_eq!(e.local_kind(), Some(LocalError::Closed));
        assert_eq!(e.code(), Code::Unavailable);
        assert!(!e.is_remote());
        assert_eq!(Status::from(e).message, "connection closed");
    }
}
