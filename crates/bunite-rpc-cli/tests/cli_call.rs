//! `call` and `stream` as a user runs them: the wrong kind of method fails at once naming
//! its kind, `wss://` with `--ca`, `--origin` against an Origin-gated server, `--then` into
//! a sub-cap, JSON key order, a deadline, and the exit codes `--help` lists.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn call_on_a_stream_method_fails_within_a_second_naming_its_kind() {
    let s = server(&[], None);
    let started = Instant::now();
    let out = run(&["call", &s.url, "interop.counter", "ticks", r#"{"n":3}"#]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"ticks\" is a stream method"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("bunite-rpc stream"),
        "{}",
        stderr(&out)
    );

    // A stream method as a `--then` step that should return a cap: the same answer.
    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "ticks",
        r#"{"n":3}"#,
        "--then",
        "get",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"ticks\" is a stream method"),
        "{}",
        stderr(&out)
    );

    let out = run(&["stream", &s.url, "interop.counter", "get"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"get\" is a unary method"),
        "{}",
        stderr(&out)
    );

    let out = run(&["stream", &s.url, "interop.counter", "ticks", r#"{"n":2}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"i\":0}\n{\"i\":1}\n");
}

#[test]
fn then_calls_into_a_returned_sub_cap_and_json_keeps_the_key_order() {
    let s = server(&[], None);
    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "makeChild",
        r#"{"name":"kid"}"#,
        "--then",
        "name",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "\"kid\"\n");
    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "makeChild",
        r#"{"name":"kid"}"#,
        "--then",
        "ping",
        r#"{"x":20}"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "21\n");
    // A result that is not a cap cannot be called into.
    let out = run(&["call", &s.url, "interop.counter", "get", "--then", "name"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "echo",
        r#"{"z":1,"a":{"y":2,"b":3}}"#,
    ]);
    assert_eq!(stdout(&out), "{\"z\":1,\"a\":{\"y\":2,\"b\":3}}\n");
}

/// No command is a usage error, as a bad flag is: the help goes to stderr (not into a
/// pipe that expected output) and the exit code is 2 (it was 0).
#[test]
fn no_command_prints_the_help_on_stderr_and_exits_2() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Usage: bunite-rpc"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "asked for, the help is output");
    assert!(stdout(&out).contains("Usage: bunite-rpc"));
}

#[test]
fn exit_codes_tell_the_peers_answer_from_usage_connection_and_deadline() {
    let s = server(&[], None);
    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "make_child",
        r#"{"name":"a"}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    // The wire's message is the 0.10 peer's; the suggestion is ours.
    assert!(stderr(&out).contains(r#"not_found method "make_child" on cap "interop.counter""#));
    assert!(
        stderr(&out).contains(r#"hint: did you mean "makeChild"?"#),
        "{}",
        stderr(&out)
    );

    let out = run(&["call", &s.url, "interop.counter", "echo", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["call", &s.url, "interop.counter", "get", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));

    // A URL we cannot take is a usage error, not a failure to reach a server.
    for url in [
        "http://127.0.0.1:1/rpc",
        "tls://no-port",
        "ws://bad host/rpc",
    ] {
        let out = run(&["call", url, "interop.counter", "get"]);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
    }

    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let out = run(&[
        "call",
        &format!("ws://127.0.0.1:{port}/rpc"),
        "interop.counter",
        "get",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "slow",
        r#"{"ms":5000}"#,
        "--deadline",
        "200ms",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("deadline"), "{}", stderr(&out));

    let help = stdout(&run(&["call", "--help"]));
    for line in [
        "Exit codes",
        "usage error",
        "connection failure",
        "error status",
    ] {
        assert!(help.contains(line), "{line} missing from --help:\n{help}");
    }
}

#[test]
fn wss_with_ca_and_origin_against_an_origin_gated_tls_server() {
    let dir = std::env::temp_dir().join(format!("bunite-cli-tls-{}", std::process::id()));
    let out = run(&["self-signed", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let s = server(
        &[
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--allow-origin",
            "https://app.example",
        ],
        Some(TempDir(dir.clone())),
    );
    assert!(s.url.starts_with("wss://"), "{}", s.url);
    let url = s.url.replace("127.0.0.1", "localhost");

    let out = run(&[
        "call",
        &url,
        "interop.counter",
        "get",
        "--ca",
        cert,
        "--origin",
        "https://app.example",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"count\":0}\n");

    // Without the Origin the policy refuses the bootstrap: the peer's answer.
    let out = run(&["call", &url, "interop.counter", "get", "--ca", cert]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("policy denied"), "{}", stderr(&out));

    // Without --ca the self-signed certificate is refused: a connection failure that says
    // what to do.
    let out = run(&[
        "call",
        &url,
        "interop.counter",
        "get",
        "--origin",
        "https://app.example",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("--ca FILE"), "{}", stderr(&out));
}

/// `interop-server` takes the listener's bounds as flags: with `--max-bytes 4KiB` a short
/// echo is answered, and the server's hello announces the bound, so `call` refuses a
/// 10,000-byte one before sending it (a local failure naming the peer's maxBytes).
#[test]
fn interop_server_takes_listener_bounds_as_flags() {
    let s = server(&["--max-bytes", "4KiB", "--receive-deadline", "5s"], None);
    let short = format!("\"{}\"", "a".repeat(100));
    let out = run(&["call", &s.url, "interop.counter", "echo", &short]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), short);

    let long = format!("\"{}\"", "a".repeat(10_000));
    let out = run(&["call", &s.url, "interop.counter", "echo", &long]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exceeds the peer's maxBytes 4096"),
        "{}",
        stderr(&out)
    );

    let out = run(&["interop-server", "--max-bytes", "4kb"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a size it cannot read is a usage error"
    );
    assert!(stderr(&out).contains("unknown unit"), "{}", stderr(&out));

    let info = stdout(&run(&["info"]));
    for line in [
        "default listener max connections 4096",
        "default maxBytes 67108864",
        "default record table 1048576 bytes",
        "default decode budget 4194304 bytes + 3 per wire byte",
    ] {
        assert!(info.contains(line), "{line:?} not in {info}");
    }
}

/// A server's error text reaches the terminal as text: its control characters, which a
/// terminal obeys (an escape sequence retitles or clears it, a newline forges a line of
/// ours), are printed escaped, and a long message is cut, not printed whole.
#[test]
fn a_servers_error_text_is_printed_escaped_and_cut() {
    let s = server(&[], None);
    let message = format!(
        "\u{1b}]0;owned\u{7}\u{1b}[2J\nhint: run rm -rf ~\u{202e}{}",
        "x".repeat(100_000)
    );
    let params = serde_json::json!({
        "code": "internal",
        "message": message,
        "reason": "\u{1b}[31mred",
    });
    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "fail",
        &params.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let controls: Vec<char> = err
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}')
        .collect();
    assert!(
        controls.is_empty(),
        "control characters printed: {controls:?}"
    );
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with("error: internal \\u{1b}]0;owned\\u{7}\\u{1b}[2J\\nhint: run rm -rf ~"),
        "{err:?}"
    );
    assert!(err.contains("(reason: \\u{1b}[31mred)"), "{err:?}");
    assert!(err.len() < 2048, "{} bytes printed", err.len());
    assert!(err.contains("… (100036 bytes) (reason:"), "{err:?}");
}

/// `stream … | head -1`: once the reader of its output has gone, `stream` stops (the
/// stream is cancelled, the connection closed) and exits 0, as `head`'s writer should,
/// instead of panicking on the closed pipe with exit code 101.
#[test]
fn stream_stops_quietly_when_its_reader_goes() {
    let s = server(&[], None);
    let mut child = Command::new(BIN)
        .args([
            "stream",
            &s.url,
            "interop.counter",
            "ticks",
            r#"{"n":1000000}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stream");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    assert_eq!(first, r#"{"i":0}"#);
    drop(lines);
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `info`, `typegen`, `interop-client` and `demo --once` with a stdout whose reader has
/// already gone (`… | head -0`): each exits as it would have with the output read (0:
/// every interop check passes), without panicking on the closed pipe.
#[test]
fn commands_whose_reader_has_gone_exit_as_if_read() {
    let s = server(&[], None);
    let cases: [&[&str]; 4] = [
        &["info"],
        &["typegen"],
        &["interop-client", &s.url],
        &["demo", "--once"],
    ];
    for args in cases {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
}
