//! `call` and `stream`: call any cap from a shell, JSON in and out.

use bunite_rpc::transport::sealed::Key;
use bunite_rpc::{Connection, Error, Value};
use futures::StreamExt;

use crate::json;

/// Arguments of `call` and `stream`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's URL (ws://HOST:PORT/PATH or tcp://HOST:PORT).
    url: String,
    /// The cap's name.
    cap: String,
    /// The method's wire name.
    method: String,
    /// The params as JSON (omit for none).
    json: Option<String>,
    /// The cap version to ask for.
    #[arg(long = "version")]
    version: Option<String>,
    /// The AES-256-GCM pipe key (64 hex digits), if the server uses one.
    #[arg(long)]
    key: Option<Key>,
}

/// Prints a failure as code, message and reason; returns the exit code.
fn fail(error: &Error) -> i32 {
    let status = error.status();
    match status.reason() {
        Some(reason) => eprintln!(
            "error: {} {} (reason: {reason})",
            status.code, status.message
        ),
        None => eprintln!("error: {} {}", status.code, status.message),
    }
    2
}

/// Parses the params, connects and bootstraps the cap (an exit code on failure).
async fn open(args: &Args) -> Result<(Connection, bunite_rpc::Client, Value), i32> {
    let params = json::parse_args(args.json.as_deref()).map_err(|e| {
        eprintln!("error: params are not JSON: {e}");
        1
    })?;
    let conn = crate::connect::connect(&args.url, args.key.clone(), Connection::builder())
        .await
        .map_err(|e| {
            eprintln!("error: {e:#}");
            1
        })?;
    let client = conn
        .bootstrap_name(&args.cap, args.version.as_deref())
        .await
        .map_err(|s| fail(&s))?;
    Ok((conn, client, params))
}

/// `call URL CAP METHOD [JSON]`.
pub async fn call(args: Args) -> i32 {
    let (conn, client, params) = match open(&args).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let code = match client.call_value(&args.method, params).await {
        Ok(v) => {
            if let Some(j) = json::to_json(&v) {
                println!("{j}");
            }
            0
        }
        Err(s) => fail(&s),
    };
    drop(client);
    conn.close();
    conn.closed().await;
    code
}

/// `stream URL CAP METHOD [JSON]`: one JSON line per value until the end or Ctrl-C.
pub async fn stream(args: Args) -> i32 {
    let (conn, client, params) = match open(&args).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut values = client.stream(&args.method, params);
    let code = loop {
        let next = tokio::select! {
            next = values.next() => next,
            _ = tokio::signal::ctrl_c() => break 130,
        };
        match next {
            None => break 0,
            Some(Ok(v)) => println!("{}", json::to_json(&v).unwrap_or(serde_json::Value::Null)),
            Some(Err(s)) => break fail(&s),
        }
    };
    drop(values);
    drop(client);
    conn.close();
    conn.closed().await;
    code
}
