// The cost of the decode budget's walk on ordinary frames (docs/RELIABILITY.md, "The web
// client's decode budget"). Run with: npm run -s build && node bench/decode_walk.mjs
//
// Decodes the same messages through a FrameDecoder (walk, then msgpackr) and through a bare
// msgpackr Unpackr with the connection's options, and prints the time of each per message.

import { Unpackr } from "msgpackr";

import { FrameDecoder, FrameEncoder } from "../dist/src/index.js";

const frames = {
  "call, small args": { op: "call", id: 12, target: { kind: "cap", id: 2 }, method: "echo", args: { name: "x", n: 3 }, meta: undefined },
  "result, small value": { op: "result", id: 12, ok: true, value: { a: 1, b: "two", c: [1, 2, 3] } },
  "stream next": { op: "stream", id: 7, ev: "next", value: { i: 1 } },
  "result, 100 records": { op: "result", id: 9, ok: true, value: Array.from({ length: 100 }, (_, i) => ({ id: i, name: `row ${i}`, score: i / 3 })) },
  "result, 64 KiB string": { op: "result", id: 9, ok: true, value: "x".repeat(65536) },
};

const ROUNDS = 5;
for (const [name, frame] of Object.entries(frames)) {
  const enc = new FrameEncoder();
  // The first message defines the records, the rest reference them: time the references.
  const first = enc.encode(frame);
  const bytes = enc.encode(frame);
  const iterations = Math.max(2000, Math.floor(20_000_000 / (bytes.length * 20)));
  const run = (decode) => {
    let best = Infinity;
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < iterations; i++) decode(bytes);
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / iterations);
    }
    return best;
  };
  const dec = new FrameDecoder();
  dec.decode(first);
  const walked = run((b) => dec.decode(b));
  const bare = new Unpackr({ useRecords: true, sequential: true, moreTypes: true, structures: [] });
  bare.unpack(first);
  const plain = run((b) => bare.unpack(b));
  console.log(
    `${name.padEnd(22)} ${String(bytes.length).padStart(6)} bytes  FrameDecoder ${walked.toFixed(0).padStart(7)} ns  msgpackr alone ${plain.toFixed(0).padStart(7)} ns  walk and count ${(walked - plain).toFixed(0).padStart(6)} ns`,
  );
}
