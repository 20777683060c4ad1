// Byte-exactness against ../shared/vectors (README there): every vector the README says to
// encode is reproduced by our encoder, and every one decodes to its value. Set
// BUNITE_VECTORS to read them from elsewhere.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { CapRef, FrameDecoder, FrameEncoder, importKey, open, seal } from "../src/index.js";

const dir = process.env["BUNITE_VECTORS"] ?? fileURLToPath(new URL("../../../../shared/vectors/", import.meta.url));
const lines = (file: string): Array<Record<string, any>> =>
  readFileSync(`${dir}/${file}`, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l));

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const bytes = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));

/** The JSON notation of the vectors README, as a JS value to encode. */
function fromNotation(v: any): unknown {
  if (Array.isArray(v)) return v.map(fromNotation);
  if (v === null || typeof v !== "object") return v;
  const keys = Object.keys(v);
  if (keys.length === 1 && keys[0]!.startsWith("$")) {
    const x = v[keys[0]!];
    switch (keys[0]) {
      case "$undefined":
        return undefined;
      case "$capref":
        return new CapRef(x);
      case "$bin":
        return Buffer.from(x, "hex"); // a Node Buffer goes out as msgpack bin
      case "$u8":
        return bytes(x);
      case "$f32":
        return new Float32Array(x);
      case "$f64":
        return new Float64Array(x);
      case "$float":
        return Number(x);
      case "$bigint":
        return BigInt(x);
    }
  }
  return Object.fromEntries(keys.map((k) => [k, fromNotation(v[k])]));
}

/** A decoded value in the notation (bin and Uint8Array both as `$bytes`), key order kept. */
function toNotation(v: unknown): unknown {
  if (v === undefined) return { $undefined: null };
  if (v instanceof CapRef) return { $capref: v.id };
  if (v instanceof Float32Array) return { $f32: [...v] };
  if (v instanceof Float64Array) return { $f64: [...v] };
  if (v instanceof Uint8Array) return { $bytes: hex(v) };
  if (typeof v === "bigint") return { $bigint: v.toString() };
  if (typeof v === "number" && !Number.isFinite(v)) return { $float: String(v) };
  if (Array.isArray(v)) return v.map(toNotation);
  if (v !== null && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toNotation(x)]));
  }
  return v;
}

/** The expected notation with `$bin`/`$u8` folded into `$bytes`. */
function expected(v: any): unknown {
  if (Array.isArray(v)) return v.map(expected);
  if (v === null || typeof v !== "object") return v;
  if ("$bin" in v) return { $bytes: v.$bin };
  if ("$u8" in v) return { $bytes: v.$u8 };
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, expected(x)]));
}

const same = (actual: unknown, want: unknown, name: string) =>
  assert.equal(JSON.stringify(toNotation(actual)), JSON.stringify(expected(want)), name);

for (const file of ["frames.jsonl", "values.jsonl", "capref.jsonl"]) {
  test(`${file}: each vector, fresh codec, encodes to its bytes and decodes to its value`, () => {
    const vs = lines(file);
    assert.ok(vs.length > 5);
    for (const v of vs) {
      assert.equal(hex(new FrameEncoder().encode(fromNotation(v["value"]))), v["hex"], `encode ${v["name"]}`);
      same(new FrameDecoder().decode(bytes(v["hex"])), v["decodes_to"] ?? v["value"], `decode ${v["name"]}`);
    }
  });
}

test("session.jsonl: one encoder and one decoder per direction, in order", () => {
  const enc = new Map<string, FrameEncoder>();
  const dec = new Map<string, FrameDecoder>();
  const vs = lines("session.jsonl");
  for (const [i, v] of vs.entries()) {
    const d = v["dir"] as string;
    if (!enc.has(d)) enc.set(d, new FrameEncoder());
    if (!dec.has(d)) dec.set(d, new FrameDecoder());
    assert.equal(hex(enc.get(d)!.encode(fromNotation(v["value"]))), v["hex"], `encode #${i} ${d}`);
    same(dec.get(d)!.decode(bytes(v["hex"])), v["value"], `decode #${i} ${d}`);
  }
  assert.equal(enc.size, 2);
});

test("shapes.jsonl: the record-id ring wraps and evicts as the reference does", () => {
  const enc = new FrameEncoder();
  const dec = new FrameDecoder();
  const vs = lines("shapes.jsonl");
  assert.equal(vs.length, 71);
  for (const v of vs) {
    assert.equal(hex(enc.encode(fromNotation(v["value"]))), v["hex"], `encode seq ${v["seq"]}`);
    same(dec.decode(bytes(v["hex"])), v["value"], `decode seq ${v["seq"]}`);
  }
});

test("encrypted-pipe.json: seal with the fixed IV, open, and reject every flipped tag bit", async () => {
  const v = JSON.parse(readFileSync(`${dir}/encrypted-pipe.json`, "utf8"));
  const key = await importKey(bytes(v.key));
  assert.equal(hex(await seal(key, bytes(v.plaintext), bytes(v.iv))), v.wire);
  assert.equal(hex(await open(key, bytes(v.wire))), v.plaintext);
  const wire = bytes(v.wire);
  for (let bit = 0; bit < 128; bit++) {
    const bad = wire.slice();
    bad[wire.length - 16 + (bit >> 3)]! ^= 1 << (bit & 7);
    await assert.rejects(open(key, bad), /authentication/, `tag bit ${bit}`);
  }
  await assert.rejects(open(key, wire.subarray(0, 28)), /28 bytes/);
  const v2 = wire.slice();
  v2[0] = 2;
  await assert.rejects(open(key, v2), /starts with 0x02, not 0x01/);
});

test("the decoder refuses trailing bytes, bad CapRefs and deep nesting", () => {
  const bad = [
    "c0c0", // trailing bytes
    "c70650808080808001", // a 6-byte CapRef varint
    "d6508080808010", // a CapRef ≥ 2^32
    "91".repeat(300) + "c0", // deeper than 256
  ];
  for (const h of bad) assert.throws(() => new FrameDecoder().decode(bytes(h)), Error, h);
  assert.doesNotThrow(() => new FrameDecoder().decode(bytes("91".repeat(200) + "c0")));
});
