// TypeScript definitions of bunite caps, generated from their Rust #[cap] traits
// (bunite-rpc's `typescript` feature; types through ts-rs). Do not edit: change the
// traits and regenerate.
// Regenerate with `cargo run -p bunite-rpc-cli -- typegen --shapes --import ../src/index.js --out js/test/wire_shapes.gen.ts`.

import type { CallOptions, CapDef } from "../src/index.js";

/**
 * Adjacently tagged.
 */
export type Adjacent = { "t": "Unit" } | { "t": "New", "c": number };

/**
 * Bytes in each spelling.
 */
export type Bytes = { 
/**
 * A plain `Vec<u8>` (a sequence to serde).
 */
list: Array<number>, 
/**
 * `serde_bytes` (ts-rs refuses a bare `ByteBuf`, or `#[serde(with)]`, without a
 * TypeScript type: those fail to compile).
 */
typed_buf: Uint8Array, 
/**
 * A blob.
 */
blob: Uint8Array, };

/**
 * `#[serde(default)]` on the struct: every field may be left out by the sender.
 */
export type Defaults = { 
/**
 * A number.
 */
n: number, 
/**
 * A string.
 */
s: string, };

/**
 * Externally tagged (serde's default).
 */
export type External = "Unit" | { "New": number } | { "Pair": [number, string] } | { "Named": { 
/**
 * A field.
 */
x: number, } };

/**
 * `rename_all`, `Option` fields in each spelling, `char`, `f32`, wide integers.
 */
export type Fields = { 
/**
 * A renamed field.
 */
firstName: string, 
/**
 * `Option` as ts-rs writes it by default (`T | null`).
 */
plainOpt: number | null, 
/**
 * `Option` left out when `None`, optional in TypeScript.
 */
skippedOpt?: number, 
/**
 * Optional in TypeScript, but sent as undefined when `None`.
 */
optionalOnly?: number, 
/**
 * Two levels of `Option`.
 */
doubleOpt: number | null | null, 
/**
 * One character.
 */
letter: string, 
/**
 * A 32-bit float.
 */
single: number, 
/**
 * A 64-bit unsigned integer.
 */
big: number, 
/**
 * A 64-bit signed integer.
 */
neg: number, };

/**
 * `#[serde(flatten)]`.
 */
export type Flat = { 
/**
 * A field of its own.
 */
a: number, 
/**
 * A field of the flattened struct.
 */
b: number, 
/**
 * An optional one.
 */
c?: number, };

/**
 * Internally tagged.
 */
export type Internal = { "type": "Unit" } | { "type": "Named", 
/**
 * A field.
 */
x: number, };

/**
 * Maps.
 */
export type Maps = { 
/**
 * String keys.
 */
by_name: { [key in string]: number }, 
/**
 * Integer keys.
 */
by_id: { [key in number]: string }, };

/**
 * A unit struct.
 */
export type Marker = null;

/**
 * A newtype struct.
 */
export type Meters = number;

/**
 * Tuples, unit values and unit structs inside a struct.
 */
export type Nested = { 
/**
 * A tuple.
 */
pair: [number, string], 
/**
 * A newtype struct.
 */
meters: Meters, 
/**
 * A tuple struct.
 */
point: Point, 
/**
 * A unit struct.
 */
marker: Marker, 
/**
 * `()` as a field.
 */
unit: null, 
/**
 * A list of `Option`s.
 */
holes: Array<number | null>, };

/**
 * A tuple struct.
 */
export type Point = [number, number];

/**
 * Untagged.
 */
export type Untagged = number | string | null;

/**
 * Each method decodes its args as the Rust type and sends them back encoded from it.
 *
 * The cap `test.wireShapes`.
 */
export interface WireShapes {
  /**
   * Structs, `Option`s and scalars.
   */
  fields(args: Fields, options?: CallOptions): Promise<Fields>;
  /**
   * Externally tagged enums.
   */
  external(args: Array<External>, options?: CallOptions): Promise<Array<External>>;
  /**
   * Internally tagged enums.
   */
  internal(args: Array<Internal>, options?: CallOptions): Promise<Array<Internal>>;
  /**
   * Adjacently tagged enums.
   */
  adjacent(args: Array<Adjacent>, options?: CallOptions): Promise<Array<Adjacent>>;
  /**
   * Untagged enums.
   */
  untagged(args: Array<Untagged>, options?: CallOptions): Promise<Array<Untagged>>;
  /**
   * Tuples, newtypes, unit values.
   */
  nested(args: Nested, options?: CallOptions): Promise<Nested>;
  /**
   * Maps.
   */
  maps(args: Maps, options?: CallOptions): Promise<Maps>;
  /**
   * Bytes.
   */
  bytes(args: Bytes, options?: CallOptions): Promise<Bytes>;
  /**
   * Flattened structs.
   */
  flat(args: Flat, options?: CallOptions): Promise<Flat>;
  /**
   * A struct with defaults.
   */
  defaults(args: Defaults, options?: CallOptions): Promise<Defaults>;
  /**
   * An `Option` result: `Some(v)` when `v` is not negative.
   */
  maybe(args: number, options?: CallOptions): Promise<number | undefined>;
  /**
   * A `u64` from its decimal text (numbers past 2^53 cannot travel as JS numbers).
   */
  wide(args: string, options?: CallOptions): Promise<number>;
  /**
   * An `i64` from its decimal text.
   */
  wideNeg(args: string, options?: CallOptions): Promise<number>;
}

export const WireShapes: CapDef<WireShapes> = {
  name: "test.wireShapes",
  methods: {
    fields: { kind: "call" },
    external: { kind: "call" },
    internal: { kind: "call" },
    adjacent: { kind: "call" },
    untagged: { kind: "call" },
    nested: { kind: "call" },
    maps: { kind: "call" },
    bytes: { kind: "call" },
    flat: { kind: "call" },
    defaults: { kind: "call" },
    maybe: { kind: "call" },
    wide: { kind: "call" },
    wideNeg: { kind: "call" },
  },
};
