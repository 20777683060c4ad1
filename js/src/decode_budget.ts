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
//
// The costs are in heap_costs.ts, the reading of msgpack headers in msgpack_read.ts, the
// errors in decode_error.ts.

import { DecodeError, cutOff, malformed, tooDeep } from "./decode_error.js";
import { ARRAY, BIGINT, BIN, DEFINITION, DEFINITION_KEY, MAP, MAP_ENTRY, NUMBER, SLOT, SLOW_INSTANCES, extension, instance, markerCost, string } from "./heap_costs.js";
import { arrayHeader, markerItems, readCount, readLength } from "./msgpack_read.js";

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
            const ext = extensionAt(b, typ, pos, len);
            cost += ext.cost;
            count = ext.count;
            pos = ext.end;
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
              const ext = extensionAt(b, typ, pos, len);
              cost += ext.cost;
              count = ext.count;
              pos = ext.end;
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
