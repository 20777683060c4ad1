//! Compile-time behaviour of `#[cap]` (trybuild): what must compile (`ui/pass`, including a
//! hygiene case under `#![no_implicit_prelude]`) and what must fail with a helpful, spanned
//! error (`ui/fail`, the expected messages in the `.stderr` files beside each case).
//!
//! The expected messages are those of a build with the `tls` feature, as the workspace's
//! tests build it (`--all-features`): rustls then brings a second type named `Connection`
//! into the build, so rustc names ours `bunite_rpc::Connection` in its notes, where a build
//! without it trims the path to `Connection`. Without `tls` the test is ignored, with that
//! reason, rather than failing on a path.
//!
//! After a deliberate change of messages, regenerate with
//! `TRYBUILD=overwrite cargo test -p bunite-rpc --all-features --test typed_ui` and review
//! the diff.

#[test]
#[cfg_attr(
    not(feature = "tls"),
    ignore = "the expected messages name types as a build with `tls` does (rustls has a \
              `Connection` too, so rustc does not trim `bunite_rpc::Connection`): run with \
              `--all-features`"
)]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
