//! The `typescript` feature end to end: a cap's TypeScript definitions type-check a call
//! site with `tsc --strict`, and after the cap's argument type changes, the regenerated
//! definitions make the same call site fail to compile.
//!
//! It needs the web client's TypeScript (`js/node_modules`, from `npm ci` in `js/`). Without
//! it the tsc part is skipped with a note, unless `BUNITE_REQUIRE_TSC=1` (CI sets it), which
//! makes a missing tsc a failure.
#![cfg(feature = "typescript")]

use std::path::{Path, PathBuf};
use std::process::Command;

use bunite_rpc::typescript::Bindings;

mod v1 {
    use bunite_rpc::{cap, Status};

    /// What `greet` returns.
    #[derive(serde::Serialize, serde::Deserialize, ts_rs::TS)]
    pub struct Greeting {
        pub text: String,
    }

    /// A greeter whose argument is a name.
    #[cap(name = "demo.Greeter", version = "1")]
    pub trait Greeter {
        /// Greets someone.
        async fn greet(&self, name: String) -> Result<Greeting, Status>;
        /// Stream of greetings.
        #[cap(stream)]
        fn many(
            &self,
            n: u32,
        ) -> impl futures::Stream<Item = Result<Greeting, Status>> + Send + 'static;
    }
}

mod v2 {
    use bunite_rpc::{cap, Status};

    pub use super::v1::Greeting;

    /// The same greeter, its argument now a number.
    #[cap(name = "demo.Greeter", version = "2")]
    pub trait Greeter {
        /// Greets someone by number.
        async fn greet(&self, id: u32) -> Result<Greeting, Status>;
        /// Stream of greetings.
        #[cap(stream)]
        fn many(
            &self,
            n: u32,
        ) -> impl futures::Stream<Item = Result<Greeting, Status>> + Send + 'static;
    }
}

mod files {
    use bunite_rpc::{cap, Blob, Status};

    /// A file to store: binary inside a type.
    #[derive(serde::Serialize, serde::Deserialize, ts_rs::TS)]
    pub struct Upload {
        pub name: String,
        pub data: Blob,
    }

    /// Binary in and out.
    #[cap(name = "demo.Files")]
    pub trait Files {
        /// Stores a file, answers its bytes.
        async fn put(&self, upload: Upload) -> Result<Blob, Status>;
    }
}

mod lookup {
    use bunite_rpc::{cap, Status};

    /// `Option` as a method's result, stream item and params.
    #[cap(name = "demo.Lookup")]
    pub trait Lookup {
        /// `None` when there is no such id.
        async fn find(&self, id: u32) -> Result<Option<String>, Status>;
        /// Items that may be missing.
        #[cap(stream)]
        fn scan(
            &self,
            n: u32,
        ) -> impl futures::Stream<Item = Result<Option<u32>, Status>> + Send + 'static;
        /// Params that may be left out.
        async fn count(&self, from: Option<u32>) -> Result<u32, Status>;
    }
}

/// `None` as a whole result arrives as undefined (PROTOCOL §3.1), not null as ts-rs writes
/// `Option`: the result type says so, or `=== null` would miss it. A client may send either
/// for optional params (Rust reads both as `None`).
#[test]
fn an_option_result_is_undefined_and_optional_params_take_null() {
    let ts = Bindings::new().cap::<lookup::LookupCap>().render().unwrap();
    for line in [
        "find(args: number, options?: CallOptions): Promise<string | undefined>;",
        "scan(args: number, options?: StreamOptions): ValueStream<number | undefined>;",
        "count(args?: number | null, options?: CallOptions): Promise<number>;",
    ] {
        assert!(ts.contains(line), "{line:?} missing from:\n{ts}");
    }
}

#[test]
fn a_blob_is_a_uint8_array_alone_and_inside_a_type() {
    let ts = Bindings::new().cap::<files::FilesCap>().render().unwrap();
    assert!(
        ts.contains("put(args: Upload, options?: CallOptions): Promise<Uint8Array>;"),
        "{ts}"
    );
    assert!(
        ts.contains("export type Upload = { name: string, data: Uint8Array, };"),
        "{ts}"
    );
}

/// A call site written against v1.
const CALL_SITE: &str = r#"
import type { Connection } from "CLIENT";
import { Greeter } from "./greeter.gen.js";

export async function use(conn: Connection): Promise<string> {
  const greeter = await conn.bootstrap(Greeter);
  for await (const g of greeter.many(2)) void g.text;
  return (await greeter.greet("ada")).text;
}
"#;

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../js")
}

/// Runs `tsc --noEmit --strict` on the call site beside `generated`; returns (passed, output).
fn tsc(dir: &Path, generated: &str) -> Option<(bool, String)> {
    let tsc = js_dir().join("node_modules/typescript/bin/tsc");
    if !tsc.is_file() {
        assert!(
            std::env::var("BUNITE_REQUIRE_TSC").as_deref() != Ok("1"),
            "{} is missing: run `npm ci` in js/",
            tsc.display()
        );
        eprintln!(
            "skipping the tsc part: no {} (npm ci in js/)",
            tsc.display()
        );
        return None;
    }
    std::fs::create_dir_all(dir).unwrap();
    let client = js_dir().join("src/index.js");
    std::fs::write(dir.join("greeter.gen.ts"), generated).unwrap();
    std::fs::write(
        dir.join("use.ts"),
        CALL_SITE.replace("CLIENT", &client.to_string_lossy()),
    )
    .unwrap();
    let out = Command::new("node")
        .arg(&tsc)
        .args([
            "--noEmit",
            "--strict",
            "--skipLibCheck",
            "--target",
            "es2022",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "--lib",
            "es2022,dom,dom.iterable",
            "--types",
            "node",
            "--typeRoots",
        ])
        .arg(js_dir().join("node_modules/@types"))
        .arg(dir.join("use.ts"))
        .output()
        .expect("node runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), text))
}

#[test]
fn definitions_follow_the_trait_and_a_changed_argument_breaks_the_call_site() {
    let before = Bindings::new()
        .import_from(js_dir().join("src/index.js").to_string_lossy())
        .cap::<v1::GreeterCap>()
        .render()
        .unwrap();
    let after = Bindings::new()
        .import_from(js_dir().join("src/index.js").to_string_lossy())
        .cap::<v2::GreeterCap>()
        .render()
        .unwrap();
    assert!(before.contains("greet(args: string, options?: CallOptions): Promise<Greeting>;"));
    assert!(after.contains("greet(args: number, options?: CallOptions): Promise<Greeting>;"));
    assert!(after.contains("  version: \"2\","));
    assert!(before.contains("many(args: number, options?: StreamOptions): ValueStream<Greeting>;"));

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("typescript-change");
    let Some((ok, out)) = tsc(&dir.join("v1"), &before) else {
        return;
    };
    assert!(ok, "the call site must compile against v1:\n{out}");
    let (ok, out) = tsc(&dir.join("v2"), &after).unwrap();
    assert!(!ok, "the call site must not compile against v2");
    assert!(
        out.contains("use.ts(8,") && out.contains("not assignable to parameter of type 'number'"),
        "tsc should point at the greet call:\n{out}"
    );
}
