// Reading msgpack from raw bytes, for the decode walk (`decode_budget.ts`): lengths, array
// counts, the array a Set, Error or RegExp marker must be followed by, and whether a string's
// bytes are UTF-8.

import { cutOff, malformed } from "./decode_error.js";

/**
 * The number of items of the array that must follow a marker at `pos` (a Set's any, an
 * Error's 2 or 3, a RegExp's 2, as the Rust decoder reads them).
 */
export function markerItems(b: Uint8Array, pos: number, typ: number, n: number): number {
  if (pos >= n) throw cutOff();
  const h = arrayHeader(b[pos]!);
  if (h === 0) throw malformed(`extension 0x${typ.toString(16)} not followed by an array`);
  if (pos + h > n) throw cutOff();
  const k = readCount(b, pos, h);
  const ok = typ === 0x73 || (typ === 0x65 ? k === 2 || k === 3 : k === 2);
  if (!ok) throw malformed(`extension 0x${typ.toString(16)} followed by an array of ${k}`);
  return k;
}

/** The header size of an array starting with byte `t`; 0 if it is not an array. */
export function arrayHeader(t: number): number {
  return t >= 0x90 && t < 0xa0 ? 1 : t === 0xdc ? 3 : t === 0xdd ? 5 : 0;
}

/** The count of the array whose `h`-byte header is at `pos`. */
export function readCount(b: Uint8Array, pos: number, h: number): number {
  return h === 1 ? b[pos]! & 0x0f : readLength(b, pos + 1, h - 1);
}

/** A big-endian unsigned length of `h` (1, 2 or 4) bytes at `pos`, which the caller checked are there. */
export function readLength(b: Uint8Array, pos: number, h: number): number {
  if (h === 1) return b[pos]!;
  if (h === 2) return (b[pos]! << 8) | b[pos + 1]!;
  return b[pos]! * 0x1000000 + ((b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!);
}

/**
 * Whether `b[pos..end)` is UTF-8 as Rust's `str::from_utf8` reads it (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), without making a string of it: msgpackr
 * decodes the string afterwards, and a decode here would be a second one. ASCII, most of what
 * a frame holds, takes one comparison a byte, or a word in a long string (`asciiWords`).
 */
export function isUtf8(b: Uint8Array, pos: number, end: number): boolean {
  if (end - pos >= WORDS_FROM) pos = asciiWords(b, pos, end);
  while (pos < end) {
    const c = b[pos]!;
    if (c < 0x80) {
      pos++;
      continue;
    }
    if (c < 0xc2 || c > 0xf4) return false; // a continuation byte, an overlong 2-byte lead, or past U+10FFFF
    const k = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (pos + k > end) return false;
    const c1 = b[pos + 1]!;
    // The second byte's range depends on the lead: E0 (no overlong), ED (no surrogate), F0 (no overlong), F4 (≤ U+10FFFF).
    const lo = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf;
    if (c1 < lo || c1 > hi) return false;
    for (let i = 2; i < k; i++) if ((b[pos + i]! & 0xc0) !== 0x80) return false;
    pos += k;
  }
  return true;
}

/** The length from which a string's leading ASCII is checked four bytes at a time. */
const WORDS_FROM = 64;

/**
 * Past the ASCII that `b[pos..end)` starts with, four bytes at a time once aligned: where a
 * byte from 0x80 may be (at most three bytes before it), or the last up to three bytes. A
 * byte loop took 0.8 ns a byte, 16 times what msgpackr takes to decode a 64 KiB ASCII string;
 * words take about 0.1 ns.
 */
function asciiWords(b: Uint8Array, pos: number, end: number): number {
  for (; pos < end && ((b.byteOffset + pos) & 3) !== 0; pos++) if (b[pos]! >= 0x80) return pos;
  const n = (end - pos) >>> 2;
  const words = new Uint32Array(b.buffer, b.byteOffset + pos, n);
  let i = 0;
  // Eight words to a test: a third of the time of one word to a test.
  for (; i + 8 <= n; i += 8) {
    const any = words[i]! | words[i + 1]! | words[i + 2]! | words[i + 3]! | words[i + 4]! | words[i + 5]! | words[i + 6]! | words[i + 7]!;
    if ((any & 0x80808080) !== 0) break;
  }
  while (i < n && (words[i]! & 0x80808080) === 0) i++;
  return pos + 4 * i;
}
