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
        None => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
        }
    }
}
