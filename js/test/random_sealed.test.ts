// A seeded random man in the middle of the web client's sealed pipe (docs/RELIABILITY.md, "The
// web client's sealed pipe against a man in the middle, seeded"): each seed one case of
// `random_sealed.ts`, a web client against another web client, or (a third of the seeds)
// against `bunite-rpc interop-server --key` (`BUNITE_RPC_BIN`).
//
// `npm test` runs the fixed seeds and seeds 1-DEFAULT_SEEDS; `BUNITE_FUZZ_SECONDS=600 npm test`
// (or `node --experimental-websocket --test dist/test/random_sealed.test.js`) runs seeds for
// that long from `BUNITE_FUZZ_SEED` (default: the clock) and lists every seed that failed;
// `BUNITE_FUZZ_SEED=N BUNITE_FUZZ_SECONDS=0.001` replays seed N alone (`BUNITE_FUZZ_TRACE=1`
// prints its draw and what the relay delivered besides the messages as sent;
// `BUNITE_FUZZ_TIMES=1` how long each seed took).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { KEY } from "./interop_checks.js";
import { reach, runSeed } from "./random_sealed.js";
import { runSeeds } from "./settling.js";
import { start, type Server } from "./server.js";

/** Seeds that found something (docs/RELIABILITY.md), replayed first. */
const FIXED: number[] = [];
/** Seeds run by `npm test` besides the fixed ones. */
const DEFAULT_SEEDS = 48;

let server: Server;
before(async () => {
  server = await start(["interop-server", "--key", KEY]);
});
after(async () => {
  await server.stop();
});

/** Whether seed `seed` runs against the Rust server. */
const againstRust = (seed: number) => seed % 3 === 0;

test("a seeded man in the middle of the sealed pipe: what the model refuses closes its receiver with the rule's text, nothing after it runs or is answered, tables empty", async () => {
  const failures: string[] = [];
  let rustSeeds = 0;
  const run = async (seed: number) => {
    const rust = againstRust(seed);
    rustSeeds += rust ? 1 : 0;
    const t0 = Date.now();
    const problems = await runSeed(seed, rust ? server.urls[0]! : undefined, KEY).catch((e: unknown) => [`threw: ${String((e as Error)?.stack ?? e)}`]);
    if (process.env["BUNITE_FUZZ_TIMES"] !== undefined) console.log(`seed ${seed}: ${Date.now() - t0} ms`);
    if (problems.length > 0) {
      const line = `seed ${seed} (${rust ? "against interop-server --key" : "two web clients"}): ${problems.slice(0, 5).join("; ")}`;
      console.log(`FAILED ${line}`);
      failures.push(line);
    }
  };
  const summary = () => [`${failures.length} failed, ${rustSeeds} against the Rust server`, `reach: ${JSON.stringify(Object.fromEntries([...reach].sort()))}`];
  if (await runSeeds("random sealed", FIXED, DEFAULT_SEEDS, run, summary)) {
    console.log(`random sealed: ${summary().join("; ")}`);
    // The cases reach what they aim at.
    for (const key of [
      "refused",
      "closed by the pipe with its text",
      "refused replayed",
      "refused reflected",
      "refused out of sequence",
      "refused by the Rust server",
      "refused by A, of the Rust server's messages",
      "cases with no fault",
      "cases with a message the docs promise nothing for",
      "cases with a foreign message",
    ]) {
      assert.ok((reach.get(key) ?? 0) > 0, `no ${key}: ${JSON.stringify([...reach])}`);
    }
  }
  assert.deepEqual(failures.slice(0, 20), []);
  assert.equal(server.child.exitCode, null, "the server exited");
});
