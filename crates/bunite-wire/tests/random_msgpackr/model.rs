//! What msgpackr makes of a value we send, written down from its source (msgpackr 1.12.1,
//! `unpack.js` and `pack.js`) and PROTOCOL §3:
//!
//! - [`view`]: the value JavaScript holds after msgpackr decodes our encoding of it, as the
//!   canonical text `js/test/msgpackr_echo.ts` writes of what it decoded.
//! - [`normalize`]: that JavaScript value encoded again by msgpackr, as our decoder must
//!   read it. Where it differs from the value we sent, JavaScript cannot hold the
//!   difference: a number is a double (`Float(3.0)` comes back `Int(3)`, `-0.0` comes back
//!   `0`, an `Int` beyond 2^32 comes back a `Float`), a Date holds milliseconds (or is
//!   invalid: `d4 ff ff` both ways, [`Timestamp::INVALID`] to us), and an
//!   object lists its array-index keys first and has no own `__proto__`, a Map's key -0 is
//!   +0.

use bunite_wire::{Record, Timestamp, Value};

/// Integers of at most this magnitude travel as JS numbers (PROTOCOL §3.1); beyond, as
/// int64/uint64, which msgpackr reads as a BigInt.
const SAFE: i64 = 1 << 53;

/// A JS Date holds at most this many milliseconds either side of the epoch.
const DATE_MS: f64 = 8.64e15;

/// The canonical text of what msgpackr decodes from our encoding of `v`.
pub fn view(v: &Value) -> String {
    let mut out = String::new();
    write_view(v, &mut out);
    out
}

fn write_view(v: &Value, out: &mut String) {
    match v {
        Value::Undefined => out.push('u'),
        Value::Null => out.push('n'),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Int(n) if (-SAFE..=SAFE).contains(n) => number(*n as f64, out),
        Value::Int(n) => out.push_str(&format!("B{n}")),
        Value::UInt(n) => out.push_str(&format!("B{n}")),
        Value::Float(f) => number(*f, out),
        Value::Str(s) => {
            out.push('s');
            out.push_str(&hex::encode(s));
        }
        Value::Bin(b) => {
            out.push('b');
            out.push_str(&hex::encode(b));
        }
        Value::Array(items) => {
            out.push('[');
            for item in items {
                write_view(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Record(r) => {
            out.push('{');
            for (k, item) in js_order(r) {
                out.push_str(&hex::encode(k));
                out.push('=');
                write_view(item, out);
                out.push(';');
            }
            out.push('}');
        }
        Value::Map(entries) => {
            out.push_str("M{");
            for (k, item) in entries {
                // A Map's key -0 is +0 (SameValueZero).
                match k {
                    Value::Float(f) if *f == 0.0 => number(0.0, out),
                    k => write_view(k, out),
                }
                out.push_str("=>");
                write_view(item, out);
                out.push(';');
            }
            out.push('}');
        }
        Value::CapRef(id) => out.push_str(&format!("C{}", id.0)),
        Value::TypedArray(t) => {
            out.push_str(&format!("T{}:{}", t.kind.code(), hex::encode(&t.bytes)));
        }
        Value::Timestamp(t) => match date_ms(*t) {
            Some(ms) => out.push_str(&format!("D{ms}")),
            None => out.push_str("DNaN"),
        },
    }
}

/// A JS number by its float64 bits.
fn number(f: f64, out: &mut String) {
    out.push_str(&format!("N{:016x}", f.to_bits()));
}

/// The keys of the object msgpackr builds of a record, in the order JavaScript lists them:
/// array indices (canonical decimal integers below 2^32 - 1) first, ascending, then the
/// others in the record's order; `__proto__` renamed `__proto_` (`unpack.js` sets no
/// prototype from the wire).
pub fn js_order(r: &Record) -> Vec<(&str, &Value)> {
    fn renamed(k: &str) -> &str {
        if k == "__proto__" {
            "__proto_"
        } else {
            k
        }
    }
    let mut indices: Vec<(u64, &str, &Value)> = r
        .iter()
        .filter_map(|(k, v)| array_index(k).map(|i| (i, k, v)))
        .collect();
    indices.sort_by_key(|(i, _, _)| *i);
    indices
        .into_iter()
        .map(|(_, k, v)| (k, v))
        .chain(
            r.iter()
                .filter(|(k, _)| array_index(k).is_none())
                .map(|(k, v)| (renamed(k), v)),
        )
        .collect()
}

fn array_index(k: &str) -> Option<u64> {
    let canonical = k == "0" || (!k.starts_with('0') && k.bytes().all(|b| b.is_ascii_digit()));
    let i: u64 = if canonical { k.parse().ok()? } else { None? };
    (i < u64::from(u32::MAX)).then_some(i)
}

/// The milliseconds of the Date msgpackr reads from our encoding of `t`: `unpack.js`
/// computes `nanos / 1e6 + seconds * 1000` in doubles for every form, and the Date
/// truncates it toward zero; `None` is an invalid Date. That is what we write for an
/// invalid timestamp (`d4 ff ff`, which `unpack.js` reads as `new Date('invalid')`), and
/// what a Date makes of more than ±8.64e15 ms. In the 12-byte form (every time before 1970
/// or from 2^32 seconds on) `unpack.js` reads the seconds' sign bit and their low 48 bits
/// only, so seconds beyond ±2^47 come out as those 48 bits say.
pub fn date_ms(t: Timestamp) -> Option<i64> {
    if !t.is_valid() {
        return None;
    }
    const LOW48: i64 = (1 << 48) - 1;
    let seconds = match t.seconds {
        s if s < 0 => -(1 << 48) + (s & LOW48),
        s => s & LOW48,
    };
    let ms = f64::from(t.nanos) / 1e6 + seconds as f64 * 1000.0;
    (ms.abs() <= DATE_MS).then(|| ms.trunc() as i64)
}

/// What our decoder reads from msgpackr's encoding of what msgpackr decoded of `v`.
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Int(n) if (-SAFE..=SAFE).contains(n) => js_number(*n as f64),
        Value::Float(f) => js_number(*f),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Record(r) => Value::Record(Record(
            js_order(r)
                .into_iter()
                .map(|(k, item)| (k.to_owned().into(), normalize(item)))
                .collect(),
        )),
        Value::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, item)| (normalize(k), normalize(item)))
                .collect(),
        ),
        Value::Timestamp(t) => Value::Timestamp(match date_ms(*t) {
            Some(ms) => Timestamp {
                seconds: ms.div_euclid(1000),
                nanos: (ms.rem_euclid(1000) * 1_000_000) as u32,
            },
            // msgpackr writes an invalid Date as `d4 ff ff`.
            None => Timestamp::INVALID,
        }),
        other => other.clone(),
    }
}

/// How `pack.js` writes a JS number: an integer in -2^31..2^32-1 (and -0, which passes its
/// `value >>> 0 === value` test) as a msgpack int, anything else as float64.
fn js_number(f: f64) -> Value {
    if f == 0.0 {
        Value::Int(0)
    } else if f.fract() == 0.0 && (-2_147_483_648.0..4_294_967_296.0).contains(&f) {
        Value::Int(f as i64)
    } else {
        Value::Float(f)
    }
}

/// Equality that tells the variants apart and compares floats by their bits (so NaN equals
/// itself and -0.0 differs from 0.0).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Record(x), Value::Record(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, a), (kb, b))| ka == kb && same(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, a), (kb, b))| same(ka, kb) && same(a, b))
        }
        _ => a == b,
    }
}

/// msgpackr's own forgetting, which PROTOCOL §3.3 lets an encoder leave out ("msgpackr also
/// forgets all its shapes after a large number of shape creations, a heuristic of its own"),
/// as `pack.js` does it: every record it packs walks a trie of key paths, and each path
/// node it adds counts as many transitions as `pack` calls since the last rebuild (at most
/// 10, the first call 0). At the end of a `pack`, past 10,000 transitions it drops the trie:
/// every shape is forgotten (its id is not), and the next record of any shape is a
/// definition with the next id.
#[derive(Default)]
pub struct Transitions {
    trie: std::collections::HashSet<Vec<String>>,
    count: u64,
    since_rebuild: u64,
}

impl Transitions {
    /// msgpackr packed `v` (as JavaScript holds it, `normalize`); true if it then forgot
    /// every shape.
    pub fn packed(&mut self, v: &Value) -> bool {
        let added = self.walk(v);
        self.count += self.since_rebuild * added;
        self.since_rebuild = (self.since_rebuild + 1).min(10);
        if self.count <= 10_000 {
            return false;
        }
        self.trie.clear();
        self.count = 0;
        self.since_rebuild = 0;
        true
    }

    /// The trie nodes `v`'s records add.
    fn walk(&mut self, v: &Value) -> u64 {
        match v {
            Value::Record(r) => {
                let keys: Vec<String> = r.keys().map(str::to_owned).collect();
                let added = (1..=keys.len())
                    .filter(|&n| self.trie.insert(keys[..n].to_vec()))
                    .count() as u64;
                added + r.iter().map(|(_, item)| self.walk(item)).sum::<u64>()
            }
            Value::Array(items) => items.iter().map(|item| self.walk(item)).sum(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, item)| self.walk(k) + self.walk(item))
                .sum(),
            _ => 0,
        }
    }
}
