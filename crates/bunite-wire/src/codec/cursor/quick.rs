//! First-byte fast paths: the forms a frame's fields nearly always take, read in one step.
//! Each reads its token only when it has that form and is whole and valid; otherwise it
//! reads nothing and gives `None`, and the caller takes the general path, which reports
//! whatever is wrong exactly as always.

use super::Cursor;

impl<'a> Cursor<'a> {
    /// Passes over the next byte (one just peeked).
    #[inline]
    pub(crate) fn skip_byte(&mut self) {
        self.pos = (self.pos + 1).min(self.buf.len());
    }

    /// Consumes `b` if it is the next byte.
    #[inline]
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        let next = self.peek() == Some(b);
        if next {
            self.pos += 1;
        }
        next
    }

    /// `undefined` (`d4 00`, then its one data byte, whatever it is).
    #[inline]
    pub(crate) fn undefined(&mut self) -> bool {
        let found = matches!(self.buf.get(self.pos..), Some([0xd4, 0x00, _, ..]));
        if found {
            self.pos += 3;
        }
        found
    }

    /// An unsigned integer in a positive fixint or `cc`/`cd`/`ce`/`cf`.
    #[inline]
    pub(crate) fn uint(&mut self) -> Option<u64> {
        let rest = self.buf.get(self.pos..)?;
        let (n, len) = match *rest {
            [b @ 0x00..=0x3f, ..] => (u64::from(b), 1),
            [0xcc, b, ..] => (u64::from(b), 2),
            [0xcd, a, b, ..] => (u64::from(u16::from_be_bytes([a, b])), 3),
            [0xce, a, b, c, d, ..] => (u64::from(u32::from_be_bytes([a, b, c, d])), 5),
            [0xcf, a, b, c, d, e, f, g, h, ..] => (u64::from_be_bytes([a, b, c, d, e, f, g, h]), 9),
            _ => return None,
        };
        self.pos += len;
        Some(n)
    }

    /// A signed integer in a fixint or `cc`/`cd`/`ce` or `d0`/`d1`/`d2`.
    #[inline]
    pub(crate) fn int(&mut self) -> Option<i64> {
        let rest = self.buf.get(self.pos..)?;
        let (n, len) = match *rest {
            [b @ (0x00..=0x3f | 0xe0..=0xff), ..] => (i64::from(b as i8), 1),
            [0xcc, b, ..] => (i64::from(b), 2),
            [0xcd, a, b, ..] => (i64::from(u16::from_be_bytes([a, b])), 3),
            [0xce, a, b, c, d, ..] => (i64::from(u32::from_be_bytes([a, b, c, d])), 5),
            [0xd0, b, ..] => (i64::from(b as i8), 2),
            [0xd1, a, b, ..] => (i64::from(i16::from_be_bytes([a, b])), 3),
            [0xd2, a, b, c, d, ..] => (i64::from(i32::from_be_bytes([a, b, c, d])), 5),
            _ => return None,
        };
        self.pos += len;
        Some(n)
    }

    /// A string in a fixstr or `d9`, valid UTF-8.
    #[inline]
    pub(crate) fn short_str(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let s = self.short_bytes().and_then(|b| std::str::from_utf8(b).ok());
        if s.is_none() {
            self.pos = start;
        }
        s
    }

    /// The bytes of a string in a fixstr or `d9`, not yet checked as UTF-8.
    #[inline]
    pub(crate) fn short_bytes(&mut self) -> Option<&'a [u8]> {
        let rest = self.buf.get(self.pos..)?;
        let (n, header) = match *rest {
            [b @ 0xa0..=0xbf, ..] => (usize::from(b & 0x1f), 1),
            [0xd9, n, ..] => (usize::from(n), 2),
            _ => return None,
        };
        let bytes = rest.get(header..header + n)?;
        self.pos += header + n;
        Some(bytes)
    }

    /// The length of an array in a fixarray or `dc`.
    #[inline]
    pub(crate) fn array_len(&mut self) -> Option<usize> {
        let rest = self.buf.get(self.pos..)?;
        let (n, len) = match *rest {
            [b @ 0x90..=0x9f, ..] => (usize::from(b & 0x0f), 1),
            [0xdc, a, b, ..] => (usize::from(u16::from_be_bytes([a, b])), 3),
            _ => return None,
        };
        self.pos += len;
        Some(n)
    }

    /// The slot of a record reference (`0x40..=0x7f`), not read.
    #[inline]
    pub(crate) fn peek_ref(&self) -> Option<u8> {
        self.peek().filter(|b| (0x40..=0x7f).contains(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_reads_take_only_their_forms() {
        let mut c = Cursor::new(&[0x05, 0xcc, 0x80, 0xcd, 0x01, 0x00, 0xd0, 0x80, 0xff]);
        assert_eq!(c.uint(), Some(5));
        assert_eq!(c.uint(), Some(0x80));
        assert_eq!(c.int(), Some(0x100));
        assert_eq!(c.uint(), None);
        assert_eq!(c.int(), Some(-128));
        assert_eq!(c.int(), Some(-1));
        assert!(c.at_end());
        // Cut short: nothing read.
        let mut c = Cursor::new(&[0xce, 0x01, 0x02]);
        assert_eq!(c.uint(), None);
        assert_eq!(c.pos(), 0);
        let mut c = Cursor::new(&[0xa2, b'o', 0xff, 0xa1]);
        assert_eq!(c.short_str(), None);
        assert_eq!(c.pos(), 0);
        let mut c = Cursor::new(&[0xd9, 0x02, b'o', b'k', 0xd4, 0x00, 0x07, 0x93]);
        assert_eq!(c.short_str(), Some("ok"));
        assert!(c.undefined());
        assert_eq!(c.array_len(), Some(3));
        assert!(!c.undefined());
        assert!(!c.eat(0x40));
    }

    #[test]
    fn the_utf8_check_agrees_with_str_at_every_length() {
        for n in 0..40 {
            let ascii = vec![b'a'; n];
            assert!(super::super::is_utf8(&ascii));
            for at in 0..n {
                let mut bad = ascii.clone();
                bad[at] = 0xff;
                assert!(!super::super::is_utf8(&bad), "{n} {at}");
                let mut e = ascii.clone();
                e.splice(at..at + 1, "é".bytes());
                assert!(super::super::is_utf8(&e));
                e.truncate(at + 1);
                assert_eq!(super::super::is_utf8(&e), std::str::from_utf8(&e).is_ok());
            }
        }
    }
}
