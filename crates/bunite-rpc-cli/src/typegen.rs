//! `typegen`: the TypeScript definitions of the interop caps (which the demo serves too), from
//! their `#[cap]` traits, for the web client in `js/`.
//!
//! The checked-in `js/src/interop.gen.ts` is this output with `--import ./index.js` (the
//! client package imports its own types by path); the test below fails when a trait changes
//! and the file was not regenerated.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use bunite_rpc::typescript::Bindings;

use crate::interop_caps::*;
use crate::wire_shapes::WireShapesCap;

/// The command that regenerates the checked-in file, from the repository root.
pub const REGENERATE: &str =
    "cargo run -p bunite-rpc-cli -- typegen --import ./index.js --out js/src/interop.gen.ts";

/// The bindings of every interop cap, importing the client's types from `import`.
pub fn interop_bindings(import: &str) -> Bindings {
    Bindings::new()
        .import_from(import)
        .header(format!("Regenerate with `{REGENERATE}`."))
        .cap::<InteropCounterCap>()
        .cap::<InteropChildCap>()
        .cap::<InteropVersionedCap>()
        .cap::<InteropEphemeralCap>()
        .cap::<InteropSecretCap>()
        .cap::<InteropPeerCap>()
}

/// The command that regenerates the test cap's bindings, from the repository root.
pub const REGENERATE_SHAPES: &str =
    "cargo run -p bunite-rpc-cli -- typegen --shapes --import ../src/index.js --out js/test/wire_shapes.gen.ts";

/// The bindings of the test cap `test.wireShapes` (one echo per serde shape).
pub fn shapes_bindings(import: &str) -> Bindings {
    Bindings::new()
        .import_from(import)
        .header(format!("Regenerate with `{REGENERATE_SHAPES}`."))
        .cap::<WireShapesCap>()
}

/// Writes the bindings (the interop caps', or with `shapes` the test cap's) to `out` (or
/// stdout).
pub fn run(out: Option<&Path>, import: &str, shapes: bool) -> Result<()> {
    let bindings = if shapes {
        shapes_bindings(import)
    } else {
        interop_bindings(import)
    };
    let text = bindings.render()?;
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_interop_bindings_are_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../js/src/interop.gen.ts");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        let fresh = interop_bindings("./index.js").render().unwrap();
        assert!(
            checked_in == fresh,
            "{} is not what the #[cap] traits generate now: run `{REGENERATE}`",
            path.display()
        );
    }

    #[test]
    fn the_checked_in_shapes_bindings_are_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../js/test/wire_shapes.gen.ts");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        let fresh = shapes_bindings("../src/index.js").render().unwrap();
        assert!(
            checked_in == fresh,
            "{} is not what the test cap generates now: run `{REGENERATE_SHAPES}`",
            path.display()
        );
    }

    #[test]
    fn the_bindings_say_what_the_traits_say() {
        let ts = interop_bindings("bunite-rpc").render().unwrap();
        for needle in [
            "import type { CallOptions, CapDef, Client, StreamOptions, ValueStream } from \"bunite-rpc\";",
            "export type Delta = { \n/**\n * How much to add (default 1).\n */\ndelta?: number, };",
            "increment(args?: Delta | null, options?: CallOptions): Promise<Count>;",
            "makeChild(args: Named, options?: CallOptions): Promise<Client<InteropChild>>;",
            "children(args: Names, options?: CallOptions): Promise<Client<InteropChild>[]>;",
            "childMap(args: Names, options?: CallOptions): Promise<Record<string, Client<InteropChild>>>;",
            "ticks(args: N, options?: StreamOptions): ValueStream<Tick>;",
            "fail(args: FailParams, options?: CallOptions): Promise<void>;",
            "echo(args: unknown, options?: CallOptions): Promise<unknown>;",
            "export type Binary = Uint8Array;",
            "    get: { kind: \"call\", args: \"none\", idempotent: true },",
            "    makeChild: { kind: \"call\", returns: \"cap\", cap: () => InteropChild },",
            "  version: \"2\",",
            "  disposal: \"close\",",
        ] {
            assert!(ts.contains(needle), "{needle:?} missing from:\n{ts}");
        }
    }

    #[test]
    fn a_returned_cap_left_out_is_an_error() {
        let err = Bindings::new()
            .cap::<InteropCounterCap>()
            .render()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("returns the cap \"interop.child\""),
            "{err}"
        );
    }
}
