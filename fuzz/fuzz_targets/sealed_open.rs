//! The sealed pipe's opening side against arbitrary operations: raw messages, sealed
//! messages with chosen IVs, replays, bit flips and reflections (the harness and its model
//! are `bunite_rpc::transport::sealed::fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bunite_rpc::transport::sealed::fuzz::sealed_open(data);
});
