//! The `bunite-rpc` command-line tool: the demo, the interop server and client, and calling
//! caps from a shell.
//!
//! Run with: `cargo run -p bunite-rpc-cli -- --help`

mod allocator;
mod call;
mod connect;
mod demo;
mod exit;
mod interop_caps;
mod interop_client;
mod interop_server;
mod json;
mod listener_args;
mod params;
mod peer_text;
mod serve_stdio;
mod server_stats;
mod stop;
mod suggest;
mod typegen;
mod web;
mod wire_shapes;

/// jemalloc with background purging (feature `jemalloc`, on by default): a server gives
/// back the memory of a burst of connections or a large message about 10 s after it, where
/// glibc's malloc keeps most of it (docs/RELIABILITY.md).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::Write;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use bunite_rpc::transport::sealed::Key;

/// bunite capability RPC: demo, interop server and client, calling caps from a shell.
#[derive(Debug, Parser)]
#[command(name = "bunite-rpc", version, about, after_help = exit::HELP)]
struct Cli {
    /// Log connections and calls to stderr (tracing spans with their fields and
    /// durations). The RUST_LOG environment variable sets the filter (default: info) and
    /// turns logging on by itself.
    #[arg(long, global = true)]
    log: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a server on 127.0.0.1, show each feature against it, then keep serving.
    Demo {
        /// Exit after the tour instead of serving until Ctrl-C or SIGTERM.
        #[arg(long)]
        once: bool,
        /// WebSocket address to serve on (port 0 picks a free port; the URL is printed).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
        listen: String,
        /// Serve the tour as a web page instead, on the same port as /rpc, and print its URL
        /// (needs the web client built: `cd js && npm ci && npm run build`).
        #[arg(long)]
        web: bool,
        /// The web client's directory (default: js/ of this repository).
        #[arg(long, value_name = "DIR", requires = "web")]
        web_root: Option<std::path::PathBuf>,
    },
    /// Serve the interop caps of INTEROP.md over WebSocket (and TCP with --tcp), until
    /// Ctrl-C or SIGTERM, which stop it gracefully (calls in progress answered for up to
    /// 10 s, then every connection closed with a goaway; exit 0).
    InteropServer {
        /// WebSocket address (port 0 picks a free port). The first lines on stdout give each
        /// listener's URL: `listening ws://HOST:PORT/rpc`, then with --tcp `listening
        /// tcp://HOST:PORT` (wss:// and tls:// with TLS).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
        listen: String,
        /// WebSocket path.
        #[arg(long, default_value = "/rpc")]
        path: String,
        /// Also serve the length-prefixed byte stream on this TCP address.
        #[arg(long, value_name = "HOST:PORT")]
        tcp: Option<String>,
        /// Run every connection inside the AES-256-GCM pipe with this key (64 hex digits).
        #[arg(long)]
        key: Option<Key>,
        /// Terminate TLS with this certificate chain (PEM): wss:// and tls:// URLs.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Only WebSocket clients with this Origin may bootstrap (repeatable); a policy
        /// over the Origin the handshake carried.
        #[arg(long, value_name = "ORIGIN")]
        allow_origin: Vec<String>,
        /// Answer each line read on stdin with one `stats …` line of live counts
        /// (connections, their tasks, handlers, streams, the runtime's tasks). For the
        /// chaos harness (`benches/chaos.rs`).
        #[arg(long, hide = true)]
        stats: bool,
        /// Also serve the test cap `test.wireShapes` (one method per serde shape), for the
        /// web client's tests of the TypeScript bindings (js/test/wire_shapes.test.ts).
        #[arg(long, hide = true)]
        wire_shapes: bool,
        #[command(flatten)]
        listener: listener_args::ListenerArgs,
    },
    /// Write a self-signed certificate and its key (PEM) for trying TLS locally:
    /// DIR/cert.pem (give it to clients with --ca) and DIR/key.pem.
    SelfSigned {
        /// The directory to write to.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: std::path::PathBuf,
        /// The names the certificate is for.
        #[arg(long = "name", value_name = "HOST", default_values = ["localhost", "127.0.0.1"])]
        names: Vec<String>,
    },
    /// Run every INTEROP.md check against a server, one PASS/FAIL line each; exit 0 if all
    /// pass, 1 otherwise.
    InteropClient {
        /// The server's URL: ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, tcp://HOST:PORT or
        /// tls://HOST:PORT (wss:// and tls:// trust the platform's roots).
        url: String,
        /// The AES-256-GCM pipe key (64 hex digits), if the server uses one.
        #[arg(long)]
        key: Option<Key>,
    },
    /// Bootstrap CAP at URL and call METHOD with JSON args; print the result as JSON.
    #[command(after_help = exit::HELP)]
    Call(call::Args),
    /// Bootstrap CAP at URL and open the stream METHOD; print each value as a JSON line.
    #[command(after_help = exit::HELP)]
    Stream(call::Args),
    /// Write the TypeScript definitions of the interop caps (the demo's caps too) for the
    /// web client in js/: one .ts file, to FILE or stdout.
    Typegen {
        /// The file to write (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// The module the file imports the client's types from.
        #[arg(long, default_value = bunite_rpc::typescript::DEFAULT_IMPORT)]
        import: String,
        /// Write the test cap `test.wireShapes` instead (for js/test/wire_shapes.gen.ts).
        #[arg(long, hide = true)]
        shapes: bool,
    },
    /// Show the protocol version and the library's defaults.
    Info,
    /// Serve `test.counter` on this process's stdin/stdout (length-prefixed frames) until
    /// the peer goes away or stdin closes. Used by tests that spawn the tool as a child.
    #[command(hide = true)]
    ServeStdio,
}

fn main() {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let (Some(Command::Call(args) | Command::Stream(args)), Some((_, sub))) =
        (&mut cli.command, matches.subcommand())
    {
        args.group_then(sub);
    }
    if cli.log || std::env::var_os("RUST_LOG").is_some() {
        init_log();
    }
    let code = match cli.command {
        Some(Command::ServeStdio) => report(serve_stdio::run()),
        Some(Command::Typegen {
            out,
            import,
            shapes,
        }) => report(typegen::run(out.as_deref(), &import, shapes)),
        Some(Command::SelfSigned { dir, names }) => report(self_signed(&dir, names)),
        Some(Command::Info) => report(info()),
        // No command is a usage error (as a bad flag is): the help on stderr, exit 2.
        None => {
            let _ = writeln!(std::io::stderr(), "{}", Cli::command().render_help());
            exit::USAGE
        }
        Some(cmd) => match allocator::runtime() {
            Ok(rt) => {
                let code = rt.block_on(run(cmd));
                // Not waiting for blocking tasks: `interop-server --stats` reads stdin on one,
                // and dropping the runtime would wait for that read, so a stopped server
                // stayed up until its stdin closed.
                rt.shutdown_background();
                code
            }
            Err(e) => {
                eprintln!("bunite-rpc: cannot start the runtime: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}

async fn run(cmd: Command) -> i32 {
    match cmd {
        Command::Demo {
            listen,
            web: true,
            web_root,
            ..
        } => report(demo::run_web(&listen, web_root.unwrap_or_else(web::default_root)).await),
        Command::Demo { once, listen, .. } => report(demo::run(&listen, once).await),
        Command::InteropServer {
            listen,
            path,
            tcp,
            key,
            tls_cert,
            tls_key,
            allow_origin,
            stats,
            wire_shapes,
            listener,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => {
                    match bunite_rpc::transport::tls::ServerTls::from_pem_files(cert, key) {
                        Ok(tls) => Some(tls),
                        Err(e) => return report::<()>(Err(e.into())),
                    }
                }
                _ => None,
            };
            let access = interop_server::Access {
                tls,
                allow_origins: allow_origin,
                listener: listener.config(),
                limits: listener.limits(),
                wire_shapes,
            };
            report(interop_server::run(&listen, &path, tcp.as_deref(), key, access, stats).await)
        }
        Command::InteropClient { url, key } => match interop_client::run(&url, key).await {
            Ok(failed) => i32::from(failed > 0),
            Err(e) => report::<()>(Err(e)),
        },
        Command::Call(args) => call::call(args).await,
        Command::Stream(args) => call::stream(args).await,
        Command::Info
        | Command::ServeStdio
        | Command::Typegen { .. }
        | Command::SelfSigned { .. } => 0,
    }
}

/// Logs to stderr: spans as they close (with `time.busy`/`time.idle`), events at the
/// filter's level.
fn init_log() {
    use tracing_subscriber::fmt::format::FmtSpan;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .init();
}

/// The exit code of a command's outcome. A reader of stdout that has gone (`info | head -1`)
/// ends the output, not the command: exit 0, where `println!` would panic (exit 101).
fn report<T>(r: anyhow::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("bunite-rpc: {e:#}");
            1
        }
    }
}

/// Whether `e` is, at its root, a write to a pipe whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `self-signed`: a certificate for `names` and its key, written as DIR/cert.pem and
/// DIR/key.pem.
fn self_signed(dir: &std::path::Path, names: Vec<String>) -> anyhow::Result<()> {
    let certified = rcgen::generate_simple_self_signed(names)?;
    std::fs::create_dir_all(dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.key_pair.serialize_pem())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "wrote {} and {}", cert.display(), key.display())?;
    Ok(())
}

/// `info`: the wire version and every default limit, one line each.
fn info() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "bunite wire protocol version {}",
        bunite_rpc::wire::PROTOCOL_VERSION
    )?;
    for line in describe_limits()
        .into_iter()
        .chain(listener_args::describe_defaults())
    {
        writeln!(out, "default {line}")?;
    }
    out.flush()?;
    Ok(())
}

/// Every field of the library's default [`bunite_rpc::Limits`], one line each, for
/// `bunite-rpc info` (taken apart field by field, so a new field does not build until it is
/// printed here).
fn describe_limits() -> Vec<String> {
    let bunite_rpc::Limits {
        max_bytes,
        max_caps,
        max_in_flight,
        max_depth,
        max_revoked_ids,
        max_unsent_bytes,
        write_stall_timeout,
        send_deadline,
        max_pending_policy_checks,
        hello_timeout,
        bootstrap_timeout,
        decode_budget_factor,
        decode_budget_base,
        max_hello_features,
        max_hello_text,
        max_record_table_bytes,
        max_context_bytes,
        max_buffered_stream_bytes,
    } = bunite_rpc::Limits::default();
    let time = |d: Option<std::time::Duration>| d.map_or("none".to_owned(), |d| format!("{d:?}"));
    let send_deadline = match send_deadline {
        Some(d) => format!("{:?} + 1 s per {} bytes taken", d.grace, d.min_rate),
        None => "none".to_owned(),
    };
    vec![
        format!("maxBytes {max_bytes}"),
        format!("cap limit {max_caps}"),
        format!("in-flight limit {max_in_flight}"),
        format!("depth limit {max_depth}"),
        format!("revoked ids remembered {max_revoked_ids}"),
        format!("unsent bytes before reading pauses {max_unsent_bytes}"),
        format!("write stall timeout {}", time(write_stall_timeout)),
        format!("send deadline {send_deadline} (while a send budget pays)"),
        format!("pending policy checks {max_pending_policy_checks}"),
        format!("hello timeout {}", time(hello_timeout)),
        format!("bootstrap timeout {}", time(bootstrap_timeout)),
        format!("decode budget {decode_budget_base} bytes + {decode_budget_factor} per wire byte"),
        format!("hello features {max_hello_features}, strings up to {max_hello_text} bytes"),
        format!("record table {max_record_table_bytes} bytes"),
        format!("call meta.context {max_context_bytes} bytes"),
        format!("stream values not yet read {max_buffered_stream_bytes} bytes"),
    ]
}
