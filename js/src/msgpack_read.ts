// Reading msgpack headers from raw bytes, for the decode walk (`decode_budget.ts`): lengths,
// array counts, and the array a Set, Error or RegExp marker must be followed by.

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
