// The record codec (PROTOCOL §3) through msgpackr, configured as the bunite-core 0.10 peer
// configures it: records, sequential (record definitions inline, remembered for the
// connection), moreTypes (typed arrays as ext 0x74), and the CapRef extension 0x50.
// msgpackr then writes undefined as `d4 00 00` and, because 0x40..0x7f are record ids,
// integers 64..127 as `cc xx`, never as fixints. The vectors test pins all of it.
//
// One `FrameEncoder` and one `FrameDecoder` per connection and direction: both keep a
// record table for the connection's lifetime.

import { Packr, Unpackr, addExtension } from "msgpackr";

import { DEFAULT_DECODE_BUDGET, DecodeError, RecordModel, SLOTS, type DecodeBudget } from "./decode_budget.js";

/** A capability reference on the wire (ext 0x50, the cap-id as an LEB128 varint). */
export class CapRef {
  constructor(readonly id: number) {}
}

/** The largest cap-id: ids are below 2^32. */
const MAX_CAP_ID = 0xffff_ffff;

/** The cap-id as an unsigned LEB128 varint (at most 5 bytes). */
export function encodeVarint(id: number): Uint8Array {
  if (!Number.isInteger(id) || id < 0 || id > MAX_CAP_ID) {
    throw new RangeError(`cap-id ${id} is not in 0..2^32-1`);
  }
  const out: number[] = [];
  let rest = id;
  do {
    const low = rest % 128;
    rest = Math.floor(rest / 128);
    out.push(rest > 0 ? low | 0x80 : low);
  } while (rest > 0);
  return Uint8Array.from(out);
}

/** Reads a CapRef's varint; throws on more than 5 bytes, a value ≥ 2^32, or a cut-off. */
export function decodeVarint(data: Uint8Array): number {
  if (data.length === 0 || data.length > 5) {
    throw new RangeError(`CapRef varint of ${data.length} bytes`);
  }
  let id = 0;
  let scale = 1;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    id += (b & 0x7f) * scale;
    scale *= 128;
    const last = (b & 0x80) === 0;
    if (last !== (i === data.length - 1)) {
      throw new RangeError("CapRef varint does not end at its last byte");
    }
  }
  if (id > MAX_CAP_ID) throw new RangeError(`CapRef id ${id} is not below 2^32`);
  return id;
}

// msgpackr's extension table is global to the module: every Packr and Unpackr of the page
// sees CapRef as 0x50.
addExtension({
  Class: CapRef,
  type: 0x50,
  pack: (ref: CapRef) => encodeVarint(ref.id),
  unpack: (data: Uint8Array) => new CapRef(decodeVarint(data)),
});

/** The options of both sides, exactly PROTOCOL §3's. */
export const CODEC_OPTIONS = { useRecords: true, sequential: true, moreTypes: true } as const;

/** The default depth limit of decoded values (PROTOCOL §4). */
export const MAX_DEPTH = 256;

/** Encodes values in order on one connection direction. */
export class FrameEncoder {
  private readonly packr = new Packr({ ...CODEC_OPTIONS });

  /** The bytes of `value`, a copy the caller owns. */
  encode(value: unknown): Uint8Array {
    // msgpackr hands back a view of its own buffer, which later calls may reuse.
    return Uint8Array.prototype.slice.call(this.packr.pack(value));
  }
}

/** The default bound on what the record table keeps (as the Rust peer's): 1 MiB. */
export const MAX_RECORD_TABLE_BYTES = 1024 * 1024;

/**
 * What a definition keeps, as this decoder counts it: per key its UTF-16 bytes and 32 bytes
 * for its string and its place in the key array.
 */
function definitionCost(keys: unknown): number {
  if (!Array.isArray(keys)) return 0;
  let cost = 0;
  for (const k of keys) cost += 32 + 2 * (typeof k === "string" ? k.length : 0);
  return cost;
}

/**
 * Decodes messages in order on one connection direction.
 *
 * Before msgpackr builds anything, a walk over the bytes (`decode_budget.ts`) refuses a
 * message that is malformed, nests deeper than `maxDepth`, or would take more heap once
 * decoded than `budget.base + budget.factor × its size` (PROTOCOL §13.11): msgpackr never
 * sees it, and nothing of it is allocated.
 *
 * msgpackr keeps every record definition it reads for the connection's life, outside any
 * message's size: a hostile peer could send one wide definition per message and make the page
 * hold them all. So the decoder gives msgpackr a table of exactly the 64 slots of PROTOCOL
 * §3.3, sealed (msgpackr's own two-byte definitions, which the walk refuses before, could not
 * be stored there either), and after each message counts what the slots keep;
 * past `maxRecordTableBytes` the message fails, a protocol error (goaway).
 */
export class FrameDecoder {
  private readonly slots: unknown[];
  private readonly unpackr: Unpackr;
  /** The definition each slot held after the last message, and what it costs. */
  private readonly seen: unknown[] = new Array<unknown>(SLOTS).fill(undefined);
  private readonly costs: number[] = new Array<number>(SLOTS).fill(0);
  private kept = 0;
  /** The walk's copy of the slot table, kept in step with `slots` by `count`. */
  private readonly model: RecordModel;

  constructor(
    maxDepth = MAX_DEPTH,
    private readonly maxRecordTableBytes = MAX_RECORD_TABLE_BYTES,
    budget: DecodeBudget = DEFAULT_DECODE_BUDGET,
  ) {
    // The properties msgpackr sets on its table exist before the table is sealed.
    const slots = Object.assign(new Array<unknown>(SLOTS).fill(undefined), {
      sharedLength: 0,
      restoreStructures: null,
    });
    this.slots = Object.seal(slots);
    this.unpackr = new Unpackr({ ...CODEC_OPTIONS, structures: slots as never });
    this.model = new RecordModel(maxDepth, budget);
  }

  /**
   * The one value of `bytes`. Throws a `DecodeError` on malformed msgpack, trailing bytes, a
   * record reference to an undefined slot, nesting deeper than the limit, a message over its
   * decode budget, or record definitions that take the table past its bound; msgpackr's own
   * errors (a bad CapRef, a typed array it cannot build) pass through.
   */
  decode(bytes: Uint8Array): unknown {
    const defines = this.model.walk(bytes);
    let decoded = false;
    try {
      const value = this.unpackr.unpack(bytes);
      decoded = true;
      return value;
    } finally {
      // Only definitions change the table, and msgpackr's failures (which may leave some).
      if (defines || !decoded) this.count();
    }
  }

  /** What the record table keeps now, as counted (see `definitionCost`). */
  get recordTableBytes(): number {
    return this.kept;
  }

  /** Charges the slots whose definition changed; throws once the table is past its bound. */
  private count(): void {
    for (let i = 0; i < SLOTS; i++) {
      const def = this.slots[i];
      if (def === this.seen[i]) continue;
      const cost = definitionCost(def);
      this.kept += cost - this.costs[i]!;
      this.seen[i] = def;
      this.costs[i] = cost;
      this.model.sync(i, def);
    }
    if (this.kept > this.maxRecordTableBytes) {
      throw new DecodeError(
        "record_table_full",
        `record definitions keep ${this.kept} bytes, past the table's bound of ${this.maxRecordTableBytes}`,
      );
    }
  }
}
