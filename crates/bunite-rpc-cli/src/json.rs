//! JSON in and out for `call` and `stream`: JSON objects become records; binary prints as
//! base64; `undefined` is absent (a record key with an undefined value is left out; an
//! undefined result prints nothing).

use base64::Engine;
use bunite_rpc::wire::{TypedArrayKind, Value};
use serde_json::{json, Map, Number};

/// Parses JSON params (from the command line, a file or stdin) into a value.
pub fn parse(text: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice(text).map(from_json)
}

/// JSON to a wire value: objects are records, integers ints, other numbers floats.
pub fn from_json(json: serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::uint(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Str(s),
        serde_json::Value::Array(items) => Value::Array(items.into_iter().map(from_json).collect()),
        serde_json::Value::Object(map) => {
            Value::Record(map.into_iter().map(|(k, v)| (k, from_json(v))).collect())
        }
    }
}

/// A wire value as JSON, or `None` for undefined.
pub fn to_json(v: &Value) -> Option<serde_json::Value> {
    let b64 = |bytes: &[u8]| {
        serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    Some(match v {
        Value::Undefined => return None,
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => {
            Number::from_f64(*f).map_or_else(|| json!(f.to_string()), serde_json::Value::Number)
        }
        Value::Str(s) => json!(s),
        Value::Bin(b) => b64(b),
        Value::TypedArray(t) if t.kind == TypedArrayKind::Uint8 => b64(&t.bytes),
        Value::TypedArray(t) => json!({ "$typedArray": t.kind.code(), "base64": b64(&t.bytes) }),
        Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|i| to_json(i).unwrap_or(serde_json::Value::Null))
                .collect(),
        ),
        Value::Record(r) => {
            let map: Map<String, serde_json::Value> = r
                .iter()
                .filter_map(|(k, v)| Some((k.to_owned(), to_json(v)?)))
                .collect();
            serde_json::Value::Object(map)
        }
        Value::Map(entries) => serde_json::Value::Array(
            entries
                .iter()
                .map(|(k, v)| {
                    json!([
                        to_json(k).unwrap_or(serde_json::Value::Null),
                        to_json(v).unwrap_or(serde_json::Value::Null)
                    ])
                })
                .collect(),
        ),
        Value::CapRef(id) => json!({ "$capref": id.0 }),
        Value::Timestamp(t) => json!({ "$timestamp": [t.seconds, t.nanos] }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunite_rpc::Record;

    #[test]
    fn objects_become_records_and_binary_prints_as_base64() {
        let v = parse(br#"{"a": 1, "b": [true, null, 2.5], "c": "x"}"#).unwrap();
        let expect = Record::new()
            .with("a", 1)
            .with(
                "b",
                Value::Array(vec![true.into(), Value::Null, 2.5.into()]),
            )
            .with("c", "x");
        assert_eq!(v, Value::Record(expect));
        let out = to_json(&Value::Record(
            Record::new()
                .with("bin", Value::Bin(vec![0, 1, 255]))
                .with("gone", Value::Undefined),
        ));
        assert_eq!(out, Some(json!({"bin": "AAH/"})));
        assert_eq!(to_json(&Value::Undefined), None);
    }
}
