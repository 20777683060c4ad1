//! The `bunite-rpc` command-line tool.
//!
//! Run with: `cargo run -p bunite-rpc-cli -- --help`

use clap::{Parser, Subcommand};

/// bunite capability RPC: demo, interop server and client, calling caps from a shell.
#[derive(Debug, Parser)]
#[command(name = "bunite-rpc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the protocol version and the library's defaults.
    Info,
    /// Serve `test.counter` on this process's stdin/stdout (length-prefixed frames) until
    /// the peer goes away or stdin closes. Used by tests that spawn the tool as a child.
    #[command(hide = true)]
    ServeStdio,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Info) => {
            let limits = bunite_rpc::Limits::default();
            println!(
                "bunite wire protocol version {}",
                bunite_rpc::wire::PROTOCOL_VERSION
            );
            println!("default maxBytes {}", limits.max_bytes);
            println!("default cap limit {}", limits.max_caps);
            println!("default in-flight limit {}", limits.max_in_flight);
        }
        Some(Command::ServeStdio) => {
            if let Err(e) = serve_stdio::run() {
                eprintln!("bunite-rpc serve-stdio: {e:#}");
                std::process::exit(1);
            }
        }
        None => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
        }
    }
}

/// The hidden `serve-stdio` subcommand: the child side of `transport::stream::spawn_child`.
mod serve_stdio {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bunite_rpc::dynamic::DynCap;
    use bunite_rpc::transport::stream;
    use bunite_rpc::{CapDef, Connection, MethodDef, Record, Value};

    /// Serves a `test.counter` (`get`, `increment {delta?}`, `echo`) until the connection
    /// closes.
    pub fn run() -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let served = rt.block_on(async {
            let conn = Connection::builder()
                .origin("bunite-rpc serve-stdio")
                .connect(stream::stdio());
            conn.serve(counter_def(), counter_impl())?.detach();
            conn.closed().await;
            // Let the writer finish its last batch (a goaway) before the process ends.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, bunite_rpc::Status>(())
        });
        // Tokio reads stdin on a blocking thread that cannot be interrupted: don't wait
        // for it.
        rt.shutdown_timeout(Duration::from_millis(100));
        Ok(served?)
    }

    fn counter_def() -> Arc<CapDef> {
        CapDef::builder("test.counter")
            .method(MethodDef::call("get").idempotent())
            .method(MethodDef::call("increment"))
            .method(MethodDef::call("echo"))
            .build()
    }

    fn counter_impl() -> Arc<dyn bunite_rpc::CapImpl> {
        let count = Arc::new(AtomicI64::new(0));
        let (c1, c2) = (Arc::clone(&count), count);
        DynCap::new()
            .call("get", move |_, _| {
                let n = c1.load(Ordering::SeqCst);
                async move { Ok(Value::Record(Record::new().with("count", n))) }
            })
            .call("increment", move |args: Value, _| {
                let delta = args
                    .as_record()
                    .and_then(|r| r.get("delta"))
                    .and_then(Value::as_integer)
                    .unwrap_or(1) as i64;
                let n = c2.fetch_add(delta, Ordering::SeqCst) + delta;
                async move { Ok(Value::Record(Record::new().with("count", n))) }
            })
            .call("echo", |args, _| async move { Ok(args) })
            .build()
    }
}
