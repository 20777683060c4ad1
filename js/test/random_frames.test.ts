// The web client under random frames (docs/RELIABILITY.md, "The web client under random
// frames"): seeded random sequences of frames and bytes from a hostile peer
// (`random_frames.ts`), each run by `random_run.ts`, which checks the client is left clean.
//
// `npm test` runs the fixed seeds and a range of others; `BUNITE_FUZZ_SECONDS=600 npm test`
// (or `node --test dist/test/random_frames.test.js`) runs random seeds for that long, from
// `BUNITE_FUZZ_SEED` (default: the clock), and lists every seed that failed.

import assert from "node:assert/strict";
import { test } from "node:test";

import { runSeed, sent } from "./random_run.js";

/** Seeds that found something (docs/RELIABILITY.md, "The web client under random frames"), replayed first: 835 the served stream window. */
const FIXED: number[] = [835];
/** Seeds run by `npm test` besides the fixed ones. */
const DEFAULT_SEEDS = 2000;

test("random frames: the fixed seeds and a range of others leave the client clean", async () => {
  const seconds = Number(process.env["BUNITE_FUZZ_SECONDS"] ?? 0);
  const failures: string[] = [];
  const run = async (seed: number) => {
    const problems = await runSeed(seed);
    if (problems.length > 0) failures.push(`seed ${seed}: ${problems.join("; ")}`);
  };
  for (const seed of FIXED) await run(seed);
  if (seconds > 0) {
    let seed = Number(process.env["BUNITE_FUZZ_SEED"] ?? Date.now() % 2 ** 31);
    const until = Date.now() + seconds * 1000;
    let n = 0;
    for (; Date.now() < until; n++) await run(seed++);
    console.log(`random frames: ${n} sequences, seeds up to ${seed - 1}, ${failures.length} failed`);
  } else {
    for (let seed = 1; seed <= DEFAULT_SEEDS; seed++) await run(seed);
    // The sequences reach what they aim at: the served cap answers and streams, the client
    // cancels and releases, and some sequences end in a protocol error.
    for (const key of ["result true", "stream next", "stream credit", "cancel", "drop", "goaway invalid_argument"]) {
      assert.ok((sent.get(key) ?? 0) > 0, `no ${key} from the client: ${JSON.stringify([...sent])}`);
    }
  }
  assert.deepEqual(failures.slice(0, 20), []);
});
