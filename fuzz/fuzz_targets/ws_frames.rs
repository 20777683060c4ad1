//! The WebSocket read path against any bytes a client may send: tungstenite must read the
//! same messages and refuse the same inputs with and without the reader that cuts long
//! frames into fragments (the harness is `bunite_rpc::transport::ws::fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bunite_rpc::transport::ws::fuzz::ws_frames(data);
});
