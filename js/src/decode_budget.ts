// The decode budget (PROTOCOL §13.11): before msgpackr builds anything, one walk over the
// message's bytes checks that it is well formed, nests no deeper than the depth limit, and
// would not take more heap once decoded than `base + factor × its size`. It is the web
// client's port of the Rust decoder's frame check (`Decoder::decode_frame_lazy` in
// crates/bunite-wire, docs/RELIABILITY.md "Decoding within a budget").
//
// The walk reads exactly what msgpackr 1.12 reads with the connection's options (records,
// sequential, moreTypes; see codec.ts), token by token, with an explicit stack instead of
// recursion, and keeps its own copy of the record slot table: per slot the number of keys
// of the record defined there. Definitions inside the message update a scratch copy of it, so a refused message
// leaves the table as it was; `FrameDecoder` sets the kept copy from msgpackr's own table
// (`RecordModel.sync`) after every message that defines records or that msgpackr failed on,
// the only ones that change it, so the two never drift apart.
//
// It refuses, as the Rust decoder does, some things msgpackr would read: a reference to a
// slot never defined (msgpackr returns the byte as an integer; PROTOCOL §3.3 says it is an
// error), definitions whose keys are not strings or repeat a key (a JS object keeps the last
// of two, the Rust peer's records the first), msgpackr's two-byte definitions `d5 72 id high`
// (the Rust decoder reads definitions only as `d4 72 id`), the byte 0xc1, a timestamp that is not 4,
// 8 or 12 bytes, a Set, Error or RegExp marker not followed by an array of the right length,
// and extension types PROTOCOL §3.2 does not list (msgpackr also knows BigInt 0x42, bundled
// strings 0x62 and the structured-clone pointers 0x69/0x70, which the reference peer never
// sends). It checks CapRef varints and typed-array lengths as msgpackr's builders would, so
// that msgpackr never fails on what the walk admits (but for a RegExp's pattern and flags,
// which only the RegExp constructor knows).

/** Why a message was refused before it was decoded. */
export type DecodeErrorKind =
  /** It would take more heap once decoded than its budget (PROTOCOL §13.11). */
  | "over_budget"
  /** Values nest deeper than the depth limit (PROTOCOL §4). */
  | "too_deep"
  /** The record definitions would keep more than the record table's bound. */
  | "record_table_full"
  /** Not one value msgpackr with the connection's options reads: a bad or unknown token, a cut-off, trailing bytes. */
  | "malformed";

/** A message refused by the decoder: a protocol error (the connection answers with goaway). */
export class DecodeError extends Error {
  constructor(
    readonly kind: DecodeErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "DecodeError";
  }
}

/** How much heap a message of `n` bytes may take once decoded: `base + factor × n`. */
export interface DecodeBudget {
  base: number;
  factor: number;
}

/**
 * The defaults, as the Rust peer's `DecodeLimits`: 4 MiB that every message may take whatever
 * its size (small messages are never refused), and 3 bytes per byte on the wire (a message and
 * what it decodes into stay within about 4× its size: a maximal 64 MiB message within 260 MiB).
 */
export const DEFAULT_DECODE_BUDGET: DecodeBudget = { base: 4 * 1024 * 1024, factor: 3 };

// What each decoded thing costs, in bytes of V8 heap. Measured on Node 20 (V8 11.3, 64-bit
// tagged values, no pointer compression: the larger of the two layouts; Chrome's compressed
// pointers take about half of the pointer-sized parts) with `node --expose-gc
// bench/heap_costs.mjs`, which decodes 200,000 of each (fewer of the large ones) through
// msgpackr with these options and divides the heap's growth; rounded up, and where V8's
// layout varies (hash tables, strings) the larger case. docs/RELIABILITY.md has the figures.

/** Every value: its slot in the array, record or map that holds it. */
const SLOT = 8;
/** A JS array (header and elements store; its elements charge their slots). */
const ARRAY = 48;
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
const SLOW_INSTANCES = 2;
/**
 * A definition: the key array msgpackr reads and the copy it keeps, and the reader closure.
 * (What it keeps is bounded by the record table too; a definition another overwrites is
 * garbage, so this charges what one holds while it is read.)
 */
const DEFINITION = 2 * ARRAY + 64;
/** Per key of a definition: its slot in both key arrays (the key itself is charged as a string). */
const DEFINITION_KEY = 16;
/** A string: header and rounding; then 2 bytes per UTF-8 byte (two-byte strings, U+FFFD for bad bytes). */
const STRING = 24;
/** A number that may be a heap number (float32/64, 32-bit ints outside the small-integer range). */
const NUMBER = 16;
/** A BigInt of 64 bits (`cf`, `d3`). */
const BIGINT = 24;
/** A JS Map (with its first four entries)... */
const MAP = 192;
/**
 * ...and per entry its hash-table room besides the slots its key and value charge (measured
 * 17 in all at 100 entries; up to half as much again just after the table grew).
 */
const MAP_ENTRY = 8;
/** A CapRef (its id may be a heap number). */
const CAPREF = 48;
/** A Uint8Array view of the message (bin 8/16/32: msgpackr does not copy). */
const BIN = 104;
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

/** Decodes definition keys (bad bytes become U+FFFD), to find a key given twice. */
const utf8 = new TextDecoder();

/** The record slots of PROTOCOL §3.3. */
export const SLOTS = 64;

/** What the walk needs of the decoder's record table, kept in step with msgpackr's. */
export class RecordModel {
  /** Keys of the record defined in each slot; -1: none. */
  private readonly keys = new Int32Array(SLOTS).fill(-1);
  /** The table as the message being walked changes it (copied from `keys` at its first definition). */
  private readonly scratch = new Int32Array(SLOTS);
  /**
   * Per slot, instances msgpackr still builds key by key after its definition. An estimate
   * only (a refused message may have counted some down), so it lives outside both tables.
   */
  private readonly slow = new Uint8Array(SLOTS);
  /** One entry per open container: the values left in the one around it. */
  private readonly stack: Float64Array;

  constructor(
    private readonly maxDepth: number,
    private readonly budget: DecodeBudget,
  ) {
    this.stack = new Float64Array(maxDepth + 1);
  }

  /** Slot `i` now holds `def` (msgpackr's key array, or nothing). */
  sync(i: number, def: unknown): void {
    this.keys[i] = Array.isArray(def) ? def.length : -1;
  }

  /**
   * Walks the one value of `b`; throws a `DecodeError` if it is malformed, nests too deep or
   * is over its budget. Nothing is allocated but the error and, per definition, its keys. Returns whether the message
   * defines records (if not, decoding it leaves msgpackr's table as it was).
   */
  walk(b: Uint8Array): boolean {
    const n = b.length;
    let keys = this.keys;
    let defines = false;
    const slow = this.slow;
    const stack = this.stack;
    const maxDepth = this.maxDepth;
    const budget = this.budget.base + this.budget.factor * n;
    let left = budget;
    let depth = 0;
    let pending = 1; // values still to read in the innermost open container
    let pos = 0;
    for (;;) {
      while (pending === 0) {
        if (depth === 0) {
          if (pos !== n) throw malformed(`${n - pos} trailing bytes after the value`);
          return defines;
        }
        pending = stack[--depth]!;
      }
      pending--;
      if (pos >= n) throw cutOff();
      const t = b[pos++]!;
      let cost = SLOT;
      let count = -1; // a container's values, -1 for a scalar
      if (t < 0x40 || t >= 0xe0) {
        // fixint
      } else if (t < 0x80) {
        const slot = t & 0x3f;
        const k = keys[slot]!;
        if (k < 0) throw malformed(`reference to the undefined record slot 0x${t.toString(16)}`);
        const building = slow[slot]! > 0;
        if (building) slow[slot]!--;
        cost += instance(k, building);
        count = k;
      } else if (t < 0x90) {
        const e = t & 0x0f;
        cost += MAP + MAP_ENTRY * e;
        count = 2 * e;
      } else if (t < 0xa0) {
        cost += ARRAY;
        count = t & 0x0f;
      } else if (t < 0xc0) {
        const len = t & 0x1f;
        pos += len;
        cost += string(len);
      } else {
        switch (t) {
          case 0xc0: // nil
          case 0xc2: // false
          case 0xc3: // true
            break;
          case 0xc4:
          case 0xc5:
          case 0xc6: {
            const h = t === 0xc4 ? 1 : t === 0xc5 ? 2 : 4;
            if (pos + h > n) throw cutOff();
            pos += h + readLength(b, pos, h);
            cost += BIN;
            break;
          }
          case 0xc7:
          case 0xc8:
          case 0xc9: {
            const h = t === 0xc7 ? 1 : t === 0xc8 ? 2 : 4;
            if (pos + h + 1 > n) throw cutOff();
            const len = readLength(b, pos, h);
            pos += h;
            const typ = b[pos++]!;
            if (typ === 0x72) throw malformed("record definition in an ext of another size");
            pos += len;
            if (pos > n) throw cutOff();
            const ext = extension(typ, b, pos - len, len);
            if (ext >= 0) {
              cost += ext;
            } else {
              count = markerItems(b, pos, typ, n);
              cost += markerCost(typ, count);
              pos += arrayHeader(b[pos]!);
            }
            break;
          }
          case 0xca:
            pos += 4;
            cost += NUMBER;
            break;
          case 0xcb:
            pos += 8;
            cost += NUMBER;
            break;
          case 0xcc:
          case 0xd0:
            pos += 1;
            break;
          case 0xcd:
          case 0xd1:
            pos += 2;
            break;
          case 0xce:
          case 0xd2:
            pos += 4;
            cost += NUMBER;
            break;
          case 0xcf:
          case 0xd3:
            pos += 8;
            cost += BIGINT;
            break;
          case 0xd4:
          case 0xd5:
          case 0xd6:
          case 0xd7:
          case 0xd8: {
            const len = 1 << (t - 0xd4);
            if (pos + 1 + len > n) throw cutOff();
            const typ = b[pos++]!;
            if (typ === 0x72 && len === 1) {
              // A record definition, `d4 72 id`: the key array and then the first instance's
              // values follow.
              const slot = b[pos++]! & 0x3f;
              if (pos >= n) throw cutOff();
              const kh = arrayHeader(b[pos]!);
              if (kh === 0) throw malformed("record definition keys are not an array of strings");
              if (pos + kh > n) throw cutOff();
              const k = readCount(b, pos, kh);
              pos += kh;
              if (k > n - pos) throw cutOff();
              cost += DEFINITION + DEFINITION_KEY * k;
              const seen = new Set<string>();
              for (let i = 0; i < k; i++) {
                if (pos >= n) throw cutOff();
                const s = b[pos++]!;
                let len: number;
                if (s >= 0xa0 && s < 0xc0) len = s & 0x1f;
                else if (s >= 0xd9 && s <= 0xdb) {
                  const h = 1 << (s - 0xd9);
                  if (pos + h > n) throw cutOff();
                  len = readLength(b, pos, h);
                  pos += h;
                } else throw malformed("record definition keys are not an array of strings");
                if (pos + len > n) throw cutOff();
                const key = utf8.decode(b.subarray(pos, pos + len));
                if (seen.has(key)) throw malformed(`record definition repeats the key ${JSON.stringify(key.slice(0, 32))}`);
                seen.add(key);
                pos += len;
                cost += string(len);
              }
              if (pos > n) throw cutOff();
              if (!defines) {
                // The first definition: from here on the walk reads and writes its own copy.
                defines = true;
                this.scratch.set(keys);
                keys = this.scratch;
              }
              keys[slot] = k;
              slow[slot] = SLOW_INSTANCES;
              cost += instance(k, true);
              count = k;
            } else if (typ === 0x72) {
              throw malformed("record definition in an ext of another size");
            } else {
              pos += len;
              const ext = extension(typ, b, pos - len, len);
              if (ext >= 0) {
                cost += ext;
              } else {
                count = markerItems(b, pos, typ, n);
                cost += markerCost(typ, count);
                pos += arrayHeader(b[pos]!);
              }
            }
            break;
          }
          case 0xd9:
          case 0xda:
          case 0xdb: {
            const h = 1 << (t - 0xd9);
            if (pos + h > n) throw cutOff();
            const len = readLength(b, pos, h);
            pos += h + len;
            cost += string(len);
            break;
          }
          case 0xdc:
          case 0xdd: {
            const h = t === 0xdc ? 2 : 4;
            if (pos + h > n) throw cutOff();
            count = readLength(b, pos, h);
            pos += h;
            cost += ARRAY;
            break;
          }
          case 0xde:
          case 0xdf: {
            const h = t === 0xde ? 2 : 4;
            if (pos + h > n) throw cutOff();
            const e = readLength(b, pos, h);
            pos += h;
            cost += MAP + MAP_ENTRY * e;
            count = 2 * e;
            break;
          }
          default: // 0xc1
            throw malformed(`reserved byte 0x${t.toString(16)}`);
        }
      }
      if (pos > n) throw cutOff();
      // Every value takes at least one byte.
      if (count > n - pos) throw cutOff();
      left -= cost;
      if (left < 0) {
        throw new DecodeError(
          "over_budget",
          `over the decode budget: a message of ${n} bytes may take ${budget} bytes once decoded, and by byte ${pos} it takes more`,
        );
      }
      if (count >= 0) {
        if (depth >= maxDepth) throw tooDeep(maxDepth);
        if (count > 0) {
          stack[depth++] = pending;
          pending = count;
        }
      }
    }
  }
}

/**
 * A record instance of `k` fields besides their values' slots; `building`: built key by key
 * (the first instances).
 */
function instance(k: number, building: boolean): number {
  const dict = k > MAX_FAST_FIELDS || (building && k > SLOW_FAST_FIELDS);
  return RECORD + (dict ? (DICT_FIELD - SLOT) * k : SLOT * Math.max(MIN_FIELDS - k, 0));
}

/** A string of `len` UTF-8 bytes. */
function string(len: number): number {
  return len === 0 ? 0 : STRING + 2 * len;
}

/**
 * What an extension of type `typ` with `len` bytes of data at `at` costs; -1 for a marker
 * (Set, Error, RegExp), whose array follows. Throws on an extension PROTOCOL §3.2 does not list.
 */
function extension(typ: number, b: Uint8Array, at: number, len: number): number {
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
    case 0xff: // timestamp
      if (len !== 4 && len !== 8 && len !== 12) throw malformed(`timestamp of ${len} bytes`);
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
function markerCost(typ: number, count: number): number {
  return marker(typ) + ARRAY + (typ === 0x73 ? SET_ELEMENT * count : 0);
}

/**
 * The number of items of the array that must follow a marker at `pos` (a Set's any, an
 * Error's 2 or 3, a RegExp's 2, as the Rust decoder reads them).
 */
function markerItems(b: Uint8Array, pos: number, typ: number, n: number): number {
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
function arrayHeader(t: number): number {
  return t >= 0x90 && t < 0xa0 ? 1 : t === 0xdc ? 3 : t === 0xdd ? 5 : 0;
}

/** The count of the array whose `h`-byte header is at `pos`. */
function readCount(b: Uint8Array, pos: number, h: number): number {
  return h === 1 ? b[pos]! & 0x0f : readLength(b, pos + 1, h - 1);
}

/** A big-endian unsigned length of `h` (1, 2 or 4) bytes at `pos`, which the caller checked are there. */
function readLength(b: Uint8Array, pos: number, h: number): number {
  if (h === 1) return b[pos]!;
  if (h === 2) return (b[pos]! << 8) | b[pos + 1]!;
  return b[pos]! * 0x1000000 + ((b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!);
}

function malformed(message: string): DecodeError {
  return new DecodeError("malformed", message);
}

function cutOff(): DecodeError {
  return malformed("the message ends inside a value");
}

function tooDeep(limit: number): DecodeError {
  return new DecodeError("too_deep", `value nested deeper than ${limit}`);
}
