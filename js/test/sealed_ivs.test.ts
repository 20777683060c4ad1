// The sealed pipe's IV rules without a connection (src/sealed_ivs.ts): the sink's salt and
// counter, a fresh salt when the counter would wrap, and the source's window at its edge.

import assert from "node:assert/strict";
import { test } from "node:test";

import { REPLAY_WINDOW, SealedOpenError, SinkIvs, SourceIvs } from "../src/sealed_ivs.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

test("a sink's IVs: one salt, counters from 0, a fresh salt (one of ours) after counter 2^32 - 1", () => {
  const ours = new Set<bigint>();
  const sink = new SinkIvs(ours);
  const ivs = [sink.next(), sink.next(), sink.next()];
  assert.deepEqual(
    ivs.map((iv) => hex(iv.subarray(8))),
    ["00000000", "00000001", "00000002"],
  );
  assert.equal(new Set(ivs.map((iv) => hex(iv.subarray(0, 8)))).size, 1);
  assert.equal(ours.size, 1);
  (sink as unknown as { counter: number }).counter = 0xffff_fffe;
  const last = sink.next();
  assert.equal(hex(last.subarray(0, 8)), hex(ivs[0]!.subarray(0, 8)));
  assert.equal(hex(last.subarray(8)), "ffffffff");
  const fresh = sink.next();
  assert.notEqual(hex(fresh.subarray(0, 8)), hex(last.subarray(0, 8)));
  assert.equal(hex(fresh.subarray(8)), "00000000");
  assert.equal(ours.size, 2);
  // Both salts are refused by the source beside it.
  const source = new SourceIvs(ours);
  for (const iv of [last, fresh]) assert.throws(() => source.admit(iv), (e: unknown) => e instanceof SealedOpenError && e.kind === "reflected");
});

test("a source: counter 2^32 - 1 may be followed by 0 under the same salt; random IVs in any order; the window holds the last 1,024", () => {
  const source = new SourceIvs(new Set());
  const iv = (salt: number, counter: number) => {
    const b = new Uint8Array(12);
    new DataView(b.buffer).setUint32(4, salt);
    new DataView(b.buffer).setUint32(8, counter);
    return b;
  };
  source.admit(iv(7, 0xffff_ffff));
  source.admit(iv(7, 0));
  assert.throws(() => source.admit(iv(7, 2)), (e: unknown) => e instanceof SealedOpenError && e.kind === "out_of_sequence" && /counter 2 after 0/.test(e.message));
  // Another source, random salts: only the window.
  const random = new SourceIvs(new Set());
  for (let i = 0; i <= REPLAY_WINDOW; i++) random.admit(iv(1000 + i, 5));
  assert.throws(() => random.admit(iv(1000 + 1, 5)), (e: unknown) => e instanceof SealedOpenError && e.kind === "replay");
  random.admit(iv(1000, 5)); // forgotten: beyond the window
});
