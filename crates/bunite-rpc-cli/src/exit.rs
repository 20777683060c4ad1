//! The exit codes of `call` and `stream`, told apart by where a failure came from (the
//! same split as the library's `Error`: the peer's answer, this process, the connection).

use bunite_rpc::Error;

/// The call succeeded.
pub const OK: i32 = 0;
/// The peer answered with an error `Status` (the call, or the bootstrap, was refused).
pub const REMOTE: i32 = 1;
/// A usage error: bad arguments, URL or JSON (a params file or stdin that cannot be read
/// included), or the method is of the other kind (`call` on a stream method, `stream` on a
/// unary one). clap's own usage errors exit 2 as well.
pub const USAGE: i32 = 2;
/// The server could not be reached (connect, TLS or handshake failed or timed out), or the
/// connection ended before the answer.
pub const CONNECTION: i32 = 3;
/// This process gave up: `--deadline` passed, the call was refused before it was sent (e.g.
/// larger than the server's `maxBytes`), or the answer was not what was expected (e.g.
/// `--then` on a result that is not a cap).
pub const LOCAL: i32 = 4;
/// Interrupted (Ctrl-C).
pub const INTERRUPTED: i32 = 130;

/// The table shown by `--help`.
pub const HELP: &str = "\
Exit codes (call, stream):
  0    success
  1    the peer answered with an error status (code, message and reason on stderr)
  2    usage error: bad arguments, URL or JSON (or a params @FILE or stdin that
       cannot be read), or the method is of the other kind (call on a stream
       method, stream on a unary method)
  3    connection failure: connect, TLS or WebSocket handshake failed or timed out,
       or the connection ended before the answer
  4    local failure: --deadline passed, the call was refused before it was sent
       (e.g. larger than the server's maxBytes), or the answer did not fit (e.g.
       --then on a result that is not a cap)
  130  interrupted (Ctrl-C)";

/// The exit code of a library error.
pub fn of(error: &Error) -> i32 {
    match error {
        Error::Remote(_) => REMOTE,
        Error::Disconnected { .. } => CONNECTION,
        Error::Local { kind, .. } if *kind == bunite_rpc::LocalError::Closed => CONNECTION,
        _ => LOCAL,
    }
}
