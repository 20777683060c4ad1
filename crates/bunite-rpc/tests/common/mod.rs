//! Test harness: connection pairs over the in-memory transport, a raw frame-level peer for
//! exact wire assertions, a counter cap, and leak checks.
#![allow(dead_code)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::memory::{self, MemoryTransport};
use bunite_rpc::wire::{
    Call, CallId, CapId, Decoder, Encoder, Frame, Hello, Limits as WireLimits, ResultFrame,
    WireStatus,
};
use bunite_rpc::{CapDef, Code, Connection, ConnectionBuilder, MethodDef, Record, Status, Value};

/// Two connected peers with default settings: (server, client).
pub fn pair() -> (Connection, Connection) {
    pair_with(Connection::builder(), Connection::builder())
}

/// Two connected peers built from the given builders.
pub fn pair_with(a: ConnectionBuilder, b: ConnectionBuilder) -> (Connection, Connection) {
    let (ta, tb) = memory::pair();
    (a.connect(ta), b.connect(tb))
}

/// The `test.counter` cap: `get` (idempotent), `increment {delta?}`, `fail {code, message,
/// reason}`, `boom`, `echo`, and `undeclared` (declared, no handler).
pub fn counter_def() -> Arc<CapDef> {
    CapDef::builder("test.counter")
        .method(MethodDef::call("get").idempotent())
        .method(MethodDef::call("increment"))
        .method(MethodDef::call("fail"))
        .method(MethodDef::call("boom"))
        .method(MethodDef::call("echo"))
        .method(MethodDef::call("wait"))
        .method(MethodDef::call("typed"))
        .method(MethodDef::call("undeclared"))
        .build()
}

/// A counter implementation.
pub fn counter_impl() -> Arc<dyn bunite_rpc::CapImpl> {
    let count = Arc::new(AtomicI64::new(0));
    let (c1, c2) = (count.clone(), count);
    DynCap::new()
        .call("get", move |_, _| {
            let n = c1.load(Ordering::SeqCst);
            async move { Ok(Value::Record(Record::new().with("count", n))) }
        })
        .call("increment", move |args: Value, _| {
            let delta = args
                .as_record()
                .and_then(|r| r.get("delta"))
                .and_then(Value::as_integer)
                .unwrap_or(1) as i64;
            let n = c2.fetch_add(delta, Ordering::SeqCst) + delta;
            async move { Ok(Value::Record(Record::new().with("count", n))) }
        })
        .call("fail", |args: Value, _| async move {
            let r = args.as_record().cloned().unwrap_or_default();
            let code = r
                .get("code")
                .and_then(Value::as_str)
                .and_then(Code::parse)
                .unwrap_or(Code::Internal);
            let message = r
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("requested failure");
            let mut status = Status::new(code, message);
            if let Some(reason) = r.get("reason").and_then(Value::as_str) {
                status = status.with_reason(reason);
            }
            Err::<Value, _>(status)
        })
        .call("boom", |_, _| async move {
            Err::<Value, _>(Status::internal("boom"))
        })
        .call("echo", |args, _| async move { Ok(args) })
        .call("wait", |_, ctx: bunite_rpc::CallContext| async move {
            ctx.cancelled().await;
            Ok(Value::from("aborted"))
        })
        .call("typed", |args, _| async move {
            #[derive(serde::Deserialize)]
            struct Args {
                #[allow(dead_code)]
                n: u32,
            }
            let _: Args = bunite_rpc::from_value(args)?;
            Ok(Value::Undefined)
        })
        .build()
}

/// A peer that speaks frames by hand over one end of an in-memory pair.
pub struct RawPeer {
    t: MemoryTransport,
    enc: Encoder,
    dec: Decoder,
}

impl RawPeer {
    /// A connection built from `builder` with a raw peer on the other end. The raw peer has
    /// already read the connection's hello and sent its own.
    pub async fn connect(builder: ConnectionBuilder) -> (Connection, RawPeer) {
        let (a, b) = memory::pair();
        let conn = builder.connect(a);
        let mut raw = RawPeer {
            t: b,
            enc: Encoder::new(),
            dec: Decoder::new(WireLimits::default()),
        };
        match raw.recv().await {
            Frame::Hello(h) => assert_eq!(h.v, 1),
            other => panic!("expected hello, got {other:?}"),
        }
        raw.send(Frame::Hello(Hello {
            v: 1,
            mode: "native".into(),
            features: vec![],
            max_bytes: 64 << 20,
            origin: "test://raw".into(),
        }))
        .await;
        (conn, raw)
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: Frame) {
        let bytes = self.enc.encode_to_vec(&frame.to_value());
        self.t.send_raw(bytes.into()).await.expect("send");
    }

    /// Sends raw bytes (hostile input).
    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        let _ = self.t.send_raw(bytes.into()).await;
    }

    /// The next frame (fails the test after 60 s).
    pub async fn recv(&mut self) -> Frame {
        self.try_recv().await.expect("connection closed")
    }

    /// The next frame, or `None` if the connection closed its transport.
    pub async fn try_recv(&mut self) -> Option<Frame> {
        self.recv_within(Duration::from_secs(60))
            .await
            .expect("timed out waiting for a frame")
    }

    /// The next frame within `d`: `Err` on timeout, `Ok(None)` if the transport closed.
    pub async fn recv_within(
        &mut self,
        d: Duration,
    ) -> Result<Option<Frame>, tokio::time::error::Elapsed> {
        let bytes = tokio::time::timeout(d, self.t.recv_raw()).await?;
        Ok(bytes.map(|b| self.dec.decode_frame(&b).expect("valid frame")))
    }

    /// Sends a call and returns the result frame for it (skipping nothing else).
    pub async fn call(&mut self, id: u64, target: u32, method: &str, args: Value) -> ResultFrame {
        self.send(Frame::Call(Call {
            id: CallId(id),
            target: CapId(target),
            method: bunite_rpc::wire::Text::copy_from(method),
            args,
            meta: None,
        }))
        .await;
        loop {
            match self.recv().await {
                Frame::Result(r) if r.id == CallId(id) => return r,
                Frame::Result(r) => panic!("result for another call: {r:?}"),
                _ => continue,
            }
        }
    }

    /// Bootstraps `name` and returns the cap-id.
    pub async fn bootstrap(&mut self, id: u64, name: &str) -> CapId {
        let r = self
            .call(
                id,
                0,
                "bootstrap",
                Value::Record(Record::new().with("name", name)),
            )
            .await;
        match r.outcome {
            Ok(Value::CapRef(id)) => id,
            other => panic!("bootstrap failed: {other:?}"),
        }
    }
}

/// The error of a result frame.
pub fn err_of(r: ResultFrame) -> WireStatus {
    match r.outcome {
        Err(e) => e,
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Asserts code, message and `details.reason` of a status.
#[track_caller]
pub fn assert_status(s: &Status, code: Code, message: &str, reason: Option<&str>) {
    assert_eq!(s.code, code, "code of {s:?}");
    assert_eq!(s.message, message, "message of {s:?}");
    assert_eq!(s.reason(), reason, "reason of {s:?}");
}

/// Asserts code, message and `details.reason` of a wire status.
#[track_caller]
pub fn assert_wire(s: &WireStatus, code: &str, message: &str, reason: Option<&str>) {
    assert_eq!(s.code, code, "code of {s:?}");
    assert_eq!(s.message.as_deref(), Some(message), "message of {s:?}");
    assert_eq!(s.reason(), reason, "reason of {s:?}");
}

/// Waits (bounded) until both peers hold only their reserved caps and nothing is pending.
pub async fn assert_clean(conns: &[&Connection]) {
    for _ in 0..200 {
        if conns.iter().all(|c| is_clean(c)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for c in conns {
        assert!(is_clean(c), "leak: {:?}", c.stats());
    }
}

fn is_clean(c: &Connection) -> bool {
    let s = c.stats();
    s.live_caps == 2
        && s.pending_calls == 0
        && s.active_calls == 0
        && s.server_streams == 0
        && s.client_streams == 0
}

/// Waits (bounded) for a condition.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(f(), "condition never became true");
}
