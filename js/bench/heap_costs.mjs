// What msgpackr's decoded values cost in V8 heap: the measurements behind the constants of
// src/decode_budget.ts (docs/RELIABILITY.md, "The web client's decode budget").
// Run with: npm run -s build && node --expose-gc bench/heap_costs.mjs [case]
//
// Each case is a message of N copies of one value in an array; it is decoded by an Unpackr
// with the connection's options, and the heap's growth (and ArrayBuffer memory's) is divided
// by N; beside it, what the decode budget's walk charges for the message, divided by N. Every
// figure includes the 8-byte slot of the value in its array. Each case runs in a process of
// its own, so one case's leftovers do not skew the next.

import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

import { Unpackr } from "msgpackr";

import "../dist/src/codec.js"; // registers the CapRef extension
import { RecordModel } from "../dist/src/decode_budget.js";

/** Values a message holds: fewer for the large ones (`NAME:count` on the command line). */
let N = 200_000;
const FEWER = { "record of 100 keys": 20_000, "definition + instance, 200 keys": 5_000, "map of 100": 20_000, "definition + instance, 8 keys": 100_000 };
const enc = new TextEncoder();
const u32 = (n) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
const str = (s) => {
  const u = [...enc.encode(s)];
  return u.length < 32 ? [0xa0 | u.length, ...u] : [0xd9, u.length, ...u];
};
const arr = (n) => (n < 16 ? [0x90 | n] : [0xdc, n >> 8, n & 255]);
const keys = (k, tag = "") => Array.from({ length: k }, (_, i) => `k${i}${tag}`);
const def = (k, tag) => [0xd4, 0x72, 0x40, ...arr(k), ...keys(k, tag).flatMap(str)];

/** A message `[prefix..., [elem(0), elem(1), ...]]` (or just the array without a prefix). */
function message(elem, prefix = []) {
  const chunks = [Uint8Array.from([...(prefix.length > 0 ? [0x92, ...prefix] : []), 0xdd, ...u32(N)])];
  for (let i = 0; i < N; i++) chunks.push(Uint8Array.from(typeof elem === "function" ? elem(i) : elem));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
/** N references to a record of `k` keys whose values are 1, after its definition. */
const records = (k) => message([0x40, ...Array(k).fill(1)], [...def(k), ...Array(k).fill(1)]);

const cases = {
  "nil": () => message([0xc0]),
  "small int": () => message([0x05]),
  "float64": () => message([0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]),
  "empty record": () => records(0),
  "record of 1 key": () => records(1),
  "record of 4 keys": () => records(4),
  "record of 15 keys": () => records(15),
  "record of 100 keys": () => records(100),
  "definition + instance, 8 keys": () => message((i) => [...def(8, `_${i % 1000}`), ...Array(8).fill(1)]),
  "definition + instance, 200 keys": () => message((i) => [...def(200, `_${i % 1000}`), ...Array(200).fill(1)]),
  "string of 1": () => message([0xa1, 0x78]),
  "string of 8": () => message((i) => str(`${i}`.padStart(8, "x"))),
  "string of 100": () => message((i) => str(`${i}`.padStart(100, "x"))),
  "string of 50 'ā' (100 bytes)": () => message((i) => str(`${i}`.padStart(50, "ā"))),
  "empty array": () => message([0x90]),
  "array of 1": () => message([0x91, 0x01]),
  "empty map": () => message([0x80]),
  "map of 4": () => message([0x84, 1, 1, 2, 1, 3, 1, 4, 1]),
  "map of 100": () => message([0xde, 0, 100, ...Array.from({ length: 100 }, (_, j) => [j & 0x3f, 1]).flat()]),
  "CapRef": () => message([0xd4, 0x50, 0x07]),
  "bin of 16": () => message([0xc4, 16, ...Array(16).fill(1)]),
  "Uint8Array of 15 (ext 0x74)": () => message([0xd8, 0x74, 0x01, ...Array(15).fill(1)]),
  "DataView (ext 0x74)": () => message([0xd4, 0x74, 0x11]),
  "Date": () => message([0xd6, 0xff, 0, 0, 0, 1]),
  "BigInt (d3)": () => message([0xd3, 0x7f, 0, 0, 0, 0, 0, 0, 1]),
  "undefined": () => message([0xd4, 0x00, 0x00]),
  "Set of 4": () => message([0xd4, 0x73, 0x00, 0x94, 1, 2, 3, 4]),
  "Error": () => message([0xd4, 0x65, 0x00, 0x92, ...str("E"), ...str("m")]),
  "RegExp": () => message((i) => [0xd4, 0x78, 0x00, 0x92, ...str(`a${i}`), 0xa0]),
};

/** What the decode budget's walk charges for `bytes`: the smallest budget that admits it. */
function charged(bytes) {
  const fits = (base) => {
    try {
      new RecordModel(256, { base, factor: 0 }).walk(bytes);
      return true;
    } catch {
      return false;
    }
  };
  let lo = 0;
  let hi = 1;
  while (!fits(hi)) hi *= 2;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) hi = mid;
    else lo = mid;
  }
  return hi;
}

const only = process.argv[2];
if (only === undefined) {
  const me = fileURLToPath(import.meta.url);
  console.log("case                              wire B  heap B  ArrayBuffer B  charged B  (per value, N = 200,000 or as FEWER says)");
  for (const name of Object.keys(cases)) {
    process.stdout.write(execFileSync(process.execPath, ["--expose-gc", me, name], { encoding: "utf8" }));
  }
} else {
  N = FEWER[only] ?? N;
  const bytes = cases[only]();
  const u = new Unpackr({ useRecords: true, sequential: true, moreTypes: true, structures: [] });
  globalThis.gc();
  const before = process.memoryUsage();
  const value = u.unpack(bytes);
  globalThis.gc();
  const after = process.memoryUsage();
  const per = (k) => ((after[k] - before[k]) / N).toFixed(1).padStart(7);
  console.log(`${only.padEnd(32)} ${(bytes.length / N).toFixed(1).padStart(7)} ${per("heapUsed")} ${per("arrayBuffers")} ${(charged(bytes) / N).toFixed(1).padStart(9)}`);
  globalThis.kept = [value, bytes];
}
