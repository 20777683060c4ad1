//! Bounds the codec enforces on what a peer sends.

/// Decode-side bounds. Every value here protects the receiver from a hostile peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes. Default 64 MiB: the reference peer's
    /// `DEFAULT_MAX_BYTES`, advertised in `hello.maxBytes` (PROTOCOL §5).
    pub max_bytes: usize,
    /// Deepest nesting of arrays, records, maps and extension payloads. Default 256
    /// (PROTOCOL §4): deep enough for any real payload, shallow enough that recursion can
    /// never exhaust the stack.
    pub max_depth: usize,
}

impl Limits {
    /// Default largest message: 64 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
    /// Default nesting limit: 256.
    pub const DEFAULT_MAX_DEPTH: usize = 256;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
}
