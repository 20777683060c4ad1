// The web client under random operations against the Rust server (docs/RELIABILITY.md, "The
// web client under random operations against the Rust server"): seeded sequences of calls,
// sub-caps, releases, aborts, deadlines, streams and closes with work in flight, by several
// actors over several connections at once to `bunite-rpc interop-server` (`random_ops.ts`).
//
// `npm test` runs the fixed seeds and seeds 1-DEFAULT_SEEDS; `BUNITE_FUZZ_SECONDS=600 npm test`
// (or `node --experimental-websocket --test dist/test/random_ops.test.js`) runs seeds for that
// long from `BUNITE_FUZZ_SEED` (default: the clock) and lists every seed that failed;
// `BUNITE_FUZZ_SEED=N BUNITE_FUZZ_SECONDS=0.001` replays seed N alone (`BUNITE_FUZZ_TRACE=1`
// prints its operations). The server is one process for the whole run: at the end it must
// still be up and answer a fresh connection.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { connect } from "../src/index.js";
import { InteropCounter } from "../src/interop.gen.js";
import { outcomes, runSeed } from "./random_ops.js";
import { start, type Server } from "./server.js";

/** Seeds that found something (docs/RELIABILITY.md), replayed first. */
const FIXED: number[] = [];
/** Seeds run by `npm test` besides the fixed ones. */
const DEFAULT_SEEDS = 30;

let server: Server;
before(async () => {
  server = await start(["interop-server"]);
});
after(async () => {
  await server.stop();
});

test("random operations against the Rust server: every answer as the caps say, everything settles, tables empty", async () => {
  const url = server.urls[0]!;
  const seconds = Number(process.env["BUNITE_FUZZ_SECONDS"] ?? 0);
  const failures: string[] = [];
  const run = async (seed: number) => {
    const problems = await runSeed(url, seed);
    if (problems.length > 0) {
      const line = `seed ${seed}: ${problems.slice(0, 5).join("; ")}`;
      console.log(`FAILED ${line}`);
      failures.push(line);
    }
  };
  for (const seed of FIXED) await run(seed);
  if (seconds > 0) {
    let seed = Number(process.env["BUNITE_FUZZ_SEED"] ?? Date.now() % 2 ** 31);
    const until = Date.now() + seconds * 1000;
    let n = 0;
    do {
      await run(seed++);
      n++;
    } while (Date.now() < until);
    console.log(`random ops: ${n} sequences, seeds up to ${seed - 1}, ${failures.length} failed`);
    console.log(`outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}`);
  } else {
    for (let seed = 1; seed <= DEFAULT_SEEDS; seed++) await run(seed);
    // The sequences reach what they aim at.
    for (const key of ["burst ok", "makeChild ok", "call after release", "call after dispose", "abort ok", "deadline ok", "ticks read to the end", "watch ok", "ephemeral ok"]) {
      assert.ok((outcomes.get(key) ?? 0) > 0, `no ${key}: ${JSON.stringify([...outcomes])}`);
    }
    assert.ok([...outcomes.keys()].some((k) => k.endsWith(" unavailable")), "no operation met a close with work in flight");
  }
  assert.deepEqual(failures.slice(0, 20), []);
  // The server is still up, and a fresh connection works.
  assert.equal(server.child.exitCode, null, "the server exited");
  assert.equal(server.child.signalCode, null, "the server was killed");
  const conn = await connect(url, { origin: "after the random ops" });
  const counter = await conn.bootstrap(InteropCounter);
  assert.deepEqual(await counter.increment({ delta: 3 }), { count: 3 });
  conn.close();
  await conn.closed;
});
