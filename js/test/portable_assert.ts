// The part of `node:assert/strict` the interop checks use (interop_checks.ts), for where
// `node:assert` does not exist: the checks run inside Chromium with this one and in Node
// with Node's. `equal` is `Object.is`; `deepEqual` compares prototypes, own enumerable
// string keys (in any order), array and typed-array contents (and their types), Maps (keys
// by identity, values deeply), Sets (members by identity) and Dates by time; a kind of
// object it does not know it refuses instead of calling equal. Unlike Node's
// deepStrictEqual it ignores symbol keys (no value the checks compare has one) and is
// stricter on Sets of objects; portable_assert.test.ts holds it to Node's verdicts.

import type { Assert } from "./interop_checks.js";

export class PortableAssertionError extends Error {
  override name = "AssertionError";
}

const show = (v: unknown): string => {
  if (typeof v === "string") return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
  if (typeof v === "bigint") return `${v}n`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as Uint8Array).length ?? v.byteLength})`;
  if (typeof v !== "object" || v === null) return String(v);
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 200 ? `${s.slice(0, 200)}…` : s;
  } catch {
    return Object.prototype.toString.call(v);
  }
};

/** Where `a` and `b` first differ (a path and the two values), or undefined if deep-equal. */
export function difference(a: unknown, b: unknown, path = "$"): string | undefined {
  if (Object.is(a, b)) return undefined;
  const differ = `${path}: ${show(a)} !== ${show(b)}`;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return differ;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return `${path}: prototypes differ (${show(a)} vs ${show(b)})`;
  if (ArrayBuffer.isView(a)) {
    const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const y = new Uint8Array((b as ArrayBufferView).buffer, (b as ArrayBufferView).byteOffset, (b as ArrayBufferView).byteLength);
    if (x.length !== y.length) return `${path}: ${x.length} bytes !== ${y.length} bytes`;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return `${path}: byte ${i} is ${x[i]}, expected ${y[i]}`;
    return undefined;
  }
  if (a instanceof Date) return a.getTime() === (b as Date).getTime() ? undefined : differ;
  if (a instanceof Map) {
    const m = b as Map<unknown, unknown>;
    if (a.size !== m.size) return `${path}: Map of ${a.size} !== Map of ${m.size}`;
    for (const [k, v] of a) {
      if (!m.has(k)) return `${path}: key ${show(k)} missing`;
      const d = difference(v, m.get(k), `${path}.get(${show(k)})`);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  if (a instanceof Set) {
    const s = b as Set<unknown>;
    if (a.size !== s.size) return `${path}: Set of ${a.size} !== Set of ${s.size}`;
    for (const v of a) if (!s.has(v)) return `${path}: ${show(v)} missing`;
    return undefined;
  }
  const proto = Object.getPrototypeOf(a);
  if (!Array.isArray(a) && proto !== Object.prototype && proto !== null) {
    throw new PortableAssertionError(`${path}: deepEqual cannot compare ${Object.prototype.toString.call(a)} here`);
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return `${path}: keys [${ka.join(", ")}] !== [${kb.join(", ")}]`;
  for (const k of ka) {
    if (!Object.prototype.propertyIsEnumerable.call(b, k)) return `${path}: key ${k} missing`;
    const d = difference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], Array.isArray(a) ? `${path}[${k}]` : `${path}.${k}`);
    if (d !== undefined) return d;
  }
  return undefined;
}

const failWith = (message: string | undefined, what: string): never => {
  throw new PortableAssertionError(message === undefined ? what : `${message} (${what})`);
};

/** `node:assert/strict`'s `equal`, `deepEqual`, `ok` and `fail`, without Node. */
export const portableAssert: Assert = {
  equal(actual, expected, message) {
    if (!Object.is(actual, expected)) failWith(message, `${show(actual)} !== ${show(expected)}`);
  },
  deepEqual(actual, expected, message) {
    const d = difference(actual, expected);
    if (d !== undefined) failWith(message, `not deep-equal: ${d}`);
  },
  ok(value, message): asserts value {
    if (!value) failWith(message, `${show(value)} is not truthy`);
  },
  fail(message) {
    throw new PortableAssertionError(message ?? "failed");
  },
};
