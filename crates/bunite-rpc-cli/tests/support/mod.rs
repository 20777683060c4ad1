//! What the tests of `call` and `stream` share: an `interop-server` child killed on drop,
//! and the binary run with its output captured.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_bunite-rpc");

/// A running `interop-server`, killed on drop, with its WebSocket URL.
pub struct Server {
    pub child: Child,
    pub url: String,
    _dir: Option<TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn server(extra: &[&str], dir: Option<TempDir>) -> Server {
    let mut child = Command::new(BIN)
        .arg("interop-server")
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn interop-server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines.next().expect("a listening line").expect("utf-8");
    let url = line
        .strip_prefix("listening ")
        .expect("`listening URL`")
        .to_owned();
    Server {
        child,
        url,
        _dir: dir,
    }
}

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run bunite-rpc")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the binary with `input` on its stdin.
pub fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bunite-rpc");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // Written from a thread: the child may answer (and fill its stdout pipe) before it has
    // read all of a large input, or not read it at all.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for bunite-rpc");
    writer.join().expect("stdin writer");
    out
}
