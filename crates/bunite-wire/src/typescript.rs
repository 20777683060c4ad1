//! `impl ts_rs::TS` for [`Value`] and [`Blob`] (feature `typescript`): a value of any shape
//! is TypeScript's `unknown` and a `Blob` a `Uint8Array`, so a cap method taking or
//! returning them gets those types in the bindings `bunite-rpc`'s `typescript` feature
//! writes. (The impls must live beside the types: neither the trait nor the types belong to
//! `bunite-rpc`.)

use ts_rs::{Config, TS};

use crate::{Blob, Value};

/// `impl TS` for a type whose TypeScript form is a built-in type (nothing to declare).
macro_rules! builtin {
    ($t:ty, $ts:literal) => {
        impl TS for $t {
            type WithoutGenerics = Self;
            type OptionInnerType = Self;

            fn name(_: &Config) -> String {
                $ts.to_owned()
            }

            fn inline(cfg: &Config) -> String {
                Self::name(cfg)
            }
        }
    };
}

builtin!(Value, "unknown");
builtin!(Blob, "Uint8Array");

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
