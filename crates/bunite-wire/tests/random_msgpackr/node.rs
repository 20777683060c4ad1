//! The msgpackr peer: `js/test/msgpackr_echo.ts` (built to `js/dist/test/`) under node,
//! one process for the whole run, a fresh connection per seed; without node or the built
//! web client, none (`BUNITE_REQUIRE_JS`).

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The length that starts a new connection (the script's `NEW_CONNECTION`).
const NEW_CONNECTION: u32 = u32::MAX;

pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../js")
}

/// How to give the test what it needs.
const HOW: &str =
    "install node 20+ (or set BUNITE_NODE to it), then in js/: `npm ci && npm run build`";

/// The test cannot run without node and the web client built. Without them it is skipped
/// with a note saying so, so that README's `cargo test` passes on a machine with Rust
/// alone, unless `BUNITE_REQUIRE_JS=1` (CI sets it), which makes it a failure.
fn missing(what: &str) -> Option<Peer> {
    assert!(
        std::env::var("BUNITE_REQUIRE_JS").as_deref() != Ok("1"),
        "{what}, and BUNITE_REQUIRE_JS=1: this test runs msgpackr under node; {HOW}"
    );
    // Straight to stderr, not `eprintln!`, which `cargo test` captures for a test that
    // passes: the note is shown.
    let _ = writeln!(
        std::io::stderr(),
        "random_msgpackr: skipped, checking nothing: {what}. It runs msgpackr under node; \
         {HOW}, then run it again (BUNITE_REQUIRE_JS=1 makes this a failure)"
    );
    None
}

impl Peer {
    /// The script under node, or `None` (and a note) where node or the built web client is
    /// missing. A `js/dist` older than the script or `codec.ts` fails: it would check the
    /// code as it was.
    pub fn start() -> Option<Peer> {
        let js = js_dir();
        let script = js.join("dist/test/msgpackr_echo.js");
        if !js.join("node_modules/msgpackr/package.json").is_file() {
            return missing("js/node_modules/msgpackr is missing");
        }
        if !script.is_file() {
            return missing("js/dist/test/msgpackr_echo.js is missing");
        }
        let node = std::env::var_os("BUNITE_NODE").unwrap_or_else(|| "node".into());
        let mut child = match Command::new(&node)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return missing(&format!("cannot run {node:?} ({e})")),
        };
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let peer = Peer {
            child,
            stdin,
            stdout,
        };
        let built = std::fs::metadata(&script).and_then(|m| m.modified()).ok();
        for source in ["test/msgpackr_echo.ts", "src/codec.ts"] {
            let changed = std::fs::metadata(js.join(source))
                .and_then(|m| m.modified())
                .ok();
            assert!(
                changed <= built,
                "js/{source} is newer than js/dist: run `npm run build` in js/"
            );
        }
        Some(peer)
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("open until drop");
        stdin.write_all(bytes).expect("node's msgpackr peer exited");
    }

    /// Forgets the connection: a fresh decoder and encoder, as a new connection has.
    pub fn new_connection(&mut self) {
        self.send(&NEW_CONNECTION.to_be_bytes());
    }

    /// msgpackr decodes `message`: the canonical text of what it decoded and its encoding
    /// of that again. A text starting `!` is msgpackr's error.
    pub fn echo(&mut self, message: &[u8]) -> (String, Vec<u8>) {
        let len = u32::try_from(message.len()).expect("a test message fits u32");
        assert_ne!(len, NEW_CONNECTION);
        self.send(&len.to_be_bytes());
        self.send(message);
        self.stdin.as_mut().expect("open").flush().expect("flush");
        let text = String::from_utf8(self.read_part()).expect("the script writes UTF-8");
        (text, self.read_part())
    }

    fn read_part(&mut self) -> Vec<u8> {
        let mut len = [0; 4];
        self.stdout
            .read_exact(&mut len)
            .expect("node's msgpackr peer exited (its stderr above)");
        let mut part = vec![0; u32::from_be_bytes(len) as usize];
        self.stdout.read_exact(&mut part).expect("a whole answer");
        part
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The script ends when its stdin does.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
