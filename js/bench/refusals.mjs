// Hostile messages, decoded by msgpackr alone (as FrameDecoder did before its walk) and by
// FrameDecoder: the heap each takes and how long FrameDecoder takes to refuse it
// (docs/RELIABILITY.md, "The web client's decode budget").
// Run with: npm run -s build && node --expose-gc bench/refusals.mjs

import { Unpackr } from "msgpackr";

import { FrameDecoder } from "../dist/src/index.js";

const MiB = 1024 * 1024;
const u32 = (n) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];

/** An array of `n` values, the first `first`, the rest `rest` (one byte each). */
function fill(n, first, rest) {
  const b = new Uint8Array(5 + first.length + (n - 1));
  b.set([0xdd, ...u32(n)]);
  b.set(first, 5);
  b.fill(rest, 5 + first.length);
  return b;
}

const cases = {
  "8 MiB of empty-record references": () => fill(8 * MiB, [0xd4, 0x72, 0x40, 0x90], 0x40),
  "8 MiB of nils": () => fill(8 * MiB, [0xc0], 0xc0),
  "64 MiB of empty-record references": () => fill(64 * MiB, [0xd4, 0x72, 0x40, 0x90], 0x40),
  "1 MiB of nested arrays": () => new Uint8Array(MiB).fill(0x91),
};

const heap = () => {
  globalThis.gc();
  return process.memoryUsage().heapUsed;
};
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;

for (const [name, make] of Object.entries(cases)) {
  const bytes = make();
  let line = `${name.padEnd(36)} ${mb(bytes.length).padStart(9)}`;
  // FrameDecoder first, on a quiet heap.
  let before = heap();
  const t0 = process.hrtime.bigint();
  try {
    new FrameDecoder().decode(bytes);
    line += "  FrameDecoder: decoded!";
  } catch (e) {
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    line += `  FrameDecoder: ${e.kind} in ${ms.toFixed(1)} ms, heap +${mb(Math.max(0, heap() - before))}`;
  }
  // msgpackr alone (not at 64 MiB: several GB).
  if (bytes.length < 16 * MiB) {
    before = heap();
    let kept;
    try {
      kept = new Unpackr({ useRecords: true, sequential: true, moreTypes: true, structures: [] }).unpack(bytes);
      line += `  msgpackr alone: heap +${mb(heap() - before)}`;
    } catch (e) {
      line += `  msgpackr alone: ${String(e.message).slice(0, 32)}`;
    }
    kept = undefined;
    void kept;
  }
  console.log(line);
}
