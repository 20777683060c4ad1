//! Serde of arbitrary bytes into nested types: the input is a result's payload, read
//! straight from the bytes and through a `Value`, which must agree (see `codec_checks.rs`).
#![no_main]

#[path = "../../crates/bunite-wire/tests/support/codec_checks.rs"]
mod codec_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    codec_checks::serde_nested(data);
});
