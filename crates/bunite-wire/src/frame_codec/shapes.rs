//! The key orders of frames and of the records nested in them, as the reference emits them
//! (PROTOCOL §4): the one place that knows them. Both the frame writer (`encode.rs`) and
//! [`crate::Frame::to_value`] (`to_value.rs`) take their keys from here.
//!
//! Each is a `static` [`StaticShape`] so that the encoder's ring can recognise it by address
//! (`records::ring`); each has its own hint index.

use crate::records::StaticShape;

macro_rules! shapes {
    ($($name:ident = $index:literal [$($key:literal),*];)*) => {
        $(
            pub(crate) static $name: StaticShape = StaticShape {
                keys: &[$($key),*],
                hint: $index,
            };
        )*
        /// Every static shape (for the tests).
        #[cfg(test)]
        pub(crate) static ALL: &[&StaticShape] = &[$(&$name),*];
    };
}

shapes! {
    HELLO = 0 ["op", "v", "mode", "features", "maxBytes", "origin"];
    GOAWAY = 1 ["op"];
    GOAWAY_REASON = 2 ["op", "reason"];
    GOAWAY_ERROR = 3 ["op", "error"];
    GOAWAY_REASON_ERROR = 4 ["op", "reason", "error"];
    CALL = 5 ["op", "id", "target", "method", "args", "meta"];
    TARGET = 6 ["kind", "id"];
    META_PARENT = 7 ["parentCallId"];
    META_DEADLINE = 8 ["deadlineMs"];
    META_PARENT_DEADLINE = 9 ["parentCallId", "deadlineMs"];
    META_CONTEXT = 10 ["context"];
    META_PARENT_CONTEXT = 11 ["parentCallId", "context"];
    META_DEADLINE_CONTEXT = 12 ["deadlineMs", "context"];
    META_ALL = 13 ["parentCallId", "deadlineMs", "context"];
    RESULT_OK = 14 ["op", "id", "ok", "value"];
    RESULT_ERROR = 15 ["op", "id", "ok", "error"];
    CANCEL = 16 ["op", "id", "reason"];
    STREAM_NEXT = 17 ["op", "id", "ev", "value"];
    STREAM_CREDIT = 18 ["op", "id", "ev", "credit"];
    STREAM_END = 19 ["op", "id", "ev"];
    STREAM_ERROR = 20 ["op", "id", "ev", "error"];
    CREDIT = 21 ["messages"];
    EMPTY = 22 [];
    DROP = 23 ["op", "caps"];
    DROP_ENTRY = 24 ["id", "delta"];
    CAP_REVOKED = 25 ["op", "capIds"];
    STATUS = 26 ["code", "message"];
    STATUS_DETAILS = 27 ["code", "message", "details"];
    STATUS_FULL = 28 ["code", "message", "details", "retry"];
}

/// Number of static shapes: the size of each ring's table of hints.
pub(crate) const STATIC_SHAPES: usize = 29;

/// `meta`'s shape by which of its optional keys are present: bit 0 `parentCallId`, bit 1
/// `deadlineMs`, bit 2 `context` (an empty meta is the empty record).
pub(crate) static META: [&StaticShape; 8] = [
    &EMPTY,
    &META_PARENT,
    &META_DEADLINE,
    &META_PARENT_DEADLINE,
    &META_CONTEXT,
    &META_PARENT_CONTEXT,
    &META_DEADLINE_CONTEXT,
    &META_ALL,
];

/// `goaway`'s shape: bit 0 `reason`, bit 1 `error`.
pub(crate) static GOAWAY_SHAPES: [&StaticShape; 4] =
    [&GOAWAY, &GOAWAY_REASON, &GOAWAY_ERROR, &GOAWAY_REASON_ERROR];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_distinct_and_in_range() {
        let mut hints: Vec<usize> = ALL.iter().map(|s| s.hint).collect();
        assert_eq!(hints.len(), STATIC_SHAPES);
        hints.sort_unstable();
        assert_eq!(hints, (0..STATIC_SHAPES).collect::<Vec<_>>());
    }

    #[test]
    fn key_lists_are_distinct_and_their_keys_too() {
        for (i, a) in ALL.iter().enumerate() {
            for b in ALL.iter().skip(i + 1) {
                assert_ne!(a.keys, b.keys, "two static shapes with the same keys");
            }
            for (j, k) in a.keys.iter().enumerate() {
                assert!(!a.keys[j + 1..].contains(k), "{k} twice in {:?}", a.keys);
            }
        }
    }
}
