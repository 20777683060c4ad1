// What each decoded value costs the decode walk (`decode_budget.ts`), in bytes of V8 heap: the
// figures it charges and the functions that add them up per value.

import { malformed } from "./decode_error.js";

// What each decoded thing costs, in bytes of V8 heap. Measured on Node 20 (V8 11.3, 64-bit
// tagged values, no pointer compression: the larger of the two layouts; Chrome's compressed
// pointers take about half of the pointer-sized parts) with `node --expose-gc
// bench/heap_costs.mjs`, which decodes 200,000 of each (fewer of the large ones) through
// msgpackr with these options and divides the heap's growth; rounded up, and where V8's
// layout varies (hash tables, strings) the larger case. docs/RELIABILITY.md has the figures.

/** Every value: its slot in the array, record or map that holds it. */
export const SLOT = 8;
/** A JS array (header and elements store; its elements charge their slots). */
export const ARRAY = 48;
/**
 * A record instance: the object's header, and room for at least 4 fields (an empty literal
 * keeps room for 4); each field is the slot its value charges.
 */
const RECORD = 24;
/** Fields an object keeps room for however few it has. */
const MIN_FIELDS = 4;
/**
 * A field of an object in dictionary mode (past V8's 1020 fast properties, or in the first
 * instances msgpackr builds key by key): 3 words an entry in a hash table 1.5 to 3 times the
 * size (measured 40 to 66).
 */
const DICT_FIELD = 72;
/** Keys past which V8 keeps an object's properties in a dictionary. */
const MAX_FAST_FIELDS = 1020;
/** Keys up to which an object built key by key stays fast. */
const SLOW_FAST_FIELDS = 16;
/** msgpackr builds the first three instances of a definition key by key (the definition's own and two more). */
export const SLOW_INSTANCES = 2;
/**
 * A definition: the key array msgpackr reads and the copy it keeps, and the reader closure.
 * (What it keeps is bounded by the record table too; a definition another overwrites is
 * garbage, so this charges what one holds while it is read.)
 */
export const DEFINITION = 2 * ARRAY + 64;
/** Per key of a definition: its slot in both key arrays (the key itself is charged as a string). */
export const DEFINITION_KEY = 16;
/** A string: header and rounding; then 2 bytes per UTF-8 byte (two-byte strings, U+FFFD for bad bytes). */
const STRING = 24;
/** A number that may be a heap number (float32/64, 32-bit ints outside the small-integer range). */
export const NUMBER = 16;
/** A BigInt of 64 bits (`cf`, `d3`). */
export const BIGINT = 24;
/** A JS Map (with its first four entries)... */
export const MAP = 192;
/**
 * ...and per entry its hash-table room besides the slots its key and value charge (measured
 * 17 in all at 100 entries; up to half as much again just after the table grew).
 */
export const MAP_ENTRY = 8;
/** A CapRef (its id may be a heap number). */
const CAPREF = 48;
/** A Uint8Array view of the message (bin 8/16/32: msgpackr does not copy). */
export const BIN = 104;
/** A typed array, ArrayBuffer or DataView of ext 0x74, besides the copy of its bytes. */
const TYPED = 192;
/** A Date. */
const DATE = 104;
/** A Set, besides the array it is built from... */
const SET = 160;
/** ...and per element its hash-table room (besides the slot the element charges; measured 12 in all). */
const SET_ELEMENT = 16;
/** An Error, with the stack trace V8 captures for it (measured 750). */
const ERROR = 1024;
/** A RegExp, besides its pattern and flags strings. */
const REGEXP = 256;

/** Element sizes of the typed-array subtypes of ext 0x74 (PROTOCOL §3.2); 0: unknown. */
const TYPED_SIZES = new Uint8Array(18);
TYPED_SIZES.set([1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8], 0);
TYPED_SIZES[0x10] = 1; // ArrayBuffer
TYPED_SIZES[0x11] = 1; // DataView

/**
 * A record instance of `k` fields besides their values' slots; `building`: built key by key
 * (the first instances).
 */
export function instance(k: number, building: boolean): number {
  const dict = k > MAX_FAST_FIELDS || (building && k > SLOW_FAST_FIELDS);
  return RECORD + (dict ? (DICT_FIELD - SLOT) * k : SLOT * Math.max(MIN_FIELDS - k, 0));
}

/** A string of `len` UTF-8 bytes. */
export function string(len: number): number {
  return len === 0 ? 0 : STRING + 2 * len;
}

/**
 * What an extension of type `typ` with `len` bytes of data at `at` costs; -1 for a marker
 * (Set, Error, RegExp), whose array follows. Throws on an extension PROTOCOL §3.2 does not list.
 */
export function extension(typ: number, b: Uint8Array, at: number, len: number): number {
  switch (typ) {
    case 0x00: // undefined
      return 0;
    case 0x50: {
      // CapRef: an LEB128 varint of at most 5 bytes, ending at its last byte, below 2^32.
      if (len === 0 || len > 5) throw malformed(`CapRef varint of ${len} bytes`);
      let id = 0;
      for (let i = 0, scale = 1; i < len; i++, scale *= 128) {
        const v = b[at + i]!;
        if ((v & 0x80) === 0 !== (i === len - 1)) throw malformed("CapRef varint does not end at its last byte");
        id += (v & 0x7f) * scale;
      }
      if (id > 0xffff_ffff) throw malformed(`CapRef id ${id} is not below 2^32`);
      return CAPREF;
    }
    case 0x74: {
      const size = len > 0 ? (TYPED_SIZES[b[at]!] ?? 0) : 0;
      if (size === 0 || (len - 1) % size !== 0) throw malformed("bad typed array");
      return TYPED + (len - 1);
    }
    case 0xff:
      // A timestamp: 4, 8 or 12 bytes; any other length is msgpackr's invalid Date (it
      // writes one as `d4 ff ff` and reads every other length as `new Date('invalid')`),
      // as the Rust decoder's Timestamp::INVALID. Either way one Date; its data is not kept.
      return DATE;
    case 0x73: // Set
    case 0x65: // Error
    case 0x78: // RegExp
      return -1;
    default:
      throw malformed(`unknown extension type 0x${typ.toString(16)}`);
  }
}

/** A marker's own object. */
function marker(typ: number): number {
  return typ === 0x73 ? SET : typ === 0x65 ? ERROR : REGEXP;
}

/** What a Set, Error or RegExp marker of `typ` costs with the array of `count` items after it. */
export function markerCost(typ: number, count: number): number {
  return marker(typ) + ARRAY + (typ === 0x73 ? SET_ELEMENT * count : 0);
}
