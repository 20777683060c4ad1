// The web client under random operations against the Rust server (docs/RELIABILITY.md, "The
// web client under random operations against the Rust server"): seeded sequences of calls,
// sub-caps, releases, aborts, deadlines, streams and closes with work in flight, by several
// actors over several connections at once to `bunite-rpc interop-server` (`random_ops.ts`).
//
// `npm test` runs the fixed seeds and seeds 1-DEFAULT_SEEDS; `BUNITE_FUZZ_SECONDS=600 npm test`
// (or `node --experimental-websocket --test dist/test/random_ops.test.js`) runs seeds for that
// long from `BUNITE_FUZZ_SEED` (default: the clock) and lists every seed that failed;
// `BUNITE_FUZZ_SEED=N BUNITE_FUZZ_SECONDS=0.001` replays seed N alone (`BUNITE_FUZZ_TRACE=1`
// prints its operations). A quarter of the seeds run inside the sealed pipe; a third against a
// server process of their own, stopped (SIGTERM) or killed (SIGKILL) with work in flight
// (`target`); the others against the run's two servers (plain and `--key`), which at the end
// must still be up and answer a fresh connection.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { connect, keyFromHex } from "../src/index.js";
import { InteropCounter } from "../src/interop.gen.js";
import { KEY } from "./interop_checks.js";
import { outcomes, runSeed, type Target } from "./random_ops.js";
import { runSeeds } from "./settling.js";
import { start, type Server } from "./server.js";

/** Seeds that found something (docs/RELIABILITY.md), replayed first. */
const FIXED: number[] = [];
/** Seeds run by `npm test` besides the fixed ones. */
const DEFAULT_SEEDS = 40;

/** The servers of the whole run: plain WebSocket, and inside the sealed pipe (`--key`). */
let server: Server;
let sealedServer: Server;
const key = keyFromHex(KEY);
before(async () => {
  server = await start(["interop-server"]);
  sealedServer = await start(["interop-server", "--key", KEY]);
});
after(async () => {
  await server.stop();
  await sealedServer.stop();
});

/**
 * Where seed `seed` runs: a quarter of the seeds inside the sealed pipe; a sixth against a
 * server of their own stopped gracefully (SIGTERM) at a random operation, a sixth against
 * one killed (SIGKILL); the others against the servers of the run.
 */
async function target(seed: number): Promise<{ target: Target; mode: string }> {
  // Both kinds of end meet the pipe too: 19 mod 24 is sealed and stopped, 16 mod 24 sealed and killed.
  const isSealed = seed % 8 === 0 || seed % 8 === 3;
  const how = seed % 6 === 1 ? "term" : seed % 6 === 4 ? "kill" : undefined;
  const mode = `${isSealed ? "sealed" : "plain"}${how !== undefined ? `, server ${how === "term" ? "stopped" : "killed"}` : ""}`;
  if (how === undefined) return { target: isSealed ? { url: sealedServer.urls[0]!, key } : { url: server.urls[0]! }, mode };
  const own = await start(["interop-server", ...(isSealed ? ["--key", KEY] : [])]);
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    if (own.child.exitCode !== null || own.child.signalCode !== null) resolve({ code: own.child.exitCode, signal: own.child.signalCode });
    else own.child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  const signal = () => void own.child.kill(how === "term" ? "SIGTERM" : "SIGKILL");
  return { target: { url: own.urls[0]!, ...(isSealed ? { key } : {}), end: { how, signal, exited } }, mode };
}

test("random operations against the Rust server: every answer as the caps say, everything settles, tables empty", async () => {
  const failures: string[] = [];
  const modes = new Map<string, number>();
  const run = async (seed: number) => {
    const { target: t, mode } = await target(seed);
    // A seed that throws (a connection that fails to open) is a failing seed, not the end of the run.
    const problems = await runSeed(t, seed).catch((e: unknown) => [`threw: ${String((e as Error)?.stack ?? e)}`]);
    if (t.end !== undefined) {
      // Whatever happened, the seed's own server is gone before the next seed.
      t.end.signal();
      await t.end.exited;
    }
    modes.set(mode, (modes.get(mode) ?? 0) + 1);
    if (problems.length > 0) {
      const line = `seed ${seed} (${mode}): ${problems.slice(0, 5).join("; ")}`;
      console.log(`FAILED ${line}`);
      failures.push(line);
    }
  };
  const summary = () => [
    `${failures.length} failed`,
    `modes: ${JSON.stringify(Object.fromEntries([...modes].sort()))}`,
    `outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}`,
  ];
  if (await runSeeds("random ops", FIXED, DEFAULT_SEEDS, run, summary)) {
    // The sequences reach what they aim at.
    for (const key of ["burst ok", "makeChild ok", "call after release", "call after dispose", "abort ok", "deadline ok", "ticks read to the end", "watch ok", "ephemeral ok", "askPeer answered", "askPeer not_found", "peer-unserve ok", "connection ended by term", "connection ended by kill", "probe call after SIGTERM refused"]) {
      assert.ok((outcomes.get(key) ?? 0) > 0, `no ${key}: ${JSON.stringify([...outcomes])}`);
    }
    for (const mode of ["plain", "sealed", "plain, server stopped", "plain, server killed", "sealed, server stopped", "sealed, server killed"]) {
      assert.ok((modes.get(mode) ?? 0) > 0, `no seed ran ${mode}: ${JSON.stringify([...modes])}`);
    }
    assert.ok([...outcomes.keys()].some((k) => k.endsWith(" unavailable")), "no operation met a close with work in flight");
    assert.ok([...outcomes.keys()].some((k) => k.endsWith("(term: peer_closing)")), "no operation met a graceful stop with work in flight");
    assert.ok([...outcomes.keys()].some((k) => k.endsWith("(kill: transport closed)")), "no operation met a killed server with work in flight");
  }
  assert.deepEqual(failures.slice(0, 20), []);
  // The servers of the run are still up, and a fresh connection works.
  for (const [s, options] of [[server, {}], [sealedServer, { key }]] as const) {
    assert.equal(s.child.exitCode, null, "the server exited");
    assert.equal(s.child.signalCode, null, "the server was killed");
    const conn = await connect(s.urls[0]!, { origin: "after the random ops", ...options });
    const counter = await conn.bootstrap(InteropCounter);
    assert.deepEqual(await counter.increment({ delta: 3 }), { count: 3 });
    conn.close();
    await conn.closed;
  }
});
