//! Helpers shared by the codec's integration tests.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod codec_checks;
pub mod strategies;

use std::path::PathBuf;

use bunite_wire::Value;

/// The directory of the reference codec's vectors: `BUNITE_VECTORS`, else `shared/vectors`
/// beside the repository.
pub fn vectors_dir() -> PathBuf {
    let dir = match std::env::var_os("BUNITE_VECTORS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/vectors"
        )),
    };
    assert!(
        dir.is_dir(),
        "wire vectors not found at {}: set BUNITE_VECTORS to the shared/vectors directory",
        dir.display()
    );
    dir
}

/// How NaNs compare in [`same`].
#[derive(Clone, Copy)]
pub enum Nan {
    /// Any NaN equals any NaN (the vectors' JSON notation cannot say which NaN).
    Any,
    /// Bit for bit: a NaN's payload must survive the round trip too.
    Bits,
}

/// Equality as the wire sees it: an integer decoded from float64 equals the integer (the
/// vectors write `4294967296`, the wire carries `cb 41f0…`); records compare in key order.
pub fn same(a: &Value, b: &Value, nan: Nan) -> bool {
    use Value::*;
    match (a, b) {
        (Float(x), Float(y)) => {
            x.to_bits() == y.to_bits() || (matches!(nan, Nan::Any) && x.is_nan() && y.is_nan())
        }
        (Int(_) | UInt(_) | Float(_), Int(_) | UInt(_) | Float(_)) => {
            a.as_integer().is_some() && a.as_integer() == b.as_integer()
        }
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b, nan)),
        (Record(x), Record(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, a), (kb, b))| ka == kb && same(a, b, nan))
        }
        (Map(x), Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, a), (kb, b))| same(ka, kb, nan) && same(a, b, nan))
        }
        _ => a == b,
    }
}
