// The assert the interop checks use inside Chromium (portable_assert.ts) gives Node's
// verdict on every pair below: a check that fails in Node fails in the browser too.

import assert from "node:assert/strict";
import { test } from "node:test";
import { isDeepStrictEqual } from "node:util";

import { richValue } from "./interop_checks.js";
import { difference, portableAssert, PortableAssertionError } from "./portable_assert.js";

const bytes = (...b: number[]) => Uint8Array.from(b);
const rich = richValue();
const pairs: Array<[string, unknown, unknown]> = [
  ["same number", 1, 1],
  ["1 and '1'", 1, "1"],
  ["0 and -0", 0, -0],
  ["NaN and NaN", NaN, NaN],
  ["null and undefined", null, undefined],
  ["null and {}", null, {}],
  ["equal records", { a: 1, b: [1, 2] }, { b: [1, 2], a: 1 }],
  ["a missing key", { a: 1 }, { a: 1, b: 2 }],
  ["an undefined key and none", { a: undefined }, {}],
  ["a deep difference", { a: { b: { c: [1, {}] } } }, { a: { b: { c: [1, { d: 1 }] } } }],
  ["array and record", [1], { 0: 1 }],
  ["arrays of other lengths", [1, 2], [1, 2, 3]],
  ["equal bytes", bytes(1, 2, 3), bytes(1, 2, 3)],
  ["one byte differs", bytes(1, 2, 3), bytes(1, 2, 4)],
  ["shorter bytes", bytes(1, 2), bytes(1, 2, 3)],
  ["Uint8Array and Int8Array", bytes(1), Int8Array.from([1])],
  ["Uint8Array and Buffer", bytes(1), Buffer.from([1])],
  ["bytes and array", bytes(1), [1]],
  ["a subarray and its bytes", bytes(9, 1, 2).subarray(1), bytes(1, 2)],
  ["equal maps", new Map<unknown, unknown>([[1, "a"], ["1", { b: 2 }]]), new Map<unknown, unknown>([["1", { b: 2 }], [1, "a"]])],
  ["a map's value differs", new Map([[1, "a"]]), new Map([[1, "b"]])],
  ["a map's key differs", new Map([[1, "a"]]), new Map([["1", "a"]])],
  ["map and record", new Map([["a", 1]]), { a: 1 }],
  ["equal sets", new Set([1, 2]), new Set([2, 1])],
  ["other sets", new Set([1, 2]), new Set([1, 3])],
  ["equal dates", new Date(5), new Date(5)],
  ["other dates", new Date(5), new Date(6)],
  ["the rich echo value", rich, richValue()],
  ["the rich echo value, one int off", rich, { ...richValue(), ints: [...rich.ints.slice(0, -1), 0] }],
  ["the rich echo value, one byte off", rich, { ...richValue(), bin: bytes(...rich.bin.subarray(1), 0) }],
  ["the rich echo value, null dropped", rich, (({ null: _, ...r }) => r)(richValue())],
];

test("portableAssert.deepEqual gives node:assert/strict's verdict", () => {
  for (const [name, a, b] of pairs) {
    const node = isDeepStrictEqual(a, b);
    assert.equal(difference(a, b) === undefined, node, name);
    if (node) portableAssert.deepEqual(a, b, name);
    else assert.throws(() => portableAssert.deepEqual(a, b, name), (e: unknown) => e instanceof PortableAssertionError && e.message.startsWith(`${name} (not deep-equal: $`));
  }
});

test("portableAssert.deepEqual refuses kinds of object it cannot compare", () => {
  class Point {
    constructor(readonly x: number) {}
  }
  assert.throws(() => portableAssert.deepEqual(new Point(1), new Point(2)), /cannot compare/);
});

test("portableAssert.equal, ok and fail as node:assert/strict's", () => {
  portableAssert.equal(NaN, NaN);
  portableAssert.equal("a", "a");
  assert.throws(() => portableAssert.equal(0, -0), PortableAssertionError);
  assert.throws(() => portableAssert.equal({}, {}), PortableAssertionError);
  assert.throws(() => portableAssert.equal(1, "1", "the count"), /^AssertionError: the count \(1 !== "1"\)$/);
  portableAssert.ok(1);
  for (const falsy of [0, "", null, undefined, false, NaN]) assert.throws(() => portableAssert.ok(falsy, "why"), /^AssertionError: why/);
  assert.throws(() => portableAssert.fail("because"), /^AssertionError: because$/);
});
