//! [`Text`]: an immutable string that is cheap to clone, for record keys and method names.
//!
//! A decoded record's keys come from its shape's definition, so every record of one shape
//! shares them instead of allocating a `String` per key per record (PROTOCOL §3.3). Three
//! representations, chosen so the common cases never allocate:
//!
//! - a `&'static str` (struct field names, literals): no allocation, ever;
//! - up to [`Text::INLINE`] bytes stored inline (most keys and method names): no allocation,
//!   and a clone is a 24-byte copy rather than an atomic increment;
//! - longer strings in an `Arc<str>`: one allocation, shared by every clone.
//!
//! Equality, ordering and hashing are those of the `str`, whatever the representation.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// An immutable, cheaply cloned string (see the module docs).
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Inline { len: u8, buf: [u8; Text::INLINE] },
    Shared(Arc<str>),
}

impl Text {
    /// Strings up to this many bytes are stored inline, without allocating.
    pub const INLINE: usize = 22;

    /// A text borrowing a static string: no allocation.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Repr::Static(s))
    }

    /// A copy of `s`: inline when it is short, otherwise one shared allocation.
    pub fn copy_from(s: &str) -> Text {
        match Self::inline(s) {
            Some(t) => t,
            None => Text(Repr::Shared(Arc::from(s))),
        }
    }

    /// A copy of `bytes` if they are UTF-8. A string short enough to be inline (most method
    /// names) is copied as bytes: no `str` is made of it (which costs a second check).
    #[inline]
    pub(crate) fn from_utf8(bytes: &[u8]) -> Option<Text> {
        if bytes.len() <= Self::INLINE && crate::codec::cursor::is_utf8(bytes) {
            let mut buf = [0u8; Self::INLINE];
            buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
            // len <= INLINE (22): it fits a u8.
            let len = bytes.len() as u8;
            return Some(Text(Repr::Inline { len, buf }));
        }
        std::str::from_utf8(bytes).ok().map(Text::copy_from)
    }

    fn inline(s: &str) -> Option<Text> {
        let len = u8::try_from(s.len())
            .ok()
            .filter(|&n| usize::from(n) <= Self::INLINE)?;
        let mut buf = [0u8; Self::INLINE];
        buf.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(Text(Repr::Inline { len, buf }))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            // The bytes were copied from a `str`, so this never falls back to "".
            Repr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Repr::Shared(s) => s,
        }
    }

    /// The string's bytes (no UTF-8 check, unlike [`Text::as_str`] on an inline text).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Static(s) => s.as_bytes(),
            Repr::Inline { len, buf } => buf.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Shared(s) => s.as_bytes(),
        }
    }

    /// The text as the encoder's shape ring takes a key: a static string by address.
    #[inline]
    pub(crate) fn key_ref(&self) -> crate::records::KeyRef<'_> {
        match &self.0 {
            Repr::Static(s) => crate::records::KeyRef::Static(s),
            _ => crate::records::KeyRef::Bytes(self.as_bytes()),
        }
    }

    /// True when both are the same shared allocation (for tests of key sharing).
    #[cfg(test)]
    pub(crate) fn same_allocation(&self, other: &Text) -> bool {
        match (&self.0, &other.0) {
            (Repr::Shared(a), Repr::Shared(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

/// The last long name a decoder made a [`Text`] of, kept so that the next message naming
/// it again shares it instead of copying it: a connection's calls of one method whose name
/// is longer than [`Text::INLINE`] (inline, no allocation, up to that) took an allocation
/// each for the name alone. One name of at most [`LastName::MAX`] bytes per decoder, used by
/// the lazy decoder's fast path (every call but the one that defines the frame's shape).
#[derive(Debug, Default, Clone)]
pub(crate) struct LastName(Option<Text>);

impl LastName {
    /// The longest name kept.
    pub(crate) const MAX: usize = 64;

    /// [`Text::from_utf8`], sharing the last long name when `bytes` are its bytes.
    #[inline]
    pub(crate) fn text(&mut self, bytes: &[u8]) -> Option<Text> {
        if bytes.len() <= Text::INLINE {
            return Text::from_utf8(bytes);
        }
        self.long(bytes)
    }

    #[cold]
    fn long(&mut self, bytes: &[u8]) -> Option<Text> {
        if bytes.len() > Self::MAX {
            return Text::from_utf8(bytes);
        }
        if let Some(last) = self.0.as_ref().filter(|t| t.as_bytes() == bytes) {
            return Some(last.clone());
        }
        let text = Text::from_utf8(bytes)?;
        self.0 = Some(text.clone());
        Some(text)
    }
}

impl Default for Text {
    fn default() -> Self {
        Text::from_static("")
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text::from_static(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        match Self::inline(&s) {
            Some(t) => t,
            None => Text(Repr::Shared(Arc::from(s))),
        }
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Text::copy_from(s)
    }
}

impl From<Box<str>> for Text {
    fn from(s: Box<str>) -> Self {
        Text::from(String::from(s))
    }
}

impl From<Arc<str>> for Text {
    fn from(s: Arc<str>) -> Self {
        Text(Repr::Shared(s))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.as_str().to_owned()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    /// Byte order, which is `str`'s order.
    fn cmp(&self, other: &Text) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for Text {
    /// Hashes as the `str` does, so a `HashMap<Text, _>` can be looked up with a `&str`.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl serde::de::Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, s: &str) -> Result<Text, E> {
                Ok(Text::copy_from(s))
            }
            fn visit_string<E>(self, s: String) -> Result<Text, E> {
                Ok(Text::from(s))
            }
        }
        d.deserialize_string(TextVisitor)
    }
}

/// What `args` formats to, cut after `max` bytes (at a character boundary) and marked `…`.
/// Formatting stops at the cut, so the `Debug` or `Display` of something a peer sent of
/// many MiB costs no more than its first `max` bytes: for error messages and logs that
/// quote a peer.
pub fn format_capped(max: usize, args: fmt::Arguments<'_>) -> String {
    let mut out = Capped {
        text: String::new(),
        max,
        cut: false,
    };
    // An error is the cut (`Capped` refuses the rest), or a `Display` that failed: either
    // way the text is what was written.
    let _ = fmt::Write::write_fmt(&mut out, args);
    if out.cut {
        out.text.push('…');
    }
    out.text
}

/// A `String` that takes at most `max` bytes, then refuses the rest (which stops the
/// formatting writing to it).
struct Capped {
    text: String,
    max: usize,
    cut: bool,
}

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.max.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        self.cut = true;
        Err(fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_representation_reads_and_compares_as_its_str() {
        let long = "a key much longer than twenty-two bytes";
        let texts = [
            Text::from("static"),
            Text::copy_from("inline"),
            Text::from(String::from("inline too")),
            Text::from(long.to_owned()),
            Text::copy_from(""),
            Text::copy_from(&"x".repeat(Text::INLINE)),
            Text::copy_from(&"é".repeat(Text::INLINE)),
        ];
        for t in &texts {
            assert_eq!(t.as_bytes(), t.as_str().as_bytes());
            assert_eq!(*t, *t.as_str());
            assert_eq!(t.clone(), Text::copy_from(t));
            assert_eq!(format!("{t:?}"), format!("{:?}", t.as_str()));
            assert_eq!(t.to_string(), t.as_str());
        }
        assert!(matches!(texts[3].0, Repr::Shared(_)));
        assert!(matches!(texts[1].0, Repr::Inline { .. }));
        assert!(matches!(texts[5].0, Repr::Inline { .. }));
        assert!(matches!(texts[6].0, Repr::Shared(_)));
        assert!(Text::from_static("a") < Text::copy_from("b"));
    }

    #[test]
    fn texts_from_bytes_are_utf8_only() {
        for s in [
            "",
            "increment",
            "é",
            &"x".repeat(Text::INLINE),
            &"x".repeat(40),
        ] {
            assert_eq!(Text::from_utf8(s.as_bytes()), Some(Text::copy_from(s)));
        }
        assert_eq!(Text::from_utf8(&[b'a', 0xff]), None);
        assert_eq!(Text::from_utf8(&[0xc3]), None);
        assert!(matches!(
            Text::from_utf8(b"name").map(|t| t.0),
            Some(Repr::Inline { .. })
        ));
    }

    #[test]
    fn the_last_long_name_is_shared_not_copied_again() {
        let mut names = LastName::default();
        let long = "incrementUnderAVeryLongName".as_bytes();
        let first = names.text(long).unwrap();
        let again = names.text(long).unwrap();
        assert_eq!(again, "incrementUnderAVeryLongName");
        assert!(
            again.same_allocation(&first),
            "the same name shares its text"
        );

        // Another long name takes its place; the first one is copied afresh after it.
        let other = names.text(b"anotherMethodWithALongName").unwrap();
        assert!(!other.same_allocation(&first));
        assert!(names
            .text(b"anotherMethodWithALongName")
            .unwrap()
            .same_allocation(&other));
        let back = names.text(long).unwrap();
        assert_eq!(back, first);
        assert!(!back.same_allocation(&first));

        // Short names stay inline and leave the kept one alone; names past MAX are not kept.
        assert!(matches!(names.text(b"inc").unwrap().0, Repr::Inline { .. }));
        assert!(names.text(long).unwrap().same_allocation(&back));
        let huge = "x".repeat(LastName::MAX + 1);
        let a = names.text(huge.as_bytes()).unwrap();
        assert!(!names.text(huge.as_bytes()).unwrap().same_allocation(&a));
        assert!(names.text(long).unwrap().same_allocation(&back));

        // Only UTF-8, as `Text::from_utf8`.
        let mut bad = long.to_vec();
        bad[0] = 0xff;
        assert_eq!(names.text(&bad), None);
    }

    #[test]
    fn hashes_like_str_for_lookups() {
        let mut map = HashMap::new();
        map.insert(Text::copy_from("k"), 1);
        map.insert(
            Text::from("a key much longer than twenty-two bytes".to_owned()),
            2,
        );
        assert_eq!(map.get("k"), Some(&1));
        assert_eq!(map.get("a key much longer than twenty-two bytes"), Some(&2));
    }
}
