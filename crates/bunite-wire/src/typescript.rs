//! `impl ts_rs::TS for Value` (feature `typescript`): a value of any shape is TypeScript's
//! `unknown`, so a cap method taking or returning [`Value`] gets that type in the bindings
//! `bunite-rpc`'s `typescript` feature writes. (The impl must live beside `Value`: neither
//! the trait nor the type belongs to `bunite-rpc`.)

use ts_rs::{Config, TS};

use crate::Value;

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
}
