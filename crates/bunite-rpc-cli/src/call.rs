//! `call` and `stream`: call any cap from a shell, JSON in and out, as grpcurl and websocat
//! are used: handshake options, a deadline, calls into returned sub-caps (`--then`), exit
//! codes by kind of failure (see `exit`), and the wrong kind of method named
//! ([`LocalError::WrongKind`]). Params may come from a file or stdin (`params`), and
//! `--context` sends a `meta.context` map with every call (PROTOCOL §4, §9).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bunite_rpc::transport::sealed::Key;
use bunite_rpc::{CallOptions, Client, Code, Connection, Disconnect, Error, LocalError, Value};
use futures::StreamExt;

use crate::connect::{Options, Target};
use crate::{exit, json, params, peer_text, suggest};

/// How long `call` waits by default (connecting, bootstrapping and every call together).
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Arguments of `call` and `stream`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's URL: ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, tcp://HOST:PORT or
    /// tls://HOST:PORT.
    url: String,
    /// The cap's name.
    cap: String,
    /// The method's wire name.
    method: String,
    /// The params as JSON (omit for none). @FILE reads them from FILE, - or @- from stdin
    /// (for at most one call of the command). Only an unquoted leading @ names a file: a
    /// JSON string starting with @ is quoted, e.g. '"@x"'. A file named - is @./-.
    json: Option<String>,
    /// The cap version to ask for.
    #[arg(long = "version")]
    version: Option<String>,
    /// Then call METHOD (with JSON params, or @FILE, - or @- as for the first call) on the
    /// cap the previous call returned; repeatable. The last call is the command's kind (a
    /// unary call for `call`, a stream for `stream`); the ones before must each return one
    /// cap.
    #[arg(long = "then", num_args = 1..=2, value_names = ["METHOD", "JSON"], action = clap::ArgAction::Append)]
    then: Vec<String>,
    /// `--then`, one group per occurrence (filled from the matches by [`Args::group_then`]).
    #[arg(skip)]
    then_groups: Vec<Vec<String>>,
    /// Give up after this long, connecting included (e.g. 500ms, 10s, 2m); sent to the
    /// server as each call's deadline. Default: 30s for call, none for stream. Reading
    /// the params (@FILE, stdin) comes before it starts.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    deadline: Option<Duration>,
    /// The AES-256-GCM pipe key (64 hex digits), if the server uses one.
    #[arg(long)]
    key: Option<Key>,
    /// Trust only the certificates of this PEM file for wss:// and tls:// (default: the
    /// platform's roots).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The Origin header of the WebSocket handshake.
    #[arg(long)]
    origin: Option<String>,
    /// A header of the WebSocket handshake; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// An entry of the call's meta.context map (string to string), sent with every call of
    /// the command (the first and each --then); repeatable. VALUE may hold '='; a NAME
    /// given twice keeps its last VALUE. The server bounds the map's size (a bunite-rpc
    /// server: 64 KiB of names and values) and refuses a call over it.
    #[arg(long = "context", value_name = "NAME=VALUE", value_parser = parse_context)]
    context: Vec<(String, String)>,
}

impl Args {
    /// Groups the values of `--then` by occurrence (clap's derive flattens them).
    pub fn group_then(&mut self, matches: &clap::ArgMatches) {
        if let Some(groups) = matches.get_occurrences::<String>("then") {
            self.then_groups = groups.map(|g| g.cloned().collect()).collect();
        }
    }
}

/// `500ms`, `10s`, `2m`, `1h`, or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.');
    let (number, unit) = text.split_at(split.unwrap_or(text.len()));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 10s or 2m"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// `Name: value`.
fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME:VALUE"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

/// `name=value` (the value may hold `=`; the name may not be empty).
fn parse_context(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        Some(_) => Err(format!("{text:?} has an empty NAME: use NAME=VALUE")),
        None => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// The `--context` entries as the map sent: one entry per name, its last value, in the
/// order the names first appear.
fn context_map(entries: &[(String, String)]) -> Vec<(String, String)> {
    let mut map: Vec<(String, String)> = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        match map.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1.clone_from(value),
            None => map.push((name.clone(), value.clone())),
        }
    }
    map
}

/// One call of the chain: a method and its params.
struct Step {
    method: String,
    params: Value,
}

/// The kind of the last call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary,
    Stream,
}

/// `prefix code message (reason: …)` on stderr, the peer's text escaped and cut
/// ([`peer_text`]).
fn print_status(prefix: &str, status: &bunite_rpc::Status) {
    let message = peer_text::shown(&status.message);
    match status.reason() {
        Some(reason) => eprintln!(
            "{prefix} {} {message} (reason: {})",
            status.code,
            peer_text::shown(reason)
        ),
        None => eprintln!("{prefix} {} {message}", status.code),
    }
}

/// Prints a failure as code, message and reason (and a hint when there is one); returns
/// the exit code.
fn fail(error: &Error, args: &Args, method: &str) -> i32 {
    let status = error.status();
    print_status("error:", status);
    // The server's own words when it closed with a goaway that said why (a message over
    // its maxBytes, a protocol error, a deadline).
    if let Some(Disconnect::Goaway {
        error: Some(why), ..
    }) = error.disconnect()
    {
        print_status("the server sent goaway:", why);
    }
    if error.is_remote()
        && status.code == Code::InvalidArgument
        && status.message.contains("(max_context_bytes)")
    {
        // The library's wording for a meta.context over the server's bound, which its
        // hello does not announce, so it cannot be checked before sending.
        eprintln!(
            "hint: the server refused the --context map as too large (names and values count)"
        );
    }
    if error.is_remote() && status.code == Code::NotFound {
        // `method "x" on cap "y"`: the wire's wording, from bunite-core 0.10.
        let cap = status
            .message
            .rsplit_once("on cap \"")
            .map_or(args.cap.as_str(), |(_, c)| c.trim_end_matches('"'));
        if status.message.starts_with("method ") {
            if let Some(better) = suggest::method(cap, method) {
                eprintln!("hint: did you mean {better:?}?");
            }
        }
    }
    exit::of(error)
}

/// Why the connection had closed, for a call the library refused as made after it closed
/// ("connection closed", all it says): the cause the calls that were waiting got, e.g. a
/// server that closed before our first call (a WebSocket server at a `tcp://` URL).
fn print_why_closed(error: &Error, conn: &Connection) {
    if error.local_kind() != Some(LocalError::Closed) {
        return;
    }
    if let Some(cause) = conn.closed_by() {
        print_status("the connection had closed:", &cause.status());
    }
}

/// Runs `body` within the deadline; an exit code.
async fn within(deadline: Option<Duration>, body: impl std::future::Future<Output = i32>) -> i32 {
    let Some(limit) = deadline else {
        return body.await;
    };
    match tokio::time::timeout(limit, body).await {
        Ok(code) => code,
        Err(_) => {
            eprintln!(
                "error: deadline_exceeded no answer within {} ms (--deadline)",
                limit.as_millis()
            );
            exit::LOCAL
        }
    }
}

/// `call URL CAP METHOD [JSON] [--then METHOD [JSON]]…`.
pub async fn call(args: Args) -> i32 {
    let steps = match steps(&args).await {
        Ok(steps) => steps,
        Err(code) => return code,
    };
    let deadline = Some(args.deadline.unwrap_or(CALL_DEADLINE));
    within(deadline, run(&args, &steps, Kind::Unary, deadline)).await
}

/// `stream URL CAP METHOD [JSON] [--then …]`: one JSON line per value until the end,
/// the deadline or Ctrl-C.
pub async fn stream(args: Args) -> i32 {
    let steps = match steps(&args).await {
        Ok(steps) => steps,
        Err(code) => return code,
    };
    within(
        args.deadline,
        run(&args, &steps, Kind::Stream, args.deadline),
    )
    .await
}

/// Reads the URL, then reads and parses every call's params (before the deadline starts:
/// stdin may be a pipe that is slow to fill); `Err(exit::USAGE)` when either is wrong.
async fn steps(args: &Args) -> Result<(Target<'_>, Vec<Step>), i32> {
    let target = match Target::parse(&args.url) {
        Ok(target) => target,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Err(exit::USAGE);
        }
    };
    let first = std::iter::once((args.method.as_str(), args.json.as_deref()));
    let then = args
        .then_groups
        .iter()
        .filter_map(|t| Some((t.first()?.as_str(), t.get(1).map(String::as_str))));
    let calls: Vec<_> = first.chain(then).collect();
    match params::read(&calls).await {
        Ok(params) => {
            let steps = calls.iter().zip(params).map(|((method, _), params)| Step {
                method: (*method).to_owned(),
                params,
            });
            Ok((target, steps.collect()))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::USAGE)
        }
    }
}

/// Connects, bootstraps, runs the chain; an exit code.
async fn run(
    args: &Args,
    (target, steps): &(Target<'_>, Vec<Step>),
    kind: Kind,
    deadline: Option<Duration>,
) -> i32 {
    let options = Options {
        key: args.key.clone(),
        ca: args.ca.clone(),
        origin: args.origin.clone(),
        headers: args.headers.clone(),
    };
    let conn = match crate::connect::connect_with(target, &options, Connection::builder()).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::CONNECTION;
        }
    };
    let code = match conn
        .bootstrap_name(&args.cap, args.version.as_deref())
        .await
    {
        Err(e) => {
            let code = fail(&e, args, &args.method);
            print_why_closed(&e, &conn);
            code
        }
        Ok(client) => {
            let chain = chain(args, client, steps, kind, deadline);
            tokio::select! {
                code = chain => code,
                _ = tokio::signal::ctrl_c() => exit::INTERRUPTED,
            }
        }
    };
    conn.close();
    conn.closed().await;
    code
}

/// Says that `method` is of kind `is`, not the one asked for.
fn wrong_kind(args: &Args, method: &str, is: Kind) -> i32 {
    let (what, answered, command) = match is {
        Kind::Stream => ("a stream method", "stream frames", "stream"),
        Kind::Unary => ("a unary method", "a result", "call"),
    };
    eprintln!(
        "error: {method:?} is {what} (the server answered with {answered}): use `bunite-rpc \
         {command} {} {} {method} …`",
        args.url, args.cap
    );
    exit::USAGE
}

/// The calls: each step but the last returns the cap the next is called on.
async fn chain(
    args: &Args,
    mut target: Client,
    steps: &[Step],
    kind: Kind,
    deadline: Option<Duration>,
) -> i32 {
    let started = tokio::time::Instant::now();
    let context = context_map(&args.context);
    let opts = || CallOptions {
        deadline: deadline.map(|d| d.saturating_sub(started.elapsed())),
        context: context.clone(),
        ..CallOptions::default()
    };
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        if !last {
            match target
                .call_cap_with(&step.method, step.params.clone(), opts())
                .await
            {
                Ok(next) => target = next,
                Err(e) if e.local_kind() == Some(LocalError::WrongKind) => {
                    return wrong_kind(args, &step.method, Kind::Stream);
                }
                Err(e) => {
                    if e.local_kind() == Some(LocalError::BadAnswer) {
                        eprintln!(
                            "error: {:?} did not return one cap, which --then needs",
                            step.method
                        );
                        return exit::LOCAL;
                    }
                    return fail(&e, args, &step.method);
                }
            }
            continue;
        }
        return match kind {
            Kind::Unary => {
                match target
                    .call_with(&step.method, step.params.clone(), opts())
                    .await
                {
                    Ok(v) => match json::to_json(&v) {
                        Some(j) => print_line(&j).err().unwrap_or(exit::OK),
                        None => exit::OK,
                    },
                    Err(e) if e.local_kind() == Some(LocalError::WrongKind) => {
                        wrong_kind(args, &step.method, Kind::Stream)
                    }
                    Err(e) => fail(&e, args, &step.method),
                }
            }
            Kind::Stream => print_stream(args, &target, step, opts()).await,
        };
    }
    exit::OK
}

/// Writes one JSON line to stdout. A reader that has gone (`stream … | head -1`) is the
/// end of the output, not a failure: `Err(exit::OK)`, where `println!` panicked (exit code
/// 101); any other write error is reported, `Err(exit::LOCAL)`.
fn print_line(line: &serde_json::Value) -> Result<(), i32> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(exit::OK),
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            Err(exit::LOCAL)
        }
    }
}

/// Prints each value of a stream as a JSON line.
async fn print_stream(args: &Args, target: &Client, step: &Step, opts: CallOptions) -> i32 {
    let mut values = target.stream_with(&step.method, step.params.clone(), opts);
    while let Some(next) = values.next().await {
        match next {
            Ok(v) => {
                let line = json::to_json(&v).unwrap_or(serde_json::Value::Null);
                // Dropping the stream on the way out cancels it.
                if let Err(code) = print_line(&line) {
                    return code;
                }
            }
            Err(e) if e.local_kind() == Some(LocalError::WrongKind) => {
                // PROTOCOL §10: a result frame for a stream id.
                return wrong_kind(args, &step.method, Kind::Unary);
            }
            Err(e) => return fail(&e, args, &step.method),
        }
    }
    exit::OK
}
