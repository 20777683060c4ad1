//! The seeded generator: values of the wire's data model with every msgpack size boundary
//! near at hand, and records whose shapes repeat within a message and across messages (and
//! outnumber the encoder's ring of 32); whole frames are in `frames`.

use bunite_wire::{CapId, Record, Timestamp, TypedArray, TypedArrayKind, Value};

use crate::model;

/// splitmix64: small, and the same sequence on every platform.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// `n` moved by -2..=2.
    pub fn near(&mut self, n: i128) -> i128 {
        n + self.below(5) as i128 - 2
    }
}

/// Where msgpack's integer encodings change (and the reference's int/float64/int64 rule,
/// PROTOCOL §3.1), both signs.
const INT_EDGES: &[i128] = &[
    0,
    31,
    32,
    63,
    64,
    127,
    128,
    255,
    256,
    65_535,
    65_536,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 53,
    1 << 63,
    u64::MAX as i128,
    -1,
    -32,
    -33,
    -128,
    -129,
    -32_768,
    -32_769,
    -(1 << 31),
    -(1 << 53),
    i64::MIN as i128,
];

/// Where string and binary headers change.
const LEN_EDGES: &[usize] = &[0, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536];

/// Record keys: plain, multi-byte, empty, long, ones a JS object orders first (array
/// indices), ones that look like indices but are not, and `__proto__`, which msgpackr
/// renames.
const KEYS: &[&str] = &[
    "a",
    "b",
    "c",
    "id",
    "op",
    "value",
    "é",
    "日本",
    "🦀x",
    "",
    "0",
    "1",
    "7",
    "42",
    "10",
    "4294967294",
    "4294967295",
    "01",
    "-1",
    "1.5",
    "__proto__",
    "constructor",
    "toString",
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
];

/// Characters of each UTF-8 length.
const CHARS: &[char] = &[
    'a',
    'z',
    '~',
    'é',
    'ß',
    'Ж',
    '日',
    '€',
    '\u{ffff}',
    '🦀',
    '\u{10ffff}',
];

/// The greatest |seconds| of a timestamp drawn within a Date's range: a JS Date holds
/// ±8.64e15 ms.
const DATE_SECONDS: i64 = 8_640_000_000_000 - 1;

/// One connection's generator: its record shapes outlive a message.
pub struct Gen {
    pub rng: Rng,
    shapes: Vec<Vec<String>>,
    /// How often a record takes a new shape rather than a known one.
    new_shape_percent: u64,
    /// Whether floats may be NaN (frames compare with `==`, which no NaN passes).
    pub nan: bool,
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let new_shape_percent = rng.pick(&[5, 25, 60]);
        Gen {
            rng,
            shapes: Vec::new(),
            new_shape_percent,
            nan: true,
        }
    }

    /// How many messages the connection sends: one in five a long one, of new shapes
    /// mostly, so that the encoder's ring of 32 wraps and forgets shapes it then defines
    /// again; one in ten longer still, so that msgpackr forgets all its shapes
    /// (`model::Transitions`).
    pub fn messages(&mut self) -> usize {
        match self.rng.below(10) {
            0 => {
                self.new_shape_percent = 80;
                500 + self.rng.below(201) as usize
            }
            1 | 2 => {
                self.new_shape_percent = 60;
                100 + self.rng.below(101) as usize
            }
            _ => 10 + self.rng.below(41) as usize,
        }
    }

    /// A message's value: a record more often than not, as a frame is.
    pub fn message(&mut self) -> Value {
        let depth = 1 + self.rng.below(5) as u32;
        if self.rng.chance(50) {
            self.record(depth)
        } else {
            self.value(depth)
        }
    }

    /// A value, nested at most `depth` more levels.
    pub fn value(&mut self, depth: u32) -> Value {
        if depth > 0 && self.rng.chance(40) {
            return match self.rng.below(10) {
                0..=2 => self.array(depth),
                3..=8 => self.record(depth),
                _ => self.map(depth),
            };
        }
        self.leaf()
    }

    fn leaf(&mut self) -> Value {
        match self.rng.below(16) {
            0 => Value::Undefined,
            1 => Value::Null,
            2 => Value::Bool(self.rng.chance(50)),
            3..=5 => self.int(),
            6..=7 => self.float(),
            8..=10 => Value::Str(self.string()),
            11 => Value::Bin(self.bytes()),
            12 => Value::CapRef(CapId(self.cap_id())),
            13 => self.typed_array(),
            14 => self.timestamp(),
            _ => Value::Int(self.rng.below(300) as i64 - 100),
        }
    }

    pub fn int(&mut self) -> Value {
        let n = match self.rng.below(4) {
            0 => self.rng.next() as i64 as i128,
            1 => self.rng.next() as i128,
            _ => {
                let edge = self.rng.pick(INT_EDGES);
                self.rng.near(edge)
            }
        };
        let n = n.clamp(i64::MIN as i128, u64::MAX as i128);
        match i64::try_from(n) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(n as u64),
        }
    }

    pub fn float(&mut self) -> Value {
        const SPECIAL: &[f64] = &[
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            f64::MAX,
            f64::MIN,
            0.5,
            -1.5,
            1.25,
            0.1,
            3.0,
            -7.0,
            64.0,
            2_147_483_647.0,
            2_147_483_648.0,
            -2_147_483_648.0,
            -2_147_483_649.0,
            4_294_967_295.0,
            4_294_967_296.0,
            9_007_199_254_740_992.0,
            1e300,
        ];
        let f = match self.rng.below(5) {
            0 if self.nan => f64::NAN,
            0 | 1 => self.rng.pick(SPECIAL),
            2 => f64::from(self.rng.next() as u32 as f32 / 7.0),
            3 => (self.rng.below(1 << 20) as f64 - 524_288.0) / 64.0,
            _ => f64::from_bits(self.rng.next()),
        };
        // One NaN only, the one JavaScript makes: what an engine does with another's bits
        // is no part of the codec.
        Value::Float(match f.is_nan() {
            true if self.nan => f64::NAN,
            true => 0.25,
            false => f,
        })
    }

    fn len(&mut self, small: usize) -> usize {
        match self.rng.below(20) {
            0..=9 => self.rng.below(small as u64 + 1) as usize,
            10..=17 => {
                let edge = self.rng.pick(&LEN_EDGES[..LEN_EDGES.len() - 2]);
                self.rng.near(edge as i128).max(0) as usize
            }
            18 => self.rng.below(2000) as usize,
            // The 16-bit to 32-bit header edge, now and then.
            _ if self.rng.chance(10) => self.rng.near(65_536) as usize,
            _ => self.rng.below(40) as usize,
        }
    }

    /// A string of about the length drawn, in bytes, of characters of every UTF-8 length.
    pub fn string(&mut self) -> String {
        let bytes = self.len(40);
        let ascii = self.rng.chance(30);
        let mut s = String::with_capacity(bytes + 4);
        while s.len() < bytes {
            let c = if ascii { 'q' } else { self.rng.pick(CHARS) };
            if s.len() + c.len_utf8() > bytes {
                s.push('a');
            } else {
                s.push(c);
            }
        }
        s
    }

    /// A string within what a hello may hold (`DecodeLimits::max_hello_text`).
    pub fn hello_text(&mut self) -> String {
        let s = self.string();
        if s.len() <= 4096 {
            s
        } else {
            "long".repeat(1024)
        }
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = self.len(40);
        (0..n).map(|_| self.rng.next() as u8).collect()
    }

    pub fn cap_id(&mut self) -> u32 {
        const EDGES: &[i128] = &[0, 127, 128, 16_383, 16_384, 1 << 21, 1 << 28, 1 << 32];
        let edge = self.rng.pick(EDGES);
        match self.rng.below(3) {
            0 => self.rng.next() as u32,
            _ => self.rng.near(edge).clamp(0, u32::MAX as i128) as u32,
        }
    }

    fn typed_array(&mut self) -> Value {
        let kind = self.rng.pick(&TypedArrayKind::ALL);
        let size = kind.element_size();
        // 254 and 255 data bytes straddle the ext 8 / ext 16 header.
        let mut n = match self.rng.below(4) {
            0 => self.rng.pick(&[0, 254, 255, 256]),
            _ => self.rng.below(40) as usize,
        };
        n -= n % size;
        let bytes = (0..n).map(|_| self.rng.next() as u8).collect();
        Value::TypedArray(TypedArray { kind, bytes })
    }

    /// Seconds within what a JS Date holds, at the edges of the three msgpack forms too; one
    /// in ten an invalid Date (msgpackr's `d4 ff ff`, which we write for every timestamp
    /// whose nanos are out of range), one in ten seconds beyond a Date's range (which
    /// msgpackr reads as an invalid Date, or past 2^47 seconds as its 48 bits say:
    /// `model::date_ms`).
    fn timestamp(&mut self) -> Value {
        const EDGES: &[i128] = &[0, (1 << 32) - 1, 1 << 32, (1 << 34) - 1, 1 << 34, -1];
        const FAR: &[i128] = &[
            DATE_SECONDS as i128 + 1,
            -(DATE_SECONDS as i128) - 1,
            1 << 47,
            -(1 << 47),
            1 << 48,
            -(1 << 48),
            i64::MAX as i128,
            i64::MIN as i128,
        ];
        let seconds = match self.rng.below(10) {
            0 => {
                let nanos = match self.rng.below(3) {
                    0 => Timestamp::INVALID.nanos,
                    1 => 1_000_000_000,
                    _ => 1_000_000_000 + self.rng.below(u64::from(u32::MAX) - 999_999_999) as u32,
                };
                let invalid = Timestamp {
                    seconds: self.rng.next() as i64,
                    nanos,
                };
                return Value::Timestamp(invalid);
            }
            1 => match self.rng.below(2) {
                0 => self.rng.next() as i64,
                _ => {
                    let edge = self.rng.pick(FAR);
                    self.rng
                        .near(edge)
                        .clamp(i64::MIN as i128, i64::MAX as i128) as i64
                }
            },
            2..=4 => {
                let edge = self.rng.pick(EDGES);
                self.rng.near(edge) as i64
            }
            5..=7 => self.rng.below(1 << 33) as i64,
            _ => self.rng.next() as i64 % DATE_SECONDS,
        };
        let nanos = match self.rng.below(4) {
            0 => 0,
            1 => self.rng.below(1000) as u32 * 1_000_000,
            2 => self.rng.pick(&[1, 999_999, 999_999_999]),
            _ => self.rng.below(1_000_000_000) as u32,
        };
        Value::Timestamp(Timestamp { seconds, nanos })
    }

    fn array(&mut self, depth: u32) -> Value {
        let n = match self.rng.below(10) {
            0 => self.rng.pick(&[15, 16, 17]),
            _ => self.rng.below(6) as usize,
        };
        Value::Array((0..n).map(|_| self.value(depth - 1)).collect())
    }

    /// A key list: distinct keys, never both `__proto__` and the `__proto_` msgpackr
    /// renames it to.
    fn shape(&mut self) -> Vec<String> {
        let n = match self.rng.below(12) {
            0 => self.rng.pick(&[15, 16, 17]),
            _ => self.rng.below(6),
        };
        let mut keys: Vec<String> = Vec::new();
        for _ in 0..n {
            let key = if self.rng.chance(60) {
                self.rng.pick(KEYS).to_owned()
            } else {
                let len = 1 + self.rng.below(6);
                (0..len)
                    .map(|_| char::from(b'a' + self.rng.below(26) as u8))
                    .collect()
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    fn record(&mut self, depth: u32) -> Value {
        let keys = if self.shapes.is_empty() || self.rng.chance(self.new_shape_percent) {
            let keys = self.shape();
            self.shapes.push(keys.clone());
            keys
        } else {
            let i = self.rng.below(self.shapes.len() as u64) as usize;
            self.shapes[i].clone()
        };
        Value::Record(Record(
            keys.into_iter()
                .map(|k| (k.into(), self.value(depth - 1)))
                .collect(),
        ))
    }

    /// A msgpack map: keys a JS Map tells apart (no two the same JS value).
    fn map(&mut self, depth: u32) -> Value {
        let n = match self.rng.below(10) {
            0 => self.rng.pick(&[15, 16, 17]),
            _ => self.rng.below(5) as usize,
        };
        let mut seen = Vec::new();
        let mut entries = Vec::new();
        for _ in 0..n {
            let key = match self.rng.below(4) {
                0 => Value::Str(self.string()),
                1 => self.array(depth.min(2)),
                _ => self.leaf(),
            };
            // A Map keeps one entry per key, +0 and -0 one key.
            let view = model::view(&model::normalize(&key));
            if seen.contains(&view) {
                continue;
            }
            seen.push(view);
            entries.push((key, self.value(depth - 1)));
        }
        Value::Map(entries)
    }
}
