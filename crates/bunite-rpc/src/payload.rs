//! A value received from the peer, as handlers and callers get it.
//!
//! Interim: holds the decoded [`Value`]. The codec's lazy payload (validated bytes, decoded
//! straight into the target type) takes its place with the same API.

use bunite_wire::{CapId, DecodeError, SerdeError, Value};
use serde::de::DeserializeOwned;

/// A value received from the peer, not yet turned into a Rust type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Payload(Value);

impl Payload {
    /// A payload holding `v` (local construction).
    pub fn from_value(v: Value) -> Payload {
        Payload(v)
    }

    /// `undefined`.
    pub fn undefined() -> Payload {
        Payload(Value::Undefined)
    }

    /// Whether it is `undefined`.
    pub fn is_undefined(&self) -> bool {
        self.0.is_undefined()
    }

    /// The value.
    pub fn to_value(&self) -> Result<Value, DecodeError> {
        Ok(self.0.clone())
    }

    /// The value, consuming the payload.
    pub fn into_value(self) -> Result<Value, DecodeError> {
        Ok(self.0)
    }

    /// Decodes into `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, SerdeError> {
        bunite_wire::from_value(self.0.clone())
    }

    /// Every CapRef inside.
    pub fn cap_refs(&self) -> Vec<CapId> {
        fn walk(v: &Value, out: &mut Vec<CapId>) {
            match v {
                Value::CapRef(id) => out.push(*id),
                Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                Value::Record(r) => r.0.iter().for_each(|(_, i)| walk(i, out)),
                Value::Map(m) => m.iter().for_each(|(k, i)| {
                    walk(k, out);
                    walk(i, out)
                }),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &mut out);
        out
    }

    /// Bytes on the wire (0 for a local payload).
    pub fn wire_len(&self) -> usize {
        0
    }
}
