// The msgpackr side of `crates/bunite-wire/tests/random_msgpackr/`, the seeded differential
// of the Rust codec against msgpackr. Run by that test (`node dist/test/msgpackr_echo.js`),
// not by `npm test`.
//
// It reads messages on stdin, each a 4-byte big-endian length then the bytes. A length of
// 0xffffffff (no bytes follow) starts a new connection: a fresh decoder and encoder. Each
// other message is decoded by msgpackr configured as the connection configures it
// (`CODEC_OPTIONS`, the CapRef extension; one Unpackr per connection, so record definitions
// stay for its life), and the decoded value is encoded again by the connection's own
// `FrameEncoder` (one per connection too). The answer, for each message: the canonical text
// of the decoded value (`canonical` below; the Rust test writes the same text from its
// model of what msgpackr makes of a value), then the bytes of the re-encoding, each as a
// length and its bytes. A decode or encode that throws answers `!` and the error's text,
// then no bytes.
//
// The web client's own `FrameDecoder` (msgpackr behind the decode budget's walk, with a
// sealed record table) decodes every message too, and must hold the same value as msgpackr
// alone: when it does not, the answer is `!` and both texts.

import { Unpackr } from "msgpackr";

import { CODEC_OPTIONS, CapRef, FrameDecoder, FrameEncoder } from "../src/codec.js";

const NEW_CONNECTION = 0xffff_ffff;

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

/** The subtype byte of ext 0x74 of each typed array's constructor (PROTOCOL §3.2). */
const TYPED: Array<[Function, number]> = [
  [Int8Array, 0],
  [Uint8Array, 1],
  [Uint8ClampedArray, 2],
  [Int16Array, 3],
  [Uint16Array, 4],
  [Int32Array, 5],
  [Uint32Array, 6],
  [Float32Array, 7],
  [Float64Array, 8],
  [BigInt64Array, 9],
  [BigUint64Array, 10],
];

/**
 * One text per decoded value, exact: a number by its float64 bits (so -0 and NaN's bits
 * show), a string and bytes in hex, an object's keys in the order `Object.keys` gives, a
 * Map's entries in insertion order.
 */
function canonical(v: unknown): string {
  if (v === undefined) return "u";
  if (v === null) return "n";
  if (typeof v === "boolean") return v ? "t" : "f";
  if (typeof v === "number") {
    const view = new DataView(new ArrayBuffer(8));
    view.setFloat64(0, v);
    return `N${view.getBigUint64(0).toString(16).padStart(16, "0")}`;
  }
  if (typeof v === "bigint") return `B${v.toString()}`;
  if (typeof v === "string") return `s${hex(Buffer.from(v, "utf8"))}`;
  if (v instanceof CapRef) return `C${v.id}`;
  // An invalid Date (msgpackr's `d4 ff ff`, or a time beyond ±8.64e15 ms) is `DNaN`.
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? "DNaN" : `D${v.getTime()}`;
  if (Buffer.isBuffer(v)) return `b${hex(v)}`;
  if (v instanceof ArrayBuffer) return `T16:${hex(new Uint8Array(v))}`;
  if (v instanceof DataView) return `T17:${hex(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))}`;
  if (ArrayBuffer.isView(v)) {
    const code = TYPED.find(([ctor]) => v.constructor === ctor)?.[1];
    if (code === undefined) return `?${v.constructor.name}`;
    return `T${code}:${hex(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))}`;
  }
  if (Array.isArray(v)) return `[${v.map((item) => `${canonical(item)},`).join("")}]`;
  if (v instanceof Map) {
    let out = "M{";
    for (const [k, item] of v) out += `${canonical(k)}=>${canonical(item)};`;
    return `${out}}`;
  }
  if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    let out = "{";
    for (const k of Object.keys(v)) {
      out += `${hex(Buffer.from(k, "utf8"))}=${canonical((v as Record<string, unknown>)[k])};`;
    }
    return `${out}}`;
  }
  return `?${typeof v}:${Object.prototype.toString.call(v)}`;
}

let unpackr = new Unpackr({ ...CODEC_OPTIONS });
let web = new FrameDecoder();
let encoder = new FrameEncoder();

function answer(text: string, bytes: Uint8Array): void {
  const head = Buffer.alloc(4);
  const body = Buffer.from(text, "utf8");
  head.writeUInt32BE(body.length);
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE(bytes.length);
  process.stdout.write(Buffer.concat([head, body, tail, bytes]));
}

function handle(message: Buffer): void {
  let decoded: unknown;
  try {
    decoded = unpackr.unpack(message);
  } catch (e) {
    answer(`!decode: ${String(e)}`, new Uint8Array());
    return;
  }
  let text = canonical(decoded);
  let webText: string;
  try {
    webText = canonical(web.decode(message));
  } catch (e) {
    webText = `!${String(e)}`;
  }
  if (webText !== text) {
    answer(`!the web client's FrameDecoder read ${webText} where msgpackr read ${text}`, new Uint8Array());
    return;
  }
  let bytes: Uint8Array;
  try {
    bytes = encoder.encode(decoded);
  } catch (e) {
    text = `!encode: ${String(e)}`;
    bytes = new Uint8Array();
  }
  answer(text, bytes);
}

let pending: Buffer = Buffer.alloc(0);
process.stdin.on("data", (chunk: Buffer) => {
  pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
  for (;;) {
    if (pending.length < 4) return;
    const len = pending.readUInt32BE(0);
    if (len === NEW_CONNECTION) {
      unpackr = new Unpackr({ ...CODEC_OPTIONS });
      web = new FrameDecoder();
      encoder = new FrameEncoder();
      pending = pending.subarray(4);
      continue;
    }
    if (pending.length < 4 + len) return;
    // A copy: msgpackr's bins are views of the buffer they were decoded from.
    handle(Buffer.from(pending.subarray(4, 4 + len)));
    pending = pending.subarray(4 + len);
  }
});
