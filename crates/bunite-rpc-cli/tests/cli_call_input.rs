//! What `call` and `stream` send besides the method: params from `@FILE` or stdin (`-`,
//! `@-`), a few MB of them included.

mod support;

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
