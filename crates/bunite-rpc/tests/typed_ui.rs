//! Compile-time behaviour of `#[cap]` (trybuild): what must compile (`ui/pass`, including a
//! hygiene case under `#![no_implicit_prelude]`) and what must fail with a helpful, spanned
//! error (`ui/fail`, the expected messages in the `.stderr` files beside each case).
//!
//! After a deliberate change of messages, regenerate with
//! `TRYBUILD=overwrite cargo test -p bunite-rpc --test typed_ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
