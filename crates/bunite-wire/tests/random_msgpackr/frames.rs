//! Whole frames of every op, valid as our decoder validates them, their payloads as a peer
//! decoding them would hold them.

use bunite_wire::{
    Call, CallId, CallMeta, Cancel, CapId, CapRevoked, DropEntry, DropFrame, Frame, Goaway, Hello,
    ResultFrame, StreamEvent, StreamFrame, Value, WireStatus,
};

use crate::gen::Gen;
use crate::model;

impl Gen {
    /// A payload of a frame, as a peer decoding one would hold it (`model::normalize`) and
    /// without NaN, so a frame decoded back compares with `==`.
    fn payload(&mut self) -> Value {
        self.nan = false;
        let v = model::normalize(&self.value(3));
        self.nan = true;
        v
    }

    fn call_id(&mut self) -> CallId {
        CallId(match self.rng.below(3) {
            0 => self.rng.below(64),
            1 => {
                let edge = self.rng.pick(&[1 << 31, 1 << 32, 1 << 53]);
                self.rng.near(edge).min((1 << 53) - 1) as u64
            }
            _ => self.rng.below(1 << 53),
        })
    }

    fn opt_string(&mut self) -> Option<String> {
        self.rng.chance(60).then(|| self.string())
    }

    fn status(&mut self) -> WireStatus {
        let full = self.rng.chance(40);
        WireStatus {
            code: self
                .rng
                .pick(&["internal", "not_found", "cancelled", ""])
                .to_owned(),
            message: self.opt_string(),
            details: self.rng.chance(50).then(|| self.defined_payload()),
            retry: (full && self.rng.chance(50)).then(|| self.defined_payload()),
            full,
        }
    }

    /// A payload that is not undefined (`details` and `retry` read undefined as absent).
    fn defined_payload(&mut self) -> Value {
        match self.payload() {
            Value::Undefined => Value::Null,
            v => v,
        }
    }

    fn meta(&mut self) -> Option<CallMeta> {
        self.rng.chance(50).then(|| CallMeta {
            parent_call_id: self.rng.chance(50).then(|| self.call_id()),
            deadline_ms: self.rng.chance(50).then(|| match self.float() {
                Value::Float(f) if f.is_finite() => f,
                _ => 1500.0,
            }),
            context: self.rng.chance(50).then(|| {
                let mut keys: Vec<String> = Vec::new();
                for _ in 0..self.rng.below(4) {
                    let k = self.rng.pick(&["trace", "user", "é", "x"]).to_owned();
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
                keys.into_iter().map(|k| (k, self.string())).collect()
            }),
        })
    }

    /// A frame of any op, valid as our decoder validates frames.
    pub fn frame(&mut self) -> Frame {
        match self.rng.below(8) {
            0 => Frame::Hello(Hello {
                v: 1,
                mode: self.rng.pick(&["native", "web"]).to_owned(),
                features: (0..self.rng.below(4)).map(|_| self.hello_text()).collect(),
                max_bytes: match self.int() {
                    Value::Int(n) => n.unsigned_abs(),
                    _ => u64::MAX,
                },
                origin: self.hello_text(),
            }),
            1 => Frame::Goaway(Goaway {
                reason: self.opt_string(),
                error: self.rng.chance(50).then(|| self.status()),
            }),
            2 | 3 => Frame::Call(Call {
                id: self.call_id(),
                target: CapId(self.cap_id()),
                method: self.string().into(),
                args: self.payload(),
                meta: self.meta(),
            }),
            4 => Frame::Result(ResultFrame {
                id: self.call_id(),
                outcome: if self.rng.chance(70) {
                    Ok(self.payload())
                } else {
                    Err(self.status())
                },
            }),
            5 => Frame::Cancel(Cancel {
                id: self.call_id(),
                reason: self.opt_string(),
            }),
            6 => Frame::Stream(StreamFrame {
                id: self.call_id(),
                event: match self.rng.below(4) {
                    0 => StreamEvent::Next(self.payload()),
                    // The decoder keeps a credit below u64::MAX (`integer_below`).
                    1 => StreamEvent::Credit(Some(match self.int() {
                        Value::Int(n) => n.unsigned_abs(),
                        Value::UInt(n) => n.min(u64::MAX - 1),
                        _ => 8,
                    })),
                    2 => StreamEvent::End,
                    _ => StreamEvent::Error(self.status()),
                },
            }),
            _ if self.rng.chance(50) => Frame::Drop(DropFrame {
                caps: (0..self.rng.below(5))
                    .map(|_| DropEntry {
                        id: CapId(self.cap_id()),
                        delta: self.cap_id(),
                    })
                    .collect(),
            }),
            _ => Frame::CapRevoked(CapRevoked {
                cap_ids: (0..self.rng.below(5))
                    .map(|_| CapId(self.cap_id()))
                    .collect(),
            }),
        }
    }
}
