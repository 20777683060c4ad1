//! Frame sequences through one stateful decoder: the input is split into messages, each
//! decoded lazily, every payload read three ways that must agree (see `codec_checks.rs`).
#![no_main]

#[path = "../../crates/bunite-wire/tests/support/codec_checks.rs"]
mod codec_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    codec_checks::frame_sequence(data);
});
