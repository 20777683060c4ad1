//! `test.wireShapes`: a cap that echoes one value of each serde shape users write, through
//! its Rust type (decoded, then encoded again), so the web client's tests can check that the
//! TypeScript `typegen` writes for each shape is what the wire carries, both ways
//! (`js/test/wire_shapes.test.ts` against the generated `js/test/wire_shapes.gen.ts`;
//! docs/RELIABILITY.md, "TypeScript bindings against the wire"). `interop-server
//! --wire-shapes` serves it beside the interop caps; it is not part of INTEROP.md.

use std::collections::{BTreeMap, HashMap};

use bunite_rpc::serde::{Deserialize, Serialize};
use bunite_rpc::wire::serde_bytes::ByteBuf;
use bunite_rpc::{cap, Blob, Status};
use ts_rs::TS;

/// `rename_all`, `Option` fields in each spelling, `char`, `f32`, wide integers.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde", rename_all = "camelCase")]
pub struct Fields {
    /// A renamed field.
    pub first_name: String,
    /// `Option` as ts-rs writes it by default (`T | null`).
    pub plain_opt: Option<i32>,
    /// `Option` left out when `None`, optional in TypeScript.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub skipped_opt: Option<i32>,
    /// Optional in TypeScript, but sent as undefined when `None`.
    #[ts(optional)]
    pub optional_only: Option<i32>,
    /// Two levels of `Option`.
    pub double_opt: Option<Option<i32>>,
    /// One character.
    pub letter: char,
    /// A 32-bit float.
    pub single: f32,
    /// A 64-bit unsigned integer.
    pub big: u64,
    /// A 64-bit signed integer.
    pub neg: i64,
}

/// Externally tagged (serde's default).
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub enum External {
    /// A unit variant.
    Unit,
    /// A newtype variant.
    New(i32),
    /// A tuple variant.
    Pair(i32, String),
    /// A struct variant.
    Named {
        /// A field.
        x: i32,
    },
}

/// Internally tagged.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde", tag = "type")]
pub enum Internal {
    /// A unit variant.
    Unit,
    /// A struct variant.
    Named {
        /// A field.
        x: i32,
    },
}

/// Adjacently tagged.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde", tag = "t", content = "c")]
pub enum Adjacent {
    /// A unit variant.
    Unit,
    /// A newtype variant.
    New(i32),
}

/// Untagged.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde", untagged)]
pub enum Untagged {
    /// A number.
    Num(i32),
    /// A string.
    Text(String),
    /// A unit variant.
    Nothing,
}

/// A newtype struct.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Meters(pub f64);

/// A tuple struct.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Point(pub i32, pub i32);

/// A unit struct.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Marker;

/// Tuples, unit values and unit structs inside a struct.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Nested {
    /// A tuple.
    pub pair: (i32, String),
    /// A newtype struct.
    pub meters: Meters,
    /// A tuple struct.
    pub point: Point,
    /// A unit struct.
    pub marker: Marker,
    /// `()` as a field.
    pub unit: (),
    /// A list of `Option`s.
    pub holes: Vec<Option<i32>>,
}

/// Maps.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Maps {
    /// String keys.
    pub by_name: HashMap<String, i32>,
    /// Integer keys.
    pub by_id: BTreeMap<u32, String>,
}

/// Bytes in each spelling.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Bytes {
    /// A plain `Vec<u8>` (a sequence to serde).
    pub list: Vec<u8>,
    /// `serde_bytes` (ts-rs refuses a bare `ByteBuf`, or `#[serde(with)]`, without a
    /// TypeScript type: those fail to compile).
    #[ts(type = "Uint8Array")]
    pub typed_buf: ByteBuf,
    /// A blob.
    pub blob: Blob,
}

/// The inner part of [`Flat`].
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Inner {
    /// A field of the flattened struct.
    pub b: i32,
    /// An optional one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub c: Option<i32>,
}

/// `#[serde(flatten)]`.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Flat {
    /// A field of its own.
    pub a: i32,
    /// Flattened in.
    #[serde(flatten)]
    pub inner: Inner,
}

/// `#[serde(default)]` on the struct: every field may be left out by the sender.
#[derive(Debug, Clone, Default, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde", default)]
pub struct Defaults {
    /// A number.
    pub n: i32,
    /// A string.
    pub s: String,
}

/// Each method decodes its args as the Rust type and sends them back encoded from it.
#[cap(name = "test.wireShapes")]
pub trait WireShapes {
    /// Structs, `Option`s and scalars.
    async fn fields(&self, v: Fields) -> Result<Fields, Status>;
    /// Externally tagged enums.
    async fn external(&self, v: Vec<External>) -> Result<Vec<External>, Status>;
    /// Internally tagged enums.
    async fn internal(&self, v: Vec<Internal>) -> Result<Vec<Internal>, Status>;
    /// Adjacently tagged enums.
    async fn adjacent(&self, v: Vec<Adjacent>) -> Result<Vec<Adjacent>, Status>;
    /// Untagged enums.
    async fn untagged(&self, v: Vec<Untagged>) -> Result<Vec<Untagged>, Status>;
    /// Tuples, newtypes, unit values.
    async fn nested(&self, v: Nested) -> Result<Nested, Status>;
    /// Maps.
    async fn maps(&self, v: Maps) -> Result<Maps, Status>;
    /// Bytes.
    async fn bytes(&self, v: Bytes) -> Result<Bytes, Status>;
    /// Flattened structs.
    async fn flat(&self, v: Flat) -> Result<Flat, Status>;
    /// A struct with defaults.
    async fn defaults(&self, v: Defaults) -> Result<Defaults, Status>;
    /// An `Option` result: `Some(v)` when `v` is not negative.
    async fn maybe(&self, v: i32) -> Result<Option<i32>, Status>;
    /// A `u64` from its decimal text (numbers past 2^53 cannot travel as JS numbers).
    async fn wide(&self, v: String) -> Result<u64, Status>;
    /// An `i64` from its decimal text.
    async fn wide_neg(&self, v: String) -> Result<i64, Status>;
}

/// The server side: every method hands its args back.
pub struct Shapes;

fn parse<T: std::str::FromStr>(v: &str) -> Result<T, Status> {
    v.parse()
        .map_err(|_| Status::invalid_argument(format!("not an integer: {v:?}")))
}

impl WireShapes for Shapes {
    async fn fields(&self, v: Fields) -> Result<Fields, Status> {
        Ok(v)
    }
    async fn external(&self, v: Vec<External>) -> Result<Vec<External>, Status> {
        Ok(v)
    }
    async fn internal(&self, v: Vec<Internal>) -> Result<Vec<Internal>, Status> {
        Ok(v)
    }
    async fn adjacent(&self, v: Vec<Adjacent>) -> Result<Vec<Adjacent>, Status> {
        Ok(v)
    }
    async fn untagged(&self, v: Vec<Untagged>) -> Result<Vec<Untagged>, Status> {
        Ok(v)
    }
    async fn nested(&self, v: Nested) -> Result<Nested, Status> {
        Ok(v)
    }
    async fn maps(&self, v: Maps) -> Result<Maps, Status> {
        Ok(v)
    }
    async fn bytes(&self, v: Bytes) -> Result<Bytes, Status> {
        Ok(v)
    }
    async fn flat(&self, v: Flat) -> Result<Flat, Status> {
        Ok(v)
    }
    async fn defaults(&self, v: Defaults) -> Result<Defaults, Status> {
        Ok(v)
    }
    async fn maybe(&self, v: i32) -> Result<Option<i32>, Status> {
        Ok((v >= 0).then_some(v))
    }
    async fn wide(&self, v: String) -> Result<u64, Status> {
        parse(&v)
    }
    async fn wide_neg(&self, v: String) -> Result<i64, Status> {
        parse(&v)
    }
}
