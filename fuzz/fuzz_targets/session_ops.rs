//! Two protocol sessions driven by arbitrary operations (local calls, streams, caps,
//! cancels, serves, handler outcomes, time, closes, hostile frames), with both sessions'
//! invariants checked after every step (the harness is `bunite_rpc::fuzzing::session_ops`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bunite_rpc::fuzzing::session_ops(data);
});
