//! `impl ts_rs::TS` for [`Value`] and [`Blob`] (feature `typescript`): a value of any shape
//! is TypeScript's `unknown` and a `Blob` a `Uint8Array`, so a cap method taking or
//! returning them gets those types in the bindings `bunite-rpc`'s `typescript` feature
//! writes. (The impls must live beside the types: neither the trait nor the types belong to
//! `bunite-rpc`.)

use ts_rs::{Config, TS};

use crate::{Blob, Value};

/// Binary data is a `Uint8Array` in the web client.
impl TS for Blob {
    type WithoutGenerics = Self;
    type OptionInnerType = Self;

    fn name(_: &Config) -> String {
        "Uint8Array".to_owned()
    }

    fn inline(cfg: &Config) -> String {
        Self::name(cfg)
    }
}

impl TS for Value {
    type WithoutGenerics = Self;
    type OptionInnerType = Self;

    fn name(_: &Config) -> String {
        "unknown".to_owned()
    }

    fn inline(cfg: &Config) -> String {
        Self::name(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_unknown() {
        let cfg = Config::new();
        assert_eq!(Value::name(&cfg), "unknown");
        assert_eq!(<Vec<Value>>::name(&cfg), "Array<unknown>");
        assert_eq!(Value::output_path(), None);
    }

    #[test]
    fn a_blob_is_a_uint8_array() {
        let cfg = Config::new();
        assert_eq!(Blob::name(&cfg), "Uint8Array");
        assert_eq!(<Option<Blob>>::name(&cfg), "Uint8Array | null");
        assert_eq!(Blob::output_path(), None);
    }
}
