//! TypeScript definitions of `#[cap]` traits (feature `typescript`), for the web client in
//! `js/` (its README shows them in use).
//!
//! [`Bindings`] collects caps and writes one `.ts` file: for each cap an `interface` of its
//! client's methods (a wrong method name or argument type is then a `tsc` error) and a
//! `const` definition of the same name that the client bootstraps with; before them, an
//! exported `type` for every Rust type the methods use.
//!
//! ```
//! use bunite_rpc::typescript::Bindings;
//! use bunite_rpc::{cap, Status};
//!
//! /// What a greeting says.
//! #[derive(serde::Serialize, serde::Deserialize, ts_rs::TS)]
//! pub struct Greeting {
//!     pub text: String,
//! }
//!
//! /// Says hello.
//! #[cap(name = "demo.Greeter", version = "1")]
//! pub trait Greeter {
//!     /// Greets `name`.
//!     async fn greet(&self, name: String) -> Result<Greeting, Status>;
//! }
//!
//! let ts = Bindings::new().cap::<GreeterCap>().render().unwrap();
//! assert!(ts.contains("export type Greeting = { text: string, };"));
//! assert!(ts.contains("greet(args: string, options?: CallOptions): Promise<Greeting>;"));
//! assert!(ts.contains("export const Greeter: CapDef<Greeter> = {"));
//! ```
//!
//! # Types
//!
//! The TypeScript form of each Rust type comes from [ts-rs](https://docs.rs/ts-rs): derive
//! `ts_rs::TS` beside `Serialize`/`Deserialize` (ts-rs reads serde's `rename`,
//! `rename_all`, `tag`, `flatten`, …). The crate that derives it depends on `ts-rs = "12"`,
//! the major version this crate uses (another one's `TS` is another trait, which `Bindings`
//! does not accept), and on `bunite-rpc` with `features = ["typescript"]`. ts-rs rather
//! than specta because it is a stable, semver-versioned release line with a small API (a
//! type's name, declaration and dependencies), while specta 2 is still a release candidate
//! whose API changes between candidates. A cap whose types do not implement `TS` still
//! compiles; asking `Bindings` for it fails to compile, naming the type.
//!
//! What the wire does to types, and so what to write:
//!
//! - Integers are JavaScript numbers: `i64`/`u64` are written `number`, not ts-rs's default
//!   `bigint` (PROTOCOL §3.1: the TypeScript peer reads every integer up to 2^53 as a number).
//!   Beyond ±2^53 it reads a `bigint`, and a `number` the client sent above 2^53 comes back
//!   as one: for a field that may get there write `#[ts(type = "number | bigint")]` (or send
//!   it as a string).
//! - `()` results are `void` (undefined on the wire).
//! - `None` goes out as undefined, which ts-rs cannot say: it writes `Option<T>` as
//!   `T | null`. A whole result or stream item of `Option<T>` is written `T | undefined`
//!   here (optional params `args?: T | null`: Rust reads null and undefined as `None`).
//!   Inside a type, give optional fields `#[serde(skip_serializing_if = "Option::is_none")]`
//!   and `#[ts(optional)]` (`field?: T`), as the interop caps do. Elsewhere inside a type
//!   (`Vec<Option<T>>`, a field of type `()`, a unit struct, the unit variant of an untagged
//!   enum) ts-rs writes `null` where undefined arrives: write the type
//!   (`#[ts(type = "Array<number | undefined>")]`), or test with `== null`, never `=== null`.
//! - A map whose keys are not strings (`BTreeMap<u32, T>`) is a msgpack map, which arrives
//!   as a JavaScript `Map`; ts-rs writes an object (`{ [key in number]: T }`). Write
//!   `#[ts(type = "Map<number, T>")]` on the field; Rust accepts a `Map` or an object with
//!   numeric keys from the client. String-keyed maps are objects, as written.
//! - Binary arrives as a `Uint8Array`: [`Blob`](crate::Blob) is one already; for
//!   `serde_bytes::ByteBuf` write `#[ts(type = "Uint8Array")]` on the field, or a newtype
//!   around it.
//! - `bunite_rpc::Value` is `unknown`.
//!
//! A params argument spelled `Option<P>` makes the argument optional in TypeScript; caps a
//! method returns are the returned cap's client type (`Client<Child>`, arrays and records of
//! them), and every returned cap must be in the same file (the `Bindings` fails otherwise).

use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use ts_rs::{Config, TypeVisitor, TS};

use crate::describe::{CapInfo, DescribeCap, DescribeType, Describer, MethodInfo, Params, Yields};

/// How ts-rs ends the name of an `Option`.
const OPTION_NULL: &str = " | null";
/// How the bindings end the name of an `Option` result.
const OPTION_UNDEFINED: &str = " | undefined";

/// The module the generated file imports the client's types from, by default.
pub const DEFAULT_IMPORT: &str = "bunite-rpc";

/// Collects caps and renders one TypeScript file of their definitions.
pub struct Bindings {
    cfg: Config,
    import_from: String,
    header: String,
    caps: Vec<CapOut>,
    /// TypeScript declarations by name.
    types: BTreeMap<String, String>,
    seen: BTreeSet<TypeId>,
    problems: Vec<String>,
}

impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bindings")
            .field("import_from", &self.import_from)
            .field("caps", &self.caps.len())
            .field("types", &self.types.len())
            .finish_non_exhaustive()
    }
}

struct CapOut {
    info: CapInfo,
    methods: Vec<(MethodInfo, Params<String>, Yields<String>)>,
}

/// Why [`Bindings::render`] could not write a consistent file.
#[derive(Debug, thiserror::Error)]
#[error("TypeScript bindings: {}", .problems.join("; "))]
pub struct BindingsError {
    /// Every problem found.
    pub problems: Vec<String>,
}

impl Default for Bindings {
    fn default() -> Self {
        Self::new()
    }
}

impl Bindings {
    /// No caps yet; imports from [`DEFAULT_IMPORT`].
    pub fn new() -> Self {
        Bindings {
            cfg: Config::new().with_large_int("number"),
            import_from: DEFAULT_IMPORT.to_owned(),
            header: String::new(),
            caps: Vec::new(),
            types: BTreeMap::new(),
            seen: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// Imports the client's types (`CapDef`, `Client`, …) from `module` instead.
    pub fn import_from(mut self, module: impl Into<String>) -> Self {
        self.import_from = module.into();
        self
    }

    /// A line for the file's opening comment (e.g. the command that regenerates it); text
    /// of several lines gives a comment line each.
    pub fn header(mut self, line: impl Into<String>) -> Self {
        self.header = line.into();
        self
    }

    /// Adds the cap `C` (and the types its methods use). Caps it returns must be added too.
    pub fn cap<C: DescribeCap<Self>>(mut self) -> Self {
        C::describe(&mut self);
        self
    }

    /// The file's text.
    pub fn render(&self) -> Result<String, BindingsError> {
        let mut problems = self.problems.clone();
        let ifaces: BTreeMap<&str, &str> = self
            .caps
            .iter()
            .map(|c| (c.info.name, c.info.rust_name))
            .collect();
        for (i, c) in self.caps.iter().enumerate() {
            let dup = self.caps[..i]
                .iter()
                .find(|o| o.info.name == c.info.name || o.info.rust_name == c.info.rust_name);
            if let Some(o) = dup {
                problems.push(format!(
                    "caps {:?} ({}) and {:?} ({}) share a name",
                    o.info.name, o.info.rust_name, c.info.name, c.info.rust_name
                ));
            }
            if self.types.contains_key(c.info.rust_name) {
                problems.push(format!(
                    "the cap {} and a type share the TypeScript name {}",
                    c.info.name, c.info.rust_name
                ));
            }
            for (m, _, y) in &c.methods {
                if let Yields::Cap(n) | Yields::CapArray(n) | Yields::CapRecord(n) = y {
                    if !ifaces.contains_key(n.as_str()) {
                        problems.push(format!(
                            "{}.{} returns the cap {n:?}, which is not in these bindings: add it",
                            c.info.name, m.name
                        ));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(BindingsError { problems });
        }
        Ok(self.text(&ifaces))
    }

    /// Renders and writes the file at `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let text = self.render().map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    fn text(&self, ifaces: &BTreeMap<&str, &str>) -> String {
        let mut out = String::new();
        out.push_str(
            "// TypeScript definitions of bunite caps, generated from their Rust #[cap] traits\n\
             // (bunite-rpc's `typescript` feature; types through ts-rs). Do not edit: change the\n\
             // traits and regenerate.\n",
        );
        // Each line its own comment: a line break in the header (for JavaScript also `\r`,
        // U+2028 and U+2029) would end the comment and make the rest of it code.
        if !self.header.is_empty() {
            for line in self.header.split(['\n', '\r', '\u{2028}', '\u{2029}']) {
                let _ = writeln!(out, "// {line}");
            }
        }
        let imports = self.imports();
        if !imports.is_empty() {
            let _ = writeln!(
                out,
                "\nimport type {{ {} }} from {};",
                imports.join(", "),
                json_str(&self.import_from)
            );
        }
        for decl in self.types.values() {
            out.push('\n');
            out.push_str(decl);
        }
        for c in &self.caps {
            out.push('\n');
            render_cap(&mut out, c, ifaces);
        }
        out
    }

    /// The client types the file uses, sorted.
    fn imports(&self) -> Vec<&'static str> {
        let mut used = BTreeSet::new();
        for c in &self.caps {
            used.insert("CapDef");
            for (_, _, y) in &c.methods {
                match y {
                    Yields::Stream(_) => {
                        used.insert("StreamOptions");
                        used.insert("ValueStream");
                    }
                    Yields::Value(_) => {
                        used.insert("CallOptions");
                    }
                    _ => {
                        used.insert("CallOptions");
                        used.insert("Client");
                    }
                }
            }
        }
        used.into_iter().collect()
    }

    /// Adds the declaration of `T` (if it has one) and of everything it depends on.
    fn collect<T: TS + 'static + ?Sized>(&mut self) {
        if !self.seen.insert(TypeId::of::<T>()) {
            return;
        }
        if T::output_path().is_some() {
            let name = T::ident(&self.cfg);
            let mut decl = T::docs().unwrap_or_default();
            decl.push_str("export ");
            decl.push_str(&T::decl(&self.cfg));
            decl.push('\n');
            match self.types.get(&name) {
                // One generic type seen with other arguments: the same declaration.
                Some(existing) if *existing == decl => {}
                Some(_) => self.problems.push(format!(
                    "two Rust types are named {name} in TypeScript: rename one with #[ts(rename = \"...\")]"
                )),
                None => {
                    self.types.insert(name, decl);
                }
            }
        }
        T::visit_dependencies(&mut Collect(self));
        T::visit_generics(&mut Collect(self));
    }
}

struct Collect<'a>(&'a mut Bindings);

impl TypeVisitor for Collect<'_> {
    fn visit<T: TS + 'static + ?Sized>(&mut self) {
        self.0.collect::<T>();
    }
}

impl Describer for Bindings {
    type Type = String;

    fn cap(&mut self, info: CapInfo) {
        self.caps.push(CapOut {
            info,
            methods: Vec::new(),
        });
    }

    fn method(&mut self, method: MethodInfo, params: Params<String>, yields: Yields<String>) {
        match self.caps.last_mut() {
            Some(c) => c.methods.push((method, params, yields)),
            None => self
                .problems
                .push(format!("method {} described before its cap", method.name)),
        }
    }
}

impl<T: TS + 'static + ?Sized> DescribeType<T> for Bindings {
    fn describe_type(&mut self) -> String {
        if TypeId::of::<T>() == TypeId::of::<()>() {
            return "void".to_owned();
        }
        self.collect::<T>();
        let name = T::name(&self.cfg);
        // ts-rs writes `Option<X>` as `X | null`, but `None` goes out as undefined: a whole
        // result (or stream item) of `None` arrives as undefined. Params spelled `Option`
        // take null as well (`render_cap`).
        match name.strip_suffix(OPTION_NULL) {
            Some(inner) if T::IS_OPTION => format!("{inner}{OPTION_UNDEFINED}"),
            _ => name,
        }
    }
}

fn render_cap(out: &mut String, c: &CapOut, ifaces: &BTreeMap<&str, &str>) {
    let iface = c.info.rust_name;
    let client = |n: &str| format!("Client<{}>", ifaces.get(n).copied().unwrap_or("never"));
    let mut about = c.info.docs.to_owned();
    if !about.is_empty() {
        about.push_str("\n\n");
    }
    let _ = write!(about, "The cap `{}`", c.info.name);
    if let Some(v) = c.info.version {
        let _ = write!(about, " version `{v}`");
    }
    about.push('.');
    jsdoc(out, "", &about);
    let _ = writeln!(out, "export interface {iface} {{");
    for (m, params, yields) in &c.methods {
        let mut docs = m.docs.to_owned();
        let mut notes = Vec::new();
        if m.idempotent {
            notes.push("idempotent");
        }
        if m.disposal {
            notes.push("the disposal method: `dispose(client)` calls it, then releases");
        }
        if !notes.is_empty() {
            if !docs.is_empty() {
                docs.push_str("\n\n");
            }
            let _ = write!(docs, "({})", notes.join("; "));
        }
        jsdoc(out, "  ", &docs);
        let stream = matches!(yields, Yields::Stream(_));
        let opts = if stream {
            "StreamOptions"
        } else {
            "CallOptions"
        };
        let args = match params {
            Params::None => String::new(),
            Params::Required(t) => format!("args: {t}, "),
            // The Rust side reads null as `None` too.
            Params::Optional(t) => {
                let inner = t.strip_suffix(OPTION_UNDEFINED).unwrap_or(t);
                format!("args?: {inner}{OPTION_NULL}, ")
            }
        };
        let ret = match yields {
            Yields::Value(t) => format!("Promise<{t}>"),
            Yields::Cap(n) => format!("Promise<{}>", client(n)),
            Yields::CapArray(n) => format!("Promise<{}[]>", client(n)),
            Yields::CapRecord(n) => format!("Promise<Record<string, {}>>", client(n)),
            Yields::Stream(t) => format!("ValueStream<{t}>"),
        };
        let _ = writeln!(
            out,
            "  {}({args}options?: {opts}): {ret};",
            property(m.name)
        );
    }
    out.push_str("}\n\n");
    let _ = writeln!(out, "export const {iface}: CapDef<{iface}> = {{");
    let _ = writeln!(out, "  name: {},", json_str(c.info.name));
    if let Some(v) = c.info.version {
        let _ = writeln!(out, "  version: {},", json_str(v));
    }
    if let Some((d, _, _)) = c.methods.iter().find(|(m, _, _)| m.disposal) {
        let _ = writeln!(out, "  disposal: {},", json_str(d.name));
    }
    out.push_str("  methods: {\n");
    for (m, params, yields) in &c.methods {
        let mut fields = Vec::new();
        match yields {
            Yields::Stream(_) => {
                fields.push(r#"kind: "stream""#.to_owned());
                if let Some(credit) = m.initial_credit {
                    fields.push(format!("initialCredit: {credit}"));
                }
            }
            _ => fields.push(r#"kind: "call""#.to_owned()),
        }
        // The client tells `m(options)` from `m(args, options)` by this.
        if matches!(params, Params::None) {
            fields.push(r#"args: "none""#.to_owned());
        }
        if m.idempotent {
            fields.push("idempotent: true".to_owned());
        }
        let returned = match yields {
            Yields::Cap(n) => Some(("cap", n)),
            Yields::CapArray(n) => Some(("array", n)),
            Yields::CapRecord(n) => Some(("record", n)),
            _ => None,
        };
        if let Some((shape, n)) = returned {
            let target = ifaces.get(n.as_str()).copied().unwrap_or("never");
            fields.push(format!(r#"returns: "{shape}", cap: () => {target}"#));
        }
        let _ = writeln!(
            out,
            "    {}: {{ {} }},",
            property(m.name),
            fields.join(", ")
        );
    }
    out.push_str("  },\n};\n");
}

/// A `/** … */` comment, if there is text.
fn jsdoc(out: &mut String, indent: &str, text: &str) {
    if text.trim().is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}/**");
    for line in text.replace("*/", "*\\/").lines() {
        if line.is_empty() {
            let _ = writeln!(out, "{indent} *");
        } else {
            let _ = writeln!(out, "{indent} * {line}");
        }
    }
    let _ = writeln!(out, "{indent} */");
}

/// A property name: bare when it is an identifier, quoted otherwise.
fn property(name: &str) -> String {
    let mut chars = name.chars();
    let ident = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        name.to_owned()
    } else {
        json_str(name)
    }
}

/// A TypeScript string literal.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_when_they_are_not_identifiers() {
        assert_eq!(property("makeChild"), "makeChild");
        assert_eq!(property("$x_1"), "$x_1");
        assert_eq!(property("with-dash"), "\"with-dash\"");
        assert_eq!(property("1st"), "\"1st\"");
        assert_eq!(json_str("a\"b\\\n"), "\"a\\\"b\\\\\\n\"");
    }

    #[test]
    fn a_header_of_several_lines_stays_a_comment() {
        let text = Bindings::new()
            .header("one\nexport const a = 1;\rexport const b = 2;\u{2028}c")
            .render()
            .unwrap();
        let opening: Vec<&str> = text.lines().skip(3).take(4).collect();
        assert_eq!(
            opening,
            [
                "// one",
                "// export const a = 1;",
                "// export const b = 2;",
                "// c"
            ]
        );
        assert!(
            !text.contains('\r') && !text.contains('\u{2028}'),
            "{text:?}"
        );
    }

    #[test]
    fn comments_cannot_be_closed_early() {
        let mut out = String::new();
        jsdoc(&mut out, "", "a */ b\n\nc");
        assert_eq!(out, "/**\n * a *\\/ b\n *\n * c\n */\n");
    }
}
