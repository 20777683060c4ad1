// The decoder's walk (src/decode_budget.ts): a message over its decode budget, nested too
// deep or malformed is refused before msgpackr reads it (PROTOCOL §4, §13.11), and whatever
// the walk admits msgpackr reads the same way, record slots included.

import assert from "node:assert/strict";
import { test } from "node:test";

import { CapRef, DecodeError, FrameDecoder, FrameEncoder, type DecodeErrorKind } from "../src/index.js";
import { isUtf8 } from "../src/msgpack_read.js";

/** `[0xdd, n as 4 bytes]`: the header of an array of `n`. */
function array32(n: number): number[] {
  return [0xdd, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

function refused(f: () => unknown, kind: DecodeErrorKind, message?: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof DecodeError, `a DecodeError, not ${String(e)}`);
    assert.equal(e.kind, kind, e.message);
    if (message !== undefined) assert.match(e.message, message);
    return true;
  });
}

/** `[{} (defining slot 0x40), then n - 1 references to it]`: each byte one empty object once decoded. */
function emptyRecords(n: number): Uint8Array {
  const b = new Uint8Array(5 + 4 + (n - 1));
  b.set(array32(n), 0);
  b.set([0xd4, 0x72, 0x40, 0x90], 5);
  b.fill(0x40, 9);
  return b;
}

test("8 MiB of empty-record references: refused over_budget by the walk, before msgpackr read it (its definition never reached the table)", () => {
  const dec = new FrameDecoder();
  const bytes = emptyRecords(8 * 1024 * 1024);
  refused(() => dec.decode(bytes), "over_budget", /over the decode budget: a message of 8388616 bytes may take 29360152 bytes once decoded/);
  // msgpackr would have stored the definition of slot 0x40 as it read it: it is not there.
  assert.equal(dec.recordTableBytes, 0);
  refused(() => dec.decode(Uint8Array.from([0x40])), "malformed", /undefined record slot 0x40/);
  // The decoder is still in step: an ordinary message decodes.
  assert.deepEqual(dec.decode(new FrameEncoder().encode({ a: [1, "b"] })), { a: [1, "b"] });
});

test("the budget is base + factor × size: the same message decodes under one budget and is refused under a smaller", () => {
  // 1000 nils: 1005 bytes, a thousand array slots once decoded (8 bytes each, and the array's).
  const bytes = Uint8Array.from([...array32(1000), ...new Array<number>(1000).fill(0xc0)]);
  assert.equal((new FrameDecoder(undefined, undefined, { base: 0, factor: 16 }).decode(bytes) as unknown[]).length, 1000);
  refused(() => new FrameDecoder(undefined, undefined, { base: 0, factor: 1 }).decode(bytes), "over_budget");
  refused(() => new FrameDecoder(undefined, undefined, { base: 4000, factor: 1 }).decode(bytes), "over_budget");
  assert.equal((new FrameDecoder(undefined, undefined, { base: 16_000, factor: 0 }).decode(bytes) as unknown[]).length, 1000);
  // Within the defaults: 100,000 small integers, a 5 MiB string, 1 MiB of bytes.
  const dec = new FrameDecoder();
  const enc = new FrameEncoder();
  const ints = Array.from({ length: 100_000 }, (_, i) => i & 0x3f);
  assert.deepEqual(dec.decode(enc.encode({ ints })), { ints });
  const text = "é".repeat(2_621_440);
  assert.equal((dec.decode(enc.encode({ text })) as { text: string }).text, text);
  const blob = new Uint8Array(1 << 20).fill(7);
  assert.deepEqual(dec.decode(enc.encode({ blob })), { blob });
});

test("nesting is checked during the walk: the limit's depth decodes, one more is refused too_deep, and 100,000 levels never reach msgpackr", () => {
  const nested = (levels: number, open: number[]) => Uint8Array.from([...new Array<number[]>(levels).fill(open).flat(), 0x01]);
  const arrays = (levels: number) => nested(levels, [0x91]);
  let v = new FrameDecoder().decode(arrays(256));
  for (let i = 0; i < 256; i++) v = (v as unknown[])[0];
  assert.equal(v, 1);
  refused(() => new FrameDecoder().decode(arrays(257)), "too_deep", /nested deeper than 256/);
  refused(() => new FrameDecoder(8).decode(arrays(9)), "too_deep", /nested deeper than 8/);
  // Deep enough that msgpackr's recursion would overflow the stack.
  refused(() => new FrameDecoder().decode(arrays(100_000)), "too_deep");
  // Maps, records and the arrays inside Sets count too (the check after decoding never looked inside a Set).
  refused(() => new FrameDecoder().decode(nested(257, [0x81, 0x01])), "too_deep");
  refused(() => new FrameDecoder().decode(Uint8Array.from([0xd4, 0x72, 0x40, 0x91, 0xa1, 0x61, ...new Array<number>(256).fill(0x40), 0x01])), "too_deep");
  refused(() => new FrameDecoder().decode(nested(300, [0xd4, 0x73, 0x00, 0x91])), "too_deep");
});

test("what msgpackr would read wrongly or not at all is refused malformed: undefined slots, cut-offs, trailing bytes, unknown extensions", () => {
  const bad: Array<[number[], RegExp]> = [
    // msgpackr read an undefined slot's byte as an integer (PROTOCOL §3.3: an error).
    [[0x45], /undefined record slot 0x45/],
    [[0x92, 0x01], /ends inside a value/],
    [[0xd9, 0x05, 0x61], /ends inside a value/],
    [[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01], /ends inside a value/],
    [[0xdf, 0xff, 0xff, 0xff, 0xff, 0x01], /ends inside a value/],
    [[0x01, 0x02], /1 trailing bytes/],
    [[0xc1], /reserved byte 0xc1/],
    [[0xd4, 0x42, 0x01], /unknown extension type 0x42/], // msgpackr's BigInt
    [[0xd6, 0x69, 0, 0, 0, 1, 0x90], /unknown extension type 0x69/], // structured-clone id
    [[0xd6, 0x62, 0, 0, 0, 1, 0xa0], /unknown extension type 0x62/], // bundled strings
    [[0xd6, 0x72, 0x40, 0x90, 0, 0], /record definition in an ext of another size/],
    [[0xd4, 0x72, 0x40, 0x91, 0x01, 0x01], /keys are not an array of strings/],
    [[0xd4, 0x72, 0x40, 0xa1, 0x61, 0x01], /keys are not an array of strings/],
    // msgpackr's two-byte definitions, `d5 72 id high`: the Rust decoder reads only `d4 72 id`.
    [[0xd5, 0x72, 0x41, 0x00, 0x91, 0xa1, 0x61, 0x01], /record definition in an ext of another size/],
    [[0xd5, 0x72, 0x60, 0x00, 0x91, 0xa1, 0x61, 0x01], /record definition in an ext of another size/],
    // A key twice: a JS object keeps the last, the Rust peer's Record::get the first.
    [[0xd4, 0x72, 0x40, 0x92, 0xa1, 0x61, 0xa1, 0x61, 0x01, 0x02], /record definition repeats the key "a"/],
    [[0xd4, 0x72, 0x40, 0x93, 0xa1, 0x61, 0xa1, 0x62, 0xd9, 0x01, 0x61, 0x01, 0x02, 0x03], /record definition repeats the key "a"/],
    [[0xd4, 0x74, 0x20], /bad typed array/],
    [[0xd5, 0x74, 0x05, 0x00], /bad typed array/], // Int32Array of one byte
    [[0xc7, 0x06, 0x50, 1, 2, 3, 4, 5, 6], /CapRef varint of 6 bytes/],
    [[0xd5, 0x50, 0x01, 0x01], /CapRef varint does not end at its last byte/],
    [[0xc7, 0x05, 0x50, 0xff, 0xff, 0xff, 0xff, 0x7f], /CapRef id 34359738367 is not below 2\^32/],
    [[0xd4, 0x65, 0x00, 0x91, 0xa0], /extension 0x65 followed by an array of 1/],
    [[0xd4, 0x78, 0x00, 0xa0], /extension 0x78 not followed by an array/],
  ];
  for (const [bytes, message] of bad) refused(() => new FrameDecoder().decode(Uint8Array.from(bytes)), "malformed", message);
});

test("strings that are not UTF-8 are refused malformed, as the Rust decoder's InvalidUtf8: in every string form, as keys of definitions and maps, inside markers", () => {
  const notUtf8 = /^string is not valid UTF-8$/;
  const bad: number[][] = [
    [0xa2, 0xff, 0xfe], // the Rust decoder's own case
    [0xd4, 0x72, 0x40, 0x91, 0xa2, 0xff, 0xfe, 0x01], // a definition's key (its case too)
    [0xa2, 0xc0, 0x80], // overlong NUL
    [0xa2, 0xc1, 0xbf], // overlong
    [0xa3, 0xe0, 0x80, 0x80], // overlong 3-byte
    [0xa3, 0xed, 0xa0, 0x80], // a surrogate, U+D800
    [0xa4, 0xf0, 0x80, 0x80, 0x80], // overlong 4-byte
    [0xa4, 0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
    [0xa1, 0xf5], // a lead byte UTF-8 never uses
    [0xa1, 0x80], // a lone continuation byte
    [0xa2, 0xe2, 0x82], // a sequence cut by the string's end
    [0xa3, 0x61, 0xe2, 0x28], // a continuation that is not one
    [0xd9, 0x01, 0xff],
    [0xda, 0x00, 0x01, 0xff],
    [0xdb, 0x00, 0x00, 0x00, 0x01, 0xff],
    [0x81, 0xa1, 0xff, 0x01], // a map's key
    [0x92, 0x01, 0xa1, 0xff], // past the first value
    [0xd4, 0x65, 0x00, 0x92, 0xa1, 0xff, 0xa0], // an Error's message
  ];
  for (const bytes of bad) refused(() => new FrameDecoder().decode(Uint8Array.from(bytes)), "malformed", notUtf8);
  // A bad string in a message defining a record leaves the table as it was.
  const dec = new FrameDecoder();
  refused(() => dec.decode(Uint8Array.from([0x92, 0xd4, 0x72, 0x40, 0x91, 0xa1, 0x61, 0x01, 0xa1, 0xff])), "malformed", notUtf8);
  refused(() => dec.decode(Uint8Array.from([0x40, 0x01])), "malformed", /undefined record slot 0x40/);
  const good: Array<[number[], unknown]> = [
    [[0xa3, 0xef, 0xbf, 0xbd], "\ufffd"], // U+FFFD sent as itself
    [[0xa3, 0xed, 0x9f, 0xbf], "\ud7ff"],
    [[0xa3, 0xee, 0x80, 0x80], "\ue000"],
    [[0xa4, 0xf4, 0x8f, 0xbf, 0xbf], "\u{10ffff}"],
    [[0xa4, 0xf0, 0x9f, 0x98, 0x80], "😀"],
    [[0xa2, 0xc2, 0x80], "\u0080"],
    // A leading BOM stays part of its key: "\ufeffa" and "a" are two keys, not one twice.
    [[0xd4, 0x72, 0x40, 0x92, 0xa4, 0xef, 0xbb, 0xbf, 0x61, 0xa1, 0x61, 0x01, 0x02], { "\ufeffa": 1, a: 2 }],
  ];
  for (const [bytes, value] of good) assert.deepEqual(new FrameDecoder().decode(Uint8Array.from(bytes)), value);
});

test("isUtf8 agrees with a fatal TextDecoder on every sequence of one and two bytes, and on three and four bytes at every edge of the continuation range, and on long strings at every alignment", () => {
  const fatal = new TextDecoder("utf-8", { fatal: true });
  const valid = (b: Uint8Array) => {
    try {
      fatal.decode(b);
      return true;
    } catch {
      return false;
    }
  };
  const check = (b: Uint8Array) => assert.equal(isUtf8(b, 0, b.length), valid(b), [...b].map((x) => x.toString(16)).join(" "));
  const b1 = new Uint8Array(1);
  const b2 = new Uint8Array(2);
  const b3 = new Uint8Array(3);
  const b4 = new Uint8Array(4);
  for (let i = 0; i < 256; i++) {
    b1[0] = i;
    check(b1);
    for (let j = 0; j < 256; j++) {
      b2[0] = i;
      b2[1] = j;
      check(b2);
    }
  }
  // Three bytes with a non-ASCII lead (an ASCII lead is the two-byte case above, once more).
  for (let i = 0x80; i < 256; i++) {
    for (let j = 0; j < 256; j++) {
      for (const k of [0x41, 0x7f, 0x80, 0xbf, 0xc0]) {
        b3.set([i, j, k]);
        check(b3);
      }
    }
  }
  for (let i = 0xef; i < 256; i++) {
    for (let j = 0x70; j < 0xd0; j++) {
      for (const k of [0x7f, 0x80, 0xbf, 0xc0]) {
        for (const l of [0x7f, 0x80, 0xbf, 0xc0]) {
          b4.set([i, j, k, l]);
          check(b4);
        }
      }
    }
  }
  // Long strings, read a word at a time while ASCII: at every alignment, a bad byte, a
  // two-byte character or a cut one at every place.
  const buf = new Uint8Array(200);
  for (let offset = 0; offset < 4; offset++) {
    for (let len = 64; len < 90; len++) {
      for (let at = 0; at < len; at++) {
        for (const seq of [[0xff], [0xc3, 0xa9], [0xc3], [0xe2, 0x82, 0xac], [0x80]]) {
          buf.fill(0x61);
          buf.set(seq.slice(0, len - at), offset + at);
          const view = buf.subarray(offset, offset + len);
          check(view);
          assert.equal(isUtf8(buf, offset, offset + len), valid(view));
        }
      }
    }
  }
  // The check starts and stops where it is told.
  const s = Uint8Array.from([0xff, 0x61, 0xc3, 0xa9, 0xff]);
  assert.equal(isUtf8(s, 1, 4), true);
  assert.equal(isUtf8(s, 1, 3), false);
  assert.equal(isUtf8(s, 0, 4), false);
});

test("what the walk admits msgpackr reads alike: every kind of value, records defined across messages, the id ring's wrap, a slot's redefinition", () => {
  const enc = new FrameEncoder();
  const dec = new FrameDecoder();
  const values: unknown[] = [
    { op: "call", id: 1, target: { kind: "cap", id: 2 }, method: "m", args: { a: 1 }, meta: undefined },
    [null, true, false, undefined, 0, 63, 64, 127, 255, 65535, 2 ** 32 - 1, -1, -33, -(2 ** 31), 1.5, 2 ** 53, -(2 ** 53), 2n ** 63n - 1n],
    { s: "", t: "x".repeat(31), u: "y".repeat(300), v: "ā😀", w: "z".repeat(70_000) },
    { caps: [new CapRef(0), new CapRef(2), new CapRef(2 ** 32 - 1)] },
    { typed: [new Uint8Array([1, 2]), new Int16Array([-1, 2]), new Float64Array([1.5]), new BigInt64Array([3n])] },
    { buffer: new Uint8Array([1, 2, 3]).buffer, date: new Date(1_700_000_000_123) },
    new Map<unknown, unknown>([[1, "one"], ["two", { x: 2 }]]),
    new Set([1, "a", { b: 2 }]),
    { nested: { deeper: { deepest: [[[{}]]] } }, empty: {}, list: [] },
  ];
  for (let round = 0; round < 3; round++) {
    for (const v of values) assert.deepEqual(dec.decode(enc.encode(v)), v);
  }
  // 100 shapes through the encoder's ring of 32 ids: every slot redefined again and again.
  for (let i = 0; i < 100; i++) {
    const v = { [`key${i}`]: i, [`other${i % 7}`]: [{ [`inner${i % 40}`]: i }] };
    assert.deepEqual(dec.decode(enc.encode(v)), v);
    assert.deepEqual(dec.decode(enc.encode(v)), v);
  }
  // Error and RegExp markers, as msgpackr writes them.
  const err = dec.decode(enc.encode(new TypeError("boom"))) as Error;
  assert.ok(err instanceof TypeError && err.message === "boom");
  assert.deepEqual(dec.decode(enc.encode(/a+b/gi)), /a+b/gi);
  // msgpackr's `d5 72 id 00` definition (slot 32) is refused, as by the Rust decoder, and
  // leaves the slot undefined; a one-byte definition of it is read.
  const two = new FrameDecoder();
  refused(() => two.decode(Uint8Array.from([0xd5, 0x72, 0x60, 0x00, 0x91, 0xa1, 0x61, 0x01])), "malformed", /record definition in an ext of another size/);
  refused(() => two.decode(Uint8Array.from([0x92, 0x60, 0x00, 0x02, 0x60, 0x00, 0x03])), "malformed", /undefined record slot 0x60/);
  assert.deepEqual(two.decode(Uint8Array.from([0xd4, 0x72, 0x60, 0x91, 0xa1, 0x62, 0x04])), { b: 4 });
  assert.deepEqual(two.decode(Uint8Array.from([0x60, 0x05])), { b: 5 });
  // Redefined with its keys in another order, the slot reads the new order.
  assert.deepEqual(two.decode(Uint8Array.from([0xd4, 0x72, 0x60, 0x92, 0xa1, 0x62, 0xa1, 0x61, 0x06, 0x07])), { b: 6, a: 7 });
  assert.deepEqual(two.decode(Uint8Array.from([0x60, 0x08, 0x09])), { b: 8, a: 9 });
});

test("msgpackr's invalid Date is admitted as msgpackr reads it: d4 ff ff as it writes one, and a timestamp of any length but 4, 8 or 12 bytes, alone, in a record and in a frame's args", () => {
  const enc = new FrameEncoder();
  const dec = new FrameDecoder();
  const invalid = enc.encode(new Date(Number.NaN));
  assert.deepEqual(Array.from(invalid), [0xd4, 0xff, 0xff]);
  const lengths: number[][] = [
    [0xd4, 0xff, 0xff],
    [0xd4, 0xff, 0x00],
    [0xd5, 0xff, 0x00, 0x00],
    [0xd8, 0xff, ...new Array<number>(16).fill(0)],
    [0xc7, 0x00, 0xff],
    [0xc7, 0x03, 0xff, 1, 2, 3],
    [0xc7, 0x0d, 0xff, ...new Array<number>(13).fill(0)],
    [0xc8, 0x00, 0x00, 0xff],
    [0xc9, 0x00, 0x00, 0x00, 0x0b, 0xff, ...new Array<number>(11).fill(7)],
  ];
  for (const bytes of lengths) {
    const d = dec.decode(Uint8Array.from(bytes));
    assert.ok(d instanceof Date && Number.isNaN(d.getTime()), `${Buffer.from(bytes).toString("hex")}: ${String(d)}`);
  }
  // The three forms of a time still read as times.
  assert.equal((dec.decode(Uint8Array.from([0xd6, 0xff, 0, 0, 0, 1])) as Date).getTime(), 1000);
  // In a call's args, as a 0.10 peer sends `new Date(undefined)`: the frame decodes, and the
  // decoder is in step for the next message.
  const call = { op: "call", id: 1, target: { kind: "cap", id: 2 }, method: "m", args: { when: new Date(undefined as unknown as number), n: 3 }, meta: undefined };
  const back = dec.decode(enc.encode(call)) as { args: { when: Date; n: number } };
  assert.ok(back.args.when instanceof Date && Number.isNaN(back.args.when.getTime()));
  assert.equal(back.args.n, 3);
  assert.deepEqual(dec.decode(enc.encode({ after: [new Date(5)] })), { after: [new Date(5)] });
  // Cut off inside its data, it is refused as any extension is.
  refused(() => dec.decode(Uint8Array.from([0xc7, 0x05, 0xff, 1, 2])), "malformed", /ends inside a value/);
});

/** A small deterministic generator (mulberry32). */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("mutated messages: whatever the walk admits msgpackr decodes, and the walk's slot table stays msgpackr's", () => {
  const rand = random(20261207);
  const samples = [
    { op: "result", id: 7, ok: true, value: { rows: [{ a: 1, b: "x" }, { a: 2, b: "y" }], when: new Date(0) } },
    { op: "call", id: 9, target: { kind: "cap", id: 3 }, method: "put", args: [new CapRef(5), new Uint8Array([1, 2, 3]), new Set([1])], meta: { deadlineMs: 5 } },
    { op: "stream", id: 2, ev: "next", value: new Map<unknown, unknown>([[1, [1.5, -7, "é"]]]) },
    { op: "stream", id: 3, ev: "error", error: [new Float64Array([1.5]), new Int32Array([7]), 2n ** 62n, new RangeError("r"), /x+/g, 70_000, -2e9] },
  ];
  let admitted = 0;
  for (let i = 0; i < 20_000; i++) {
    const enc = new FrameEncoder();
    const dec = new FrameDecoder();
    const sample = samples[i % samples.length];
    let base = enc.encode(sample);
    // Every other time the shapes are defined first and their references mutated.
    if (i % 2 === 1) {
      dec.decode(base);
      base = enc.encode(sample);
    }
    const bytes = base.slice();
    for (let k = 1 + Math.floor(rand() * 3); k > 0; k--) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
    try {
      dec.decode(bytes);
      admitted++;
    } catch (e) {
      // Every failure is the walk's (msgpackr never fails on what it admitted), but for a
      // RegExp's pattern or flags, which only the RegExp constructor checks.
      const late = e instanceof SyntaxError && /regular expression|RegExp/.test(e.message);
      assert.ok(e instanceof DecodeError || late, `msgpackr failed on what the walk admitted: ${String(e)} (${[...bytes].map((b) => b.toString(16)).join(" ")})`);
    }
    // The walk's table is msgpackr's, after success and after failure alike.
    const d = dec as unknown as { slots: unknown[]; model: { keys: Int32Array } };
    for (let s = 0; s < 64; s++) {
      const def = d.slots[s];
      assert.equal(d.model.keys[s], Array.isArray(def) ? def.length : -1, `slot ${s} after message ${i}`);
      // No two-byte definition (`highByte` 0) ever reaches msgpackr's table, nor one with a key twice.
      assert.notEqual((def as { highByte?: number } | undefined)?.highByte, 0);
      if (Array.isArray(def)) assert.equal(new Set(def).size, def.length, `slot ${s} repeats a key after message ${i}`);
    }
  }
  assert.ok(admitted > 1000, `only ${admitted} mutations decoded`);
});
