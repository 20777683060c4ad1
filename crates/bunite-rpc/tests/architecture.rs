//! The layering the crate promises (lib.rs `# Layout`, issue "One owner per connection"):
//! the session that decides is pure, and no import circle runs through it.
//!
//! - Nothing under `src/session/` imports the async runtime (`tokio`, `futures`) or the
//!   runtime layer above it (connection, clients, contexts, handlers, transports, …).
//! - Every crate module the session imports is a leaf of the same kind: it imports neither
//!   the runtime nor the session, so no path leads from the session back to itself.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Modules of the runtime layer: what awaits, spawns or holds tokio types.
const RUNTIME: &[&str] = &[
    "connection",
    "client",
    "client_stream",
    "context",
    "handler",
    "transport",
    "typed",
    "dynamic",
    "policy",
    "emitter",
    "host_caps",
    "__private",
];

/// External crates of the async runtime.
const ASYNC_CRATES: &[&str] = &["tokio", "tokio_util", "futures"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments (doc comments name modules freely).
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("readable source");
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate modules a file names (`crate::x`), and whether it names an async crate.
fn imports(code: &str) -> (BTreeSet<String>, Vec<&'static str>) {
    let mut crate_mods = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            crate_mods.insert(name);
        }
    }
    let asyncs = ASYNC_CRATES
        .iter()
        .copied()
        .filter(|c| {
            code.match_indices(c).any(|(i, _)| {
                let before = code[..i].chars().last();
                let after = code[i + c.len()..].chars().next();
                !before.is_some_and(|b| b.is_alphanumeric() || b == '_')
                    && after.is_some_and(|a| a == ':')
            })
        })
        .collect();
    (crate_mods, asyncs)
}

#[test]
fn the_session_imports_neither_the_async_runtime_nor_the_layer_above_it() {
    let mut files = Vec::new();
    rust_files(&src().join("session"), &mut files);
    assert!(files.len() >= 8, "the session's files are found");
    let mut used = BTreeSet::new();
    for file in &files {
        let (mods, asyncs) = imports(&code(file));
        assert!(asyncs.is_empty(), "{} imports {asyncs:?}", file.display());
        for m in &mods {
            assert!(
                !RUNTIME.contains(&m.as_str()),
                "{} imports crate::{m}",
                file.display()
            );
        }
        used.extend(mods);
    }
    used.remove("session");
    // What the session builds on: plain data and the codec.
    assert!(
        used.contains("schema") && used.contains("status"),
        "{used:?}"
    );

    // No circle: none of those modules leads back to the runtime or to the session.
    for m in &used {
        let file = src().join(format!("{m}.rs"));
        assert!(file.exists(), "crate::{m} is a file module");
        let (mods, asyncs) = imports(&code(&file));
        assert!(
            asyncs.is_empty(),
            "crate::{m}, used by the session, imports {asyncs:?}"
        );
        for other in &mods {
            assert!(
                !RUNTIME.contains(&other.as_str()) && other != "session",
                "crate::{m}, used by the session, imports crate::{other}"
            );
        }
    }
}

#[test]
fn the_scanner_sees_imports() {
    let (mods, asyncs) = imports("use crate::connection::Shared;\nuse tokio::sync::Notify;");
    assert!(mods.contains("connection"));
    assert_eq!(asyncs, vec!["tokio"]);
    let (_, asyncs) = imports("let my_tokio = 1; let tokio_ish = 2;");
    assert!(asyncs.is_empty());
}
