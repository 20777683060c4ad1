//! What `call` and `stream` send besides the method: params from `@FILE` or stdin (`-`,
//! `@-`), a few MB of them included, and `--context NAME=VALUE` as every call's
//! `meta.context`, seen by a server this test runs in process (no interop cap echoes a
//! call's context).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::byte_stream::ByteStream;
use bunite_rpc::{CapDef, CapDefRef, Connection, MethodDef, Returns, Value};
use support::*;

/// A directory of its own for a test's files, removed on drop.
fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("bunite-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the test's directory");
    TempDir(dir)
}

fn write(dir: &TempDir, name: &str, text: &[u8]) -> String {
    let path = dir.0.join(name);
    std::fs::write(&path, text).expect("write a params file");
    path.to_str().expect("a UTF-8 path").to_owned()
}

#[test]
fn params_come_from_a_file_or_stdin_and_a_quoted_at_is_a_string() {
    let s = server(&[], None);
    let dir = temp_dir("params");
    let child = write(&dir, "child.json", br#"{"name":"kid"}"#);
    let x = write(&dir, "x.json", br#"{"x": 20}"#);

    let at = |path: &str| format!("@{path}");
    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "makeChild",
        &at(&child),
        "--then",
        "ping",
        &at(&x),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "21\n");

    for dash in ["-", "@-"] {
        let out = run_with_stdin(
            &["call", &s.url, "interop.counter", "echo", dash],
            br#"{"z":1,"a":"b"}"#,
        );
        assert_eq!(out.status.code(), Some(0), "{dash}: {}", stderr(&out));
        assert_eq!(stdout(&out), "{\"z\":1,\"a\":\"b\"}\n", "{dash}");
    }
    // Stdin for a --then step, and for a stream.
    let args = [
        "call",
        &s.url,
        "interop.counter",
        "makeChild",
        &at(&child),
        "--then",
        "ping",
        "-",
    ];
    let out = run_with_stdin(&args, br#"{"x": 41}"#);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "42\n");
    let out = run_with_stdin(
        &["stream", &s.url, "interop.counter", "ticks", "-"],
        br#"{"n": 2}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"i\":0}\n{\"i\":1}\n");

    // A JSON string that starts with @ is quoted: a string, not a file.
    let out = run(&["call", &s.url, "interop.counter", "echo", r#""@x""#]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "\"@x\"\n");
}

#[test]
fn params_that_cannot_be_read_or_parsed_are_usage_errors_naming_the_file() {
    let s = server(&[], None);
    let dir = temp_dir("bad-params");
    let bad = write(&dir, "bad.json", b"{not json");
    let missing = dir.0.join("missing.json");
    let missing = missing.to_str().unwrap();

    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "echo",
        &format!("@{bad}"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("\"echo\" in {bad} are not JSON")),
        "{}",
        stderr(&out)
    );

    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "makeChild",
        r#"{"name":"kid"}"#,
        "--then",
        "ping",
        &format!("@{missing}"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("\"ping\": cannot read {missing}")),
        "{}",
        stderr(&out)
    );

    let out = run_with_stdin(&["call", &s.url, "interop.counter", "echo", "-"], b"[1,");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"echo\" from stdin are not JSON"),
        "{}",
        stderr(&out)
    );

    // Stdin can feed one call's params, not two.
    let args = [
        "call",
        &s.url,
        "interop.counter",
        "makeChild",
        "-",
        "--then",
        "ping",
        "@-",
    ];
    let out = run_with_stdin(&args, br#"{"name":"kid"}"#);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(r#""makeChild" and of "ping" both read stdin"#),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

/// A 3 MB string param through `echo`, from stdin and from a file, comes back whole.
#[test]
fn params_of_a_few_megabytes_from_stdin_and_a_file() {
    let s = server(&[], None);
    let dir = temp_dir("large-params");
    let text: String = (0..3_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let json = format!("\"{text}\"");
    let file = write(&dir, "large.json", json.as_bytes());

    let out = run_with_stdin(
        &["call", &s.url, "interop.counter", "echo", "-"],
        json.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out) == format!("{json}\n"),
        "stdin: not echoed whole"
    );

    let out = run(&[
        "call",
        &s.url,
        "interop.counter",
        "echo",
        &format!("@{file}"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out) == format!("{json}\n"),
        "file: not echoed whole"
    );
}

/// The contexts the test server's handlers saw, one per call, in order.
type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A call's context as the test server answers it: `[[name, value], …]`.
fn as_value(context: &[(String, String)]) -> Value {
    Value::Array(
        context
            .iter()
            .map(|(k, v)| Value::Array(vec![k.as_str().into(), v.as_str().into()]))
            .collect(),
    )
}

/// `test.context` over TCP, served in process: `seen` answers the call's context, `child`
/// returns a `test.context.child` (whose `seen` does the same), `seenStream` streams it once;
/// each records what it saw. Returns the URL and the server connections made, one per
/// client.
fn context_server(
    rt: &tokio::runtime::Runtime,
    seen: &Seen,
) -> (String, Arc<Mutex<Vec<Connection>>>) {
    let record = |seen: &Seen| {
        let seen = Arc::clone(seen);
        move |ctx: &bunite_rpc::CallContext| {
            let context = ctx.context().to_vec();
            seen.lock().unwrap().push(context.clone());
            as_value(&context)
        }
    };
    let child_def = CapDef::builder("test.context.child")
        .method(MethodDef::call("seen"))
        .build();
    let seen_child = record(seen);
    let child_imp = DynCap::new()
        .call("seen", move |_, ctx| {
            let v = seen_child(&ctx);
            async move { Ok(v) }
        })
        .build();
    let def = CapDef::builder("test.context")
        .method(MethodDef::call("seen"))
        .method(
            MethodDef::call("child").returns(Returns::Cap(CapDefRef::Shared(child_def.clone()))),
        )
        .method(MethodDef::stream("seenStream"))
        .build();
    let (seen_call, seen_child_call, seen_stream) = (record(seen), record(seen), record(seen));
    let imp = DynCap::new()
        .call("seen", move |_, ctx| {
            let v = seen_call(&ctx);
            async move { Ok(v) }
        })
        .call("child", move |_, ctx| {
            seen_child_call(&ctx);
            let cap = ctx.export(child_def.clone(), child_imp.clone());
            async move { Ok(cap) }
        })
        .stream_emitter("seenStream", move |_, ctx, mut emitter| {
            let v = seen_stream(&ctx);
            async move { emitter.send(v).await }
        })
        .build();

    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    let conns = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::clone(&conns);
    rt.spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let conn = Connection::builder()
                .serve(def.clone(), imp.clone())
                .connect(ByteStream::tcp(socket));
            accepted.lock().unwrap().push(conn);
        }
    });
    (url, conns)
}

#[test]
fn context_reaches_the_server_on_every_call_of_the_command() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let seen = Seen::default();
    let (url, conns) = context_server(&rt, &seen);
    let taken = || std::mem::take(&mut *seen.lock().unwrap());

    // Each --then call carries it too; a name given twice keeps its last value, at its
    // first place; a value may hold '='.
    let out = run(&[
        "call",
        &url,
        "test.context",
        "child",
        "--then",
        "seen",
        "--context",
        "trace=abc",
        "--context",
        "user=ada",
        "--context",
        "filter=a=b",
        "--context",
        "trace=xyz",
        "--context",
        "empty=",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "[[\"trace\",\"xyz\"],[\"user\",\"ada\"],[\"filter\",\"a=b\"],[\"empty\",\"\"]]\n"
    );
    let want: Vec<(String, String)> = [
        ("trace", "xyz"),
        ("user", "ada"),
        ("filter", "a=b"),
        ("empty", ""),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    assert_eq!(taken(), [want.clone(), want]);

    let out = run(&[
        "stream",
        &url,
        "test.context",
        "seenStream",
        "--context",
        "k=v",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "[[\"k\",\"v\"]]\n");
    assert_eq!(taken(), [vec![("k".to_owned(), "v".to_owned())]]);

    // Without --context the call has none.
    let out = run(&["call", &url, "test.context", "seen"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "[]\n");
    assert_eq!(taken(), [Vec::<(String, String)>::new()]);

    // Every client closed its connection on the way out, and the server's ends follow.
    let conns = std::mem::take(&mut *conns.lock().unwrap());
    assert_eq!(conns.len(), 3);
    rt.block_on(async {
        for conn in conns {
            tokio::time::timeout(Duration::from_secs(5), conn.closed())
                .await
                .expect("the server's end closes after the client's");
        }
    });
}

#[test]
fn a_malformed_or_oversized_context_fails_with_the_right_exit_code() {
    let s = server(&[], None);
    for bad in ["user", "=ada"] {
        let out = run(&["call", &s.url, "interop.counter", "get", "--context", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("NAME=VALUE"), "{}", stderr(&out));
    }

    // Over the server's bound (a bunite-rpc server's default: 64 KiB): its refusal, exit 1,
    // and a hint that names the option.
    let big = format!("k={}", "v".repeat(70_000));
    let out = run(&["call", &s.url, "interop.counter", "get", "--context", &big]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("max_context_bytes"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("hint: the server refused the --context map"),
        "{}",
        stderr(&out)
    );

    // A call that the context makes larger than the server's maxBytes is refused here,
    // before it is sent: a local failure.
    let small = server(&["--max-bytes", "4KiB"], None);
    let big = format!("k={}", "v".repeat(10_000));
    let out = run(&[
        "call",
        &small.url,
        "interop.counter",
        "get",
        "--context",
        &big,
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exceeds the peer's maxBytes 4096"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_shows_the_params_forms_and_context() {
    for command in ["call", "stream"] {
        let help = stdout(&run(&[command, "--help"]));
        for text in [
            "@FILE",
            "- or @-",
            "'\"@x\"'",
            "--context <NAME=VALUE>",
            "meta.context",
        ] {
            assert!(
                help.contains(text),
                "{text} missing from {command} --help:\n{help}"
            );
        }
    }
}
