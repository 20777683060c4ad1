//! The interop commands against each other over real sockets, as CI runs them: every
//! INTEROP.md check must PASS over WebSocket and TCP, plain and inside the encrypted pipe.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_bunite-rpc");
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// A running `interop-server`, killed on drop.
struct Server {
    child: Child,
    urls: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(key: Option<&str>) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["interop-server", "--tcp", "127.0.0.1:0"]);
    if let Some(k) = key {
        cmd.args(["--key", k]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn interop-server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let line = lines.next().expect("a listening line").expect("utf-8");
        let url = line.strip_prefix("listening ").expect("`listening URL`");
        urls.push(url.to_owned());
    }
    assert!(
        urls[0].starts_with("ws://") && urls[0].ends_with("/rpc"),
        "{urls:?}"
    );
    assert!(urls[1].starts_with("tcp://"), "{urls:?}");
    Server { child, urls }
}

fn client(url: &str, key: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["interop-client", url]);
    if let Some(k) = key {
        cmd.args(["--key", k]);
    }
    let out = cmd.output().expect("run interop-client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn assert_all_pass(url: &str, key: Option<&str>) {
    let (ok, stdout) = client(url, key);
    let checks = stdout
        .lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL "))
        .count();
    assert!(ok, "interop-client {url} failed:\n{stdout}");
    assert!(checks >= 19, "only {checks} checks ran:\n{stdout}");
    assert!(!stdout.contains("FAIL "), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with(&format!("{checks} passed, 0 failed")),
        "{stdout}"
    );
}

#[test]
fn every_check_passes_over_websocket_and_tcp() {
    let s = server(None);
    for url in &s.urls {
        assert_all_pass(url, None);
    }
}

#[test]
fn every_check_passes_inside_the_encrypted_pipe() {
    let s = server(Some(KEY));
    for url in &s.urls {
        assert_all_pass(url, Some(KEY));
    }
    // Without the key the client cannot talk to a sealed server, and says so.
    let (ok, stdout) = client(&s.urls[1], None);
    assert!(!ok, "{stdout}");
}

#[test]
fn call_and_stream_speak_json_and_report_errors() {
    let s = server(None);
    let ws = &s.urls[0];
    let run = |args: &[&str]| Command::new(BIN).args(args).output().expect("run");
    let out = run(&[
        "call",
        ws,
        "interop.counter",
        "increment",
        r#"{"delta": 2}"#,
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"count":2}"#
    );
    let out = run(&["call", ws, "interop.counter", "bytes", r#"{"n": 3}"#]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#""AAEC""#,
        "binary as base64"
    );
    let out = run(&["call", ws, "interop.versioned", "v", "--version", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed_precondition") && err.contains("version_mismatch"),
        "{err}"
    );
    let out = run(&["stream", ws, "interop.counter", "ticks", r#"{"n": 3}"#]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [r#"{"i":0}"#, r#"{"i":1}"#, r#"{"i":2}"#]
    );
}

/// How `child` exited, if it did within `within` (polled: the standard library has no
/// wait with a timeout).
fn exited_within(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_demo_tours_every_feature_and_exits_with_once() {
    let mut child = Command::new(BIN)
        .args(["demo", "--once"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn demo");
    let status =
        exited_within(&mut child, Duration::from_secs(60)).expect("demo --once did not exit");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    assert!(status.success(), "{out}");
    for feature in [
        "bootstrap",
        "call",
        "sub-cap",
        "stream",
        "cancel",
        "policy",
        "revoke",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(feature)),
            "no {feature} line in:\n{out}"
        );
    }
}

/// A hostile (or broken) server under test: `interop.counter` whose `echo` answers 4 MiB
/// of binary and whose other methods fail with a long message full of escape sequences.
/// The client's report stays a report: one short line per check, nothing a terminal would
/// obey, however large or strange the answers.
#[test]
fn a_hostile_servers_answers_are_reported_short_and_escaped() {
    use bunite_rpc::dynamic::DynCap;
    use bunite_rpc::transport::byte_stream::TcpTransport;
    use bunite_rpc::{CapDef, Code, Connection, MethodDef, Status, Value};

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hostile = format!("\u{1b}]0;owned\u{7}\u{1b}[2J\nPASS{}", "x".repeat(100_000));
    let serving = rt.spawn(async move {
        let mut conns = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            let mut def = CapDef::builder("interop.counter");
            let mut imp =
                DynCap::new().call("echo", |_, _| async { Ok(Value::Bin(vec![7; 4 << 20])) });
            for m in [
                "increment",
                "get",
                "fail",
                "boom",
                "closedCount",
                "makeChild",
            ] {
                def = def.method(MethodDef::call(m));
                let message = hostile.clone();
                imp = imp.call(m, move |_, _| {
                    let message = message.clone();
                    async move { Err::<Value, _>(Status::new(Code::Internal, message)) }
                });
            }
            let def = def.method(MethodDef::call("echo")).build();
            let conn = Connection::builder()
                .serve(def, imp.build())
                .connect(TcpTransport::tcp(stream));
            conns.push(conn);
        }
    });
    let (ok, stdout) = client(&format!("tcp://{addr}"), None);
    serving.abort();
    assert!(!ok, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() >= 19 && lines.len() <= 20,
        "{} lines",
        lines.len()
    );
    assert!(
        lines.iter().all(|l| l.len() < 2048),
        "a line of {} bytes",
        lines.iter().map(|l| l.len()).max().unwrap_or(0)
    );
    assert!(
        !stdout.chars().any(|c| c.is_control() && c != '\n'),
        "control characters printed"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FAIL echo-codec: echo differs: ")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FAIL bootstrap-and-calls: internal: \\u{1b}]0;owned")),
        "{stdout}"
    );
}

/// SIGTERM stops `interop-server` gracefully: the call in progress is answered, the
/// connection then closes (a new call fails `unavailable`), the listeners are closed, and
/// the process exits 0 saying how many connections it drained. Before, SIGTERM killed it
/// mid-call (exit by signal, the call failed).
#[cfg(unix)]
#[test]
fn sigterm_stops_the_interop_server_gracefully_and_it_exits_0() {
    use bunite_rpc::transport::byte_stream;
    use bunite_rpc::{Code, Connection, Value};

    let mut s = server(None);
    let addr = s.urls[1].strip_prefix("tcp://").unwrap().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = Connection::new(byte_stream::tcp_connect(addr.as_str()).await.unwrap());
        let counter = conn.bootstrap_name("interop.counter", None).await.unwrap();
        let ms = Value::Record([("ms".to_owned(), 1000i64.into())].into_iter().collect());
        let slow = tokio::spawn({
            let counter = counter.clone();
            async move { counter.call_value("slow", ms).await }
        });
        // The server reads in order: once `get` is answered, `slow` is running.
        counter.call_value("get", Value::Undefined).await.unwrap();
        let killed = Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let answer = tokio::time::timeout(Duration::from_secs(10), slow)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(answer.unwrap(), Value::from("done"), "the call in progress");
        tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("the server closed the connection");
        let after = counter
            .call_value("get", Value::Undefined)
            .await
            .unwrap_err();
        assert_eq!(after.code(), Code::Unavailable);
        assert!(
            tokio::net::TcpStream::connect(addr.as_str()).await.is_err(),
            "the listener is closed"
        );
    });
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// SIGTERM stops `interop-server --stats` too while its stdin stays open: the stdin reader
/// that answers with the stats no longer holds the process. Before, the server said it had
/// stopped and then waited for its stdin to close (the runtime's drop waited for the
/// blocking read).
#[cfg(unix)]
#[test]
fn sigterm_stops_the_interop_server_with_stats_while_its_stdin_is_open() {
    use std::io::Write;

    let mut child = Command::new(BIN)
        .args(["interop-server", "--stats"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn interop-server");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines.next().expect("a listening line").expect("utf-8");
    assert!(line.starts_with("listening "), "{line}");
    // The stats reader is running: a line is answered.
    stdin.write_all(b"\n").unwrap();
    let stats = lines.next().expect("a stats line").expect("utf-8");
    assert!(stats.starts_with("stats connections=0 "), "{stats}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = exited_within(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let status = status.expect("the server exited within 10 s of SIGTERM, its stdin open");
    assert!(status.success(), "exit status {status:?}");
}

/// The wrong scheme: `call tcp://` at the WebSocket port says the server closed without a
/// byte and names `ws://` (it said only "transport closed", or "connection closed" when
/// the server had closed before the bootstrap was made); `call ws://` at the byte-stream
/// port says the answer is not HTTP and names `tcp://`.
#[test]
fn call_with_the_wrong_scheme_says_which_to_use() {
    let s = server(None);
    let ws_port = s.urls[0]
        .trim_start_matches("ws://")
        .trim_end_matches("/rpc");
    let tcp_port = s.urls[1].trim_start_matches("tcp://");
    let cases = [
        (
            format!("tcp://{ws_port}"),
            ["without sending a byte", "use ws://HOST:PORT/PATH"],
        ),
        (
            format!("ws://{tcp_port}/rpc"),
            ["the server's answer is not HTTP", "use tcp://HOST:PORT"],
        ),
    ];
    for (url, says) in cases {
        // Several times: whether the bootstrap is made before the server closes is a race.
        for _ in 0..5 {
            let out = Command::new(BIN)
                .args(["call", &url, "interop.echo", "echo", "1"])
                .output()
                .expect("run call");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{url}: {stderr}");
            for s in says {
                assert!(stderr.contains(s), "{url}: {stderr}");
            }
        }
    }
}
