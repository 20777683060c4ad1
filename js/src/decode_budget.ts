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
// It refuses, as the Rust decoder does, some things msgpackr would read: a string that is not
// UTF-8 (msgpackr reads U+FFFD or stray code units; PROTOCOL §3.1 says it is a decode error),
// a reference to a slot never defined (msgpackr returns the byte as an integer; PROTOCOL §3.3 says it is an
// error), definitions whose keys are not strings or repeat a key (a JS object keeps the last
// of two, the Rust peer's records the first), msgpackr's two-byte definitions `d5 72 id high`
// (the Rust decoder reads definitions only as `d4 72 id`), the byte 0xc1, a Set, Error or RegExp
// marker not followed by an array of the right length,
// and extension types PROTOCOL §3.2 does not list (msgpackr also knows BigInt 0x42, bundled
// strings 0x62 and the structured-clone pointers 0x69/0x70, which the reference peer never
// sends). It checks CapRef varints and typed-array lengths as msgpackr's builders would, so
// that msgpackr never fails on what the walk admits (but for a RegExp's pattern and flags,
// which only the RegExp constructor knows). A timestamp (ext -1) it admits as msgpackr does,
// of any length: one that is not 4, 8 or 12 bytes is msgpackr's invalid Date, `d4 ff ff` as
// msgpackr writes it, which the Rust decoder reads too (`Timestamp::INVALID`). It admits as
// well nanos of a second or more in the 8- and 12-byte forms, which msgpackr reads (adding
// them to the time) and never writes, and the Rust decoder refuses (BadTimestamp).
//
// The costs are in heap_costs.ts, the reading of msgpack headers in msgpack_read.ts, the
// errors in decode_error.ts.

import { DecodeError, cutOff, malformed, notUtf8, tooDeep } from "./decode_error.js";
import { ARRAY, BIGINT, BIN, DEFINITION, DEFINITION_KEY, MAP, MAP_ENTRY, NUMBER, SLOT, SLOW_INSTANCES, extension, instance, markerCost, string } from "./heap_costs.js";
import { arrayHeader, isUtf8, markerItems, readCount, readLength } from "./msgpack_read.js";

export { DecodeError, type DecodeErrorKind } from "./decode_error.js";

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

/**
 * Decodes definition keys, to find a key given twice: `fatal`, so that bad bytes are refused
 * (as every string is) by the one decode the walk makes of them; `ignoreBOM`, so that a
 * leading U+FEFF stays part of its key (msgpackr keeps it: "\ufeffa" and "a" are two keys).
 */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A definition key, decoded; a `DecodeError` if it is not UTF-8. */
function decodeKey(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw notUtf8();
  }
}

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

  // The walk's cursor. Each step reads one header and sets what it found here: fields, not
  // locals, so that the steps are plain methods and nothing is allocated per value.
  /** The slot table as the message changes it: `keys`, then `scratch` from its first definition. */
  private table: Int32Array;
  /** Whether the message defines records. */
  private defines = false;
  /** The heap the value being read takes once decoded, its slot included. */
  private cost = 0;
  /** The values of the container the value opens; -1 for a scalar. */
  private count = -1;

  constructor(
    private readonly maxDepth: number,
    private readonly budget: DecodeBudget,
  ) {
    this.stack = new Float64Array(maxDepth + 1);
    this.table = this.keys;
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
    const stack = this.stack;
    const maxDepth = this.maxDepth;
    const budget = this.budget.base + this.budget.factor * n;
    this.table = this.keys;
    this.defines = false;
    let left = budget;
    let depth = 0;
    let pending = 1; // values still to read in the innermost open container
    let pos = 0;
    for (;;) {
      while (pending === 0) {
        if (depth === 0) {
          if (pos !== n) throw malformed(`${n - pos} trailing bytes after the value`);
          return this.defines;
        }
        pending = stack[--depth]!;
      }
      pending--;
      if (pos >= n) throw cutOff();
      pos = this.value(b, pos);
      if (pos > n) throw cutOff();
      const count = this.count;
      // Every value takes at least one byte.
      if (count > n - pos) throw cutOff();
      left -= this.cost;
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

  /** Reads the header of the value at `pos` (sets `cost` and `count`); returns where its contents start. */
  private value(b: Uint8Array, pos: number): number {
    const t = b[pos++]!;
    this.cost = SLOT;
    this.count = -1;
    if (t < 0x40 || t >= 0xe0) return pos; // fixint
    if (t < 0x80) return this.reference(t, pos);
    if (t < 0x90) return this.map(t & 0x0f, pos);
    if (t < 0xa0) return this.array(t & 0x0f, pos);
    if (t < 0xc0) return this.str(b, t & 0x1f, pos);
    return this.header(b, t, pos);
  }

  /** An instance of the record in slot `t & 0x3f`: its values follow. */
  private reference(t: number, pos: number): number {
    const slot = t & 0x3f;
    const k = this.table[slot]!;
    if (k < 0) throw malformed(`reference to the undefined record slot 0x${t.toString(16)}`);
    const building = this.slow[slot]! > 0;
    if (building) this.slow[slot]!--;
    this.cost += instance(k, building);
    this.count = k;
    return pos;
  }

  private map(entries: number, pos: number): number {
    this.cost += MAP + MAP_ENTRY * entries;
    this.count = 2 * entries;
    return pos;
  }

  private array(items: number, pos: number): number {
    this.cost += ARRAY;
    this.count = items;
    return pos;
  }

  /** A string of `len` bytes at `pos`: refused unless UTF-8, as the Rust decoder's `InvalidUtf8`. */
  private str(b: Uint8Array, len: number, pos: number): number {
    this.cost += string(len);
    const end = pos + len;
    if (end > b.length) throw cutOff();
    if (!isUtf8(b, pos, end)) throw notUtf8();
    return end;
  }

  /** The headers from 0xc0: nil, booleans, numbers, bin, ext, str, array and map with lengths. */
  private header(b: Uint8Array, t: number, pos: number): number {
    switch (t) {
      case 0xc0: // nil
      case 0xc2: // false
      case 0xc3: // true
        return pos;
      case 0xc4: // bin 8, 16, 32
      case 0xc5:
      case 0xc6:
        this.cost += BIN;
        return this.skipLength(b, pos, t === 0xc4 ? 1 : t === 0xc5 ? 2 : 4);
      case 0xc7: // ext 8, 16, 32
      case 0xc8:
      case 0xc9:
        return this.ext(b, pos, t === 0xc7 ? 1 : t === 0xc8 ? 2 : 4);
      case 0xca: // float 32
        return this.number(pos + 4, NUMBER);
      case 0xcb: // float 64
        return this.number(pos + 8, NUMBER);
      case 0xcc: // uint 8, int 8
      case 0xd0:
        return pos + 1;
      case 0xcd: // uint 16, int 16
      case 0xd1:
        return pos + 2;
      case 0xce: // uint 32, int 32
      case 0xd2:
        return this.number(pos + 4, NUMBER);
      case 0xcf: // uint 64, int 64
      case 0xd3:
        return this.number(pos + 8, BIGINT);
      case 0xd4: // fixext 1, 2, 4, 8, 16
      case 0xd5:
      case 0xd6:
      case 0xd7:
      case 0xd8:
        return this.fixext(b, pos, 1 << (t - 0xd4));
      case 0xd9: // str 8, 16, 32
      case 0xda:
      case 0xdb: {
        const h = 1 << (t - 0xd9);
        if (pos + h > b.length) throw cutOff();
        return this.str(b, readLength(b, pos, h), pos + h);
      }
      case 0xdc: // array 16, 32
      case 0xdd:
        return this.array(this.length(b, pos, t === 0xdc ? 2 : 4), pos + (t === 0xdc ? 2 : 4));
      case 0xde: // map 16, 32
      case 0xdf:
        return this.map(this.length(b, pos, t === 0xde ? 2 : 4), pos + (t === 0xde ? 2 : 4));
      default: // 0xc1
        throw malformed(`reserved byte 0x${t.toString(16)}`);
    }
  }

  private number(end: number, cost: number): number {
    this.cost += cost;
    return end;
  }

  /** The `h`-byte length at `pos`, checked to be there. */
  private length(b: Uint8Array, pos: number, h: number): number {
    if (pos + h > b.length) throw cutOff();
    return readLength(b, pos, h);
  }

  /** Past the `h`-byte length at `pos` and the bytes it counts. */
  private skipLength(b: Uint8Array, pos: number, h: number): number {
    return pos + h + this.length(b, pos, h);
  }

  /** An ext 8, 16 or 32 whose `h`-byte length is at `pos`; never a record definition. */
  private ext(b: Uint8Array, pos: number, h: number): number {
    if (pos + h + 1 > b.length) throw cutOff();
    const len = readLength(b, pos, h);
    pos += h;
    const typ = b[pos++]!;
    if (typ === 0x72) throw malformed("record definition in an ext of another size");
    return this.extension(b, typ, pos, len);
  }

  /** A fixext of `len` bytes of data; `d4 72 id` is a record definition. */
  private fixext(b: Uint8Array, pos: number, len: number): number {
    if (pos + 1 + len > b.length) throw cutOff();
    const typ = b[pos++]!;
    if (typ !== 0x72) return this.extension(b, typ, pos, len);
    if (len !== 1) throw malformed("record definition in an ext of another size");
    return this.definition(b, pos);
  }

  /** The extension of type `typ` whose `len` bytes of data start at `pos`. */
  private extension(b: Uint8Array, typ: number, pos: number, len: number): number {
    const ext = extensionAt(b, typ, pos, len);
    this.cost += ext.cost;
    this.count = ext.count;
    return ext.end;
  }

  /**
   * A record definition, `d4 72 id` (`pos` at the id): the key array and then the first
   * instance's values follow.
   */
  private definition(b: Uint8Array, pos: number): number {
    const n = b.length;
    const slot = b[pos++]! & 0x3f;
    if (pos >= n) throw cutOff();
    const kh = arrayHeader(b[pos]!);
    if (kh === 0) throw malformed("record definition keys are not an array of strings");
    if (pos + kh > n) throw cutOff();
    const k = readCount(b, pos, kh);
    pos += kh;
    if (k > n - pos) throw cutOff();
    this.cost += DEFINITION + DEFINITION_KEY * k;
    pos = this.definitionKeys(b, pos, k);
    if (pos > n) throw cutOff();
    if (!this.defines) {
      // The first definition: from here on the walk reads and writes its own copy.
      this.defines = true;
      this.scratch.set(this.table);
      this.table = this.scratch;
    }
    this.table[slot] = k;
    this.slow[slot] = SLOW_INSTANCES;
    this.cost += instance(k, true);
    this.count = k;
    return pos;
  }

  /** The `k` keys of a definition: strings, none twice. */
  private definitionKeys(b: Uint8Array, pos: number, k: number): number {
    const n = b.length;
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
      const key = decodeKey(b.subarray(pos, pos + len));
      if (seen.has(key)) throw malformed(`record definition repeats the key ${JSON.stringify(key.slice(0, 32))}`);
      seen.add(key);
      pos += len;
      this.cost += string(len);
    }
    return pos;
  }
}

/** An extension value as the walk reads it: what it costs, the items that follow it, where it ends. */
interface Extension {
  cost: number;
  /** The items of the array a marker (Set, Error, RegExp) is followed by; -1 for any other. */
  count: number;
  /** Just past its data, and a marker's array header. */
  end: number;
}

/** The extension of type `typ` whose `len` bytes of data start at `at`. */
function extensionAt(b: Uint8Array, typ: number, at: number, len: number): Extension {
  const end = at + len;
  if (end > b.length) throw cutOff();
  const cost = extension(typ, b, at, len);
  if (cost >= 0) return { cost, count: -1, end };
  const count = markerItems(b, end, typ, b.length);
  return { cost: markerCost(typ, count), count, end: end + arrayHeader(b[end]!) };
}
