//! Bounds the codec enforces on what a peer sends.
//!
//! | field | default | why |
//! | --- | --- | --- |
//! | `max_bytes` | 64 MiB | the reference peer's `DEFAULT_MAX_BYTES` (PROTOCOL §5) |
//! | `max_depth` | 256 | PROTOCOL §4; recursion can never exhaust a stack |
//! | `decode_budget_factor` | 3 | a message and what it decodes into stay within 4× its size |
//! | `decode_budget_base` | 4 MiB | small messages are never refused |
//! | `max_hello_features` | 64 | a `hello` is kept for the connection's life |
//! | `max_hello_text` | 4 KiB | the same, for each of its strings |
//! | `max_record_table_bytes` | 1 MiB | record definitions are kept for the connection's life (PROTOCOL §3.3) |
//!
//! # The decode budget (PROTOCOL §13.11)
//!
//! A message of `n` bytes may take at most [`DecodeLimits::decode_budget`]`(n)` =
//! `decode_budget_base + decode_budget_factor × n` bytes of memory once decoded. The budget
//! is checked *while* decoding, before each allocation, never after:
//!
//! - decoding a frame ([`crate::Decoder::decode_frame_lazy`]) walks the whole message and
//!   charges what materializing all of it as [`crate::Value`]s would allocate: 32 bytes per
//!   array element, 56 per record field, 64 per map entry, the bytes of every string,
//!   binary and typed array, 16 bytes of allocator overhead per allocation, and the keys of
//!   every record definition. Over the budget, the frame fails with
//!   [`crate::DecodeError::OverBudget`], a protocol error (the connection answers with a
//!   goaway). The payload is not built; what the frame itself keeps (its strings, a
//!   status's details, a drop's entries) and the record definitions are charged before
//!   they are allocated.
//! - [`crate::Payload::to_value`] then allocates by the same rules, so it can never take
//!   more than the frame check admitted.
//! - [`crate::Payload::deserialize`] charges what it builds (the size of each sequence
//!   element and map entry of the target type, string and byte lengths) against the
//!   message's budget and fails with a `SerdeError` saying so. What is charged is what the
//!   target keeps; a `Vec` growing past serde's cautious first reservation (1 MiB) may
//!   briefly hold up to twice that while it reallocates, since size hints never trust the
//!   peer beyond the bytes left.
//!
//! **How the default was chosen.** The target is that one maximal (64 MiB) message of `nil`s,
//! or of small records, keeps a server's peak at most 4× the message, the 64 MiB message
//! included (≤ 300 MiB with the process itself): 64 MiB + 3 × 64 MiB + 4 MiB = 260 MiB.
//! Such a message is refused anyway: an array of `nil`s costs 32 bytes per wire byte, a
//! 15-key record referenced by its one-byte id costs 56 bytes per field. The 4 MiB base
//! lets every message up to about a hundred kilobytes decode whatever it holds.
//!
//! **The trade-off.** A large *dense* message, legitimate or not, that would expand beyond
//! 3× its size as a `Value` is refused: a 1 MiB array of small integers (32 MiB as `Value`s),
//! or more than roughly 120 KiB of small records (a 20-byte row of three fields becomes about
//! 200 bytes). Typed decoding needs much less (8 bytes for an `i64`, a `Row` struct's size per
//! row), but the frame check runs before the receiver knows the target type, so it counts
//! `Value`s. A peer that must exchange such messages raises `decode_budget_factor` (and
//! accepts the larger peak), or sends bulk numbers as binary or typed arrays, which cost one
//! byte per byte.
//!
//! # The record table
//!
//! A record definition (PROTOCOL §3.3) is kept in its slot until another overwrites it, for
//! the connection's life, so the decode budget, which bounds one message, does not bound
//! it: one message of 50 MiB within its budget could define a record of 200,000 long keys,
//! which the table kept at twice its size, and 62 such messages, each to a cap that does not
//! exist, left a server holding 7 GB for one idle connection. So the table has a bound of
//! its own, `max_record_table_bytes`: what its slots keep together, counted as the decode
//! budget counts a definition (the keys' bytes, per key an offset of 8 bytes and a text of
//! 24, a copy of each key longer than 22 bytes, allocator overhead). A definition that
//! would take the table past it is [`crate::DecodeError::RecordTableFull`], a protocol error
//! (goaway), whether or not the message is within its budget.
//!
//! **How the default was chosen.** A peer's encoder keeps at most 32 shapes (the reference's
//! ring, §3.3), and the shapes of frames and of structs have a few short keys each: a
//! table of 32 shapes of 20 keys of 16 bytes keeps about 40 KiB. A record is also how a
//! JavaScript object used as a dictionary travels, one key per entry: 1 MiB keeps such an
//! object of about 17,000 entries with 20-byte keys (and whatever the other slots hold).
//! Across a listener, the default bounds what definitions keep to 1 MiB times its
//! connections (4 GiB at the default of 4,096 connections, against the 7 GB one connection
//! could hold before). A peer that sends larger dictionaries raises it, or sends them as
//! arrays of pairs or as a `Map`, which the codec writes as a msgpack map and keeps
//! nothing of.

/// Decode-side bounds. Every value here protects the receiver from a hostile peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest message accepted, in bytes. Default 64 MiB: the reference peer's
    /// `DEFAULT_MAX_BYTES`, advertised in `hello.maxBytes` (PROTOCOL §5).
    pub max_bytes: usize,
    /// Deepest nesting of arrays, records, maps and extension payloads. Default 256
    /// (PROTOCOL §4): deep enough for any real payload, shallow enough that recursion can
    /// never exhaust the stack.
    pub max_depth: usize,
    /// Bytes a decoded message may take per byte on the wire (see the module docs).
    /// Default 3.
    pub decode_budget_factor: usize,
    /// Bytes every message may take once decoded whatever its size (see the module docs).
    /// Default 4 MiB.
    pub decode_budget_base: usize,
    /// Most feature strings a `hello` may carry. Default 64; more is a protocol error.
    pub max_hello_features: usize,
    /// Longest `hello` string (`mode`, `origin`, each feature), in bytes. Default 4 KiB;
    /// longer is a protocol error.
    pub max_hello_text: usize,
    /// Most memory the decoder's record table may keep: what the definitions of its 64
    /// slots take together (their keys, and per key about 40 bytes of offsets and shared
    /// texts; see "The record table" in the module docs). Default 1 MiB; a definition that
    /// would take the table past it is a protocol error
    /// ([`DecodeError::RecordTableFull`](crate::DecodeError::RecordTableFull)).
    pub max_record_table_bytes: usize,
}

impl DecodeLimits {
    /// Default largest message: 64 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
    /// Default nesting limit: 256.
    pub const DEFAULT_MAX_DEPTH: usize = 256;
    /// Default decode budget per wire byte: 3.
    pub const DEFAULT_DECODE_BUDGET_FACTOR: usize = 3;
    /// Default decode budget every message has: 4 MiB.
    pub const DEFAULT_DECODE_BUDGET_BASE: usize = 4 * 1024 * 1024;
    /// Default most `hello` features: 64.
    pub const DEFAULT_MAX_HELLO_FEATURES: usize = 64;
    /// Default longest `hello` string: 4 KiB.
    pub const DEFAULT_MAX_HELLO_TEXT: usize = 4096;
    /// Default most memory the record table keeps: 1 MiB.
    pub const DEFAULT_MAX_RECORD_TABLE_BYTES: usize = 1024 * 1024;

    /// The memory a message of `wire_len` bytes may take once decoded:
    /// `decode_budget_base + decode_budget_factor × wire_len` (saturating).
    pub fn decode_budget(&self, wire_len: usize) -> usize {
        self.decode_budget_factor
            .saturating_mul(wire_len)
            .saturating_add(self.decode_budget_base)
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            decode_budget_factor: Self::DEFAULT_DECODE_BUDGET_FACTOR,
            decode_budget_base: Self::DEFAULT_DECODE_BUDGET_BASE,
            max_hello_features: Self::DEFAULT_MAX_HELLO_FEATURES,
            max_hello_text: Self::DEFAULT_MAX_HELLO_TEXT,
            max_record_table_bytes: Self::DEFAULT_MAX_RECORD_TABLE_BYTES,
        }
    }
}
