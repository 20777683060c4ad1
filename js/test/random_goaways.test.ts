// The web client against goaways and revocations from the Rust server (docs/RELIABILITY.md,
// "The web client against goaways and revocations"): seeded sequences, in the style of
// `random_ops.test.ts`, each on one connection to `bunite-rpc interop-server` (plain or inside
// the sealed pipe), in three parts:
//
// 1. cap-returning calls (`makeChild`, `children`, `childMap`, a bootstrap) aborted while
//    their answers may be on the way: the caps of a late answer are released (the server's
//    `liveChildren` comes back to what the sequence holds);
// 2. the server revokes `interop.ephemeral` (`unserveMe`) while pings on it are in flight and
//    its proxies are released or disposed at random moments: every ping answers, fails
//    `not_found` (sent after the unserve), `revoked` or `cap released`; every dispose settles;
//    the connection keeps working;
// 3. with calls, streams (with and without abort signals, deadlines), bootstraps and held
//    children in flight, the client is made to break the protocol so that the server answers
//    with a goaway that is not a graceful stop: a value nested past the server's depth limit
//    (through `echo`, the public API), bytes no decoder reads, a call reusing the id of a call
//    in flight, a message over the server's `--max-bytes` (the last three sent by a hook in the
//    transport). Then every pending call and stream fails `unavailable` with the goaway's
//    reason as its message and `details.reason` `goaway`, whatever is begun after fails
//    locally (`connection closed`, no reason), `closed` resolves with the reason, the
//    tables are empty, no timer and no abort listener is left, and the server's own counts
//    (`--stats`) show the connection finished with no handler or stream left.
//
// `npm test` runs the fixed seeds and seeds 1-DEFAULT_SEEDS; `BUNITE_FUZZ_SECONDS=N` runs seeds
// from `BUNITE_FUZZ_SEED` for N seconds; `BUNITE_FUZZ_TRACE=1` prints each sequence's steps.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { getEventListeners } from "node:events";
import { after, before, test } from "node:test";

import { Connection, RpcError, capId, dispose, keyFromHex, openWebSocket, release, sealed, type Client, type Transport, type ValueStream } from "../src/index.js";
import { InteropChild, InteropCounter, InteropEphemeral, InteropVersioned } from "../src/interop.gen.js";
import { KEY } from "./interop_checks.js";
import { Rng } from "./random_frames.js";
import { Mismatch, bounded, check, runSeeds, sleep, timers, until } from "./settling.js";
import { BIN } from "./server.js";

/** Seeds that found something (docs/RELIABILITY.md), replayed first. */
const FIXED: number[] = [];
/** Seeds run by `npm test` besides the fixed ones. */
const DEFAULT_SEEDS = 100;
/** The servers' `--max-bytes`: small, so that a message over it is cheap to send. */
const MAX_BYTES = 256 * 1024;
const trace = process.env["BUNITE_FUZZ_TRACE"] !== undefined;

type Counter = Client<InteropCounter>;
type Child = Client<InteropChild>;



function isCode(e: unknown, code: string, reason?: string): e is RpcError {
  return e instanceof RpcError && e.code === code && (reason === undefined || e.reason === reason);
}

function describe(e: unknown): string {
  return e instanceof RpcError ? `RpcError ${e.code}${e.reason !== undefined ? `/${e.reason}` : ""}: ${e.message}` : String((e as Error)?.stack ?? e);
}


/** What each kind of step ended in, over all sequences (to check the sequences reach what they aim at). */
const outcomes = new Map<string, number>();
const count = (key: string) => outcomes.set(key, (outcomes.get(key) ?? 0) + 1);

/** An `interop-server --stats` of the run: its stdin asks for its live counts. */
interface StatsServer {
  child: ChildProcess;
  url: string;
  /** `connections`, `handlers`, `streams`, … of the server's live connections. */
  counts(): Promise<Record<string, number>>;
}

function startStats(args: string[]): Promise<StatsServer> {
  const child = spawn(BIN, ["interop-server", "--stats", "--max-bytes", String(MAX_BYTES), ...args], { stdio: ["pipe", "pipe", "inherit"] });
  child.stdout!.setEncoding("utf8");
  let buffered = "";
  const lines: string[] = [];
  const waiting: Array<(line: string) => void> = [];
  child.stdout!.on("data", (chunk: string) => {
    buffered += chunk;
    let i;
    while ((i = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      const w = waiting.shift();
      if (w !== undefined) w(line);
      else lines.push(line);
    }
  });
  const nextLine = () => new Promise<string>((resolve) => (lines.length > 0 ? resolve(lines.shift()!) : waiting.push(resolve)));
  const counts = async () => {
    child.stdin!.write("\n");
    const line = await bounded("the server's stats", nextLine());
    return Object.fromEntries(
      line
        .split(" ")
        .slice(1)
        .map((kv) => kv.split("="))
        .map(([k, v]) => [k!, Number(v)]),
    );
  };
  return bounded("the server's URL", nextLine(), 20_000).then((line) => {
    check(line.startsWith("listening "), `the server printed ${line}`);
    return { child, url: line.slice("listening ".length).trim(), counts };
  });
}

let plain: StatsServer;
let sealedServer: StatsServer;
const key = keyFromHex(KEY);
before(async () => {
  plain = await startStats([]);
  sealedServer = await startStats(["--key", KEY]);
});
after(async () => {
  for (const s of [plain, sealedServer]) {
    if (s.child.exitCode !== null || s.child.signalCode !== null) continue;
    const exited = new Promise((resolve) => s.child.once("exit", resolve));
    // Its stdin closed too: a server before 2026-12-07 waited for it after SIGTERM.
    s.child.stdin!.end();
    s.child.kill("SIGTERM");
    await exited;
  }
});

/** The transport the connection is given, with the hook the test breaks the protocol through. */
interface Hooked extends Transport {
  /** Sends `bytes` as one message, behind the connection's back (through the sealed pipe if there is one). */
  inject(bytes: Uint8Array): void;
  /** The last message the connection sent. */
  last(): Uint8Array | undefined;
}

async function open(target: StatsServer, isSealed: boolean, signals: AbortSignal[]): Promise<{ conn: Connection; hooked: Hooked; counter: Counter }> {
  const socket = await openWebSocket(target.url);
  const ws: Transport = isSealed ? sealed(socket, key) : socket;
  let last: Uint8Array | undefined;
  const hooked: Hooked = {
    start: (e) => ws.start(e),
    send: (d) => {
      last = d;
      ws.send(d);
    },
    close: () => ws.close(),
    inject: (d) => ws.send(d),
    last: () => last,
  };
  const conn = new Connection(hooked, { origin: "bunite-rpc random goaways" });
  const signal = new AbortController().signal;
  signals.push(signal);
  // A bootstrap with a signal: its listener is gone once it is answered.
  const counter = await bounded("bootstrap", conn.bootstrap(InteropCounter, { signal }));
  return { conn, hooked, counter };
}

/** `value` nested in `n` one-element arrays. */
function nested(n: number): unknown {
  let v: unknown = 0;
  for (let i = 0; i < n; i++) v = [v];
  return v;
}

/**
 * Part 1: cap-returning calls given up on while their answers may be on the way. The caps of
 * a late answer are the client's to release; the server's `liveChildren` comes back to `held`.
 */
async function abortCapReturning(r: Rng, conn: Connection, counter: Counter, held: number, signals: AbortSignal[]): Promise<void> {
  const n = 1 + r.int(6);
  const runs: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const ac = new AbortController();
    signals.push(ac.signal);
    const which = r.int(4);
    const names = Array.from({ length: 1 + r.int(4) }, (_, k) => `aborted-${i}-${k}`);
    const p: Promise<unknown> =
      which === 0
        ? counter.makeChild({ name: names[0]! }, { signal: ac.signal })
        : which === 1
          ? counter.children({ names }, { signal: ac.signal })
          : which === 2
            ? counter.childMap({ names }, { signal: ac.signal })
            : conn.bootstrap(InteropVersioned, { signal: ac.signal });
    p.catch(() => {}); // awaited below
    const when = r.int(4);
    if (when === 1) await Promise.resolve();
    else if (when === 2) await sleep(r.int(3));
    else if (when === 3) await new Promise((res) => setImmediate(res));
    ac.abort();
    runs.push(
      p.then(
        (got) => {
          // Answered before the abort: the caller holds the caps, and lets them go.
          const clients = which === 1 ? (got as Client[]) : which === 2 ? Object.values(got as Record<string, Client>) : [got];
          for (const c of clients as Client[]) release(c);
          count("cap-returning answered before its abort");
        },
        (e) => {
          check(isCode(e, "cancelled"), `aborted cap-returning call: ${describe(e)}`);
          count("cap-returning aborted");
        },
      ),
    );
    if (r.chance(0.5)) await runs.at(-1);
  }
  await Promise.all(runs);
  // The given-up calls wait for their answers, whose caps are then dropped.
  const s = await until(async () => conn.stats(), (x) => x.abandonedCalls === 0 && x.pendingCalls === 0);
  check(s.abandonedCalls === 0 && s.pendingCalls === 0, `calls given up on never settled: ${JSON.stringify(s)}`);
  const live = await until(() => counter.liveChildren(), (v) => v === held);
  check(live === held, `liveChildren ${live} after the aborted cap-returning calls, ${held} held`);
}

/**
 * Part 2: the server revokes `interop.ephemeral` (`unserveMe`) while pings on it are in flight,
 * and its proxies are released or disposed at random moments.
 */
async function revocation(r: Rng, conn: Connection, counter: Counter): Promise<void> {
  const first = await conn.bootstrap(InteropEphemeral);
  // A second reference to the same instance, sometimes.
  const second = r.chance(0.5) ? await conn.bootstrap(InteropEphemeral) : undefined;
  if (second !== undefined) check(capId(second) === capId(first), "two bootstraps of interop.ephemeral gave two cap-ids");
  const proxies = second === undefined ? [first] : [first, second];
  const letGo = new Set<Client<InteropEphemeral>>();
  const steps = 4 + r.int(30);
  const unserveAt = r.int(steps);
  const pings: Promise<void>[] = [];
  let unserve: Promise<void> | undefined;
  const disposals: Promise<void>[] = [];
  for (let i = 0; i < steps; i++) {
    const proxy = r.pick(proxies);
    if (i === unserveAt) {
      // Through a proxy still held (a fresh bootstrap if every one was let go).
      let by = proxies.find((p) => !letGo.has(p));
      if (by === undefined) proxies.push((by = await conn.bootstrap(InteropEphemeral)));
      unserve = by.unserveMe().then(() => void count("unserveMe answered"));
    }
    const wasLetGo = letGo.has(proxy);
    pings.push(
      proxy.ping().then(
        (v) => {
          check(v === "pong", `ping gave ${JSON.stringify(v)}`);
          check(!wasLetGo, "a ping on a proxy let go was answered");
          count("ephemeral ping answered");
        },
        (e) => {
          if (isCode(e, "failed_precondition", "revoked")) return void count("ephemeral ping revoked");
          if (isCode(e, "not_found")) return void count("ephemeral ping not_found");
          if (isCode(e, "failed_precondition") && e.message === "cap released") return void check(letGo.has(proxy), "cap released before it was");
          throw new Mismatch(`ping on interop.ephemeral: ${describe(e)}`);
        },
      ),
    );
    if (r.chance(0.1) && !letGo.has(proxy)) {
      // Released or disposed while its pings are in flight, before or after the revocation.
      letGo.add(proxy);
      if (r.chance(0.5)) release(proxy);
      else disposals.push(dispose(proxy).then(() => void count("ephemeral disposed")));
    }
    const gap = r.int(4);
    if (gap === 1) await Promise.resolve();
    else if (gap === 2) await sleep(r.int(2));
  }
  await bounded("pings on interop.ephemeral", Promise.all([...pings, ...disposals, unserve]));
  // The server unserves after its answer (INTEROP.md): once the name is gone, every bootstrap
  // fails not_found, and once its cap_revoked came, every call on a proxy still held fails
  // locally, revoked.
  const gone = await until(
    () => conn.bootstrap(InteropEphemeral).then((c) => (release(c), "served"), (e) => (isCode(e, "not_found") ? "not_found" : describe(e))),
    (v) => v === "not_found",
  );
  check(gone === "not_found", `bootstrap after unserveMe: ${gone}`);
  for (const proxy of proxies) {
    const wasLetGo = letGo.has(proxy);
    const last = await until(
      () => proxy.ping().then(() => "pong", (e) => (isCode(e, "failed_precondition", "revoked") ? "revoked" : isCode(e, "failed_precondition") && e.message === "cap released" ? "released" : describe(e))),
      (v) => v === (wasLetGo ? "released" : "revoked"),
    );
    check(last === (wasLetGo ? "released" : "revoked"), `ping after unserveMe: ${last}`);
    if (!wasLetGo) {
      letGo.add(proxy);
      if (r.chance(0.5)) release(proxy);
      else await bounded("dispose after revocation", dispose(proxy));
    }
  }
  // The rest of the connection works.
  const { count: c } = await counter.get();
  check(c === 0, `get ${c}`);
  count("revocation raced");
}

/** How the client breaks the protocol, and the goaway reason the server answers with. */
type Trigger = "depth" | "garbage" | "reused id" | "oversize";
const REASON: Record<Trigger, string> = { depth: "invalid_argument", garbage: "invalid_argument", "reused id": "invalid_argument", oversize: "resource_exhausted" };

/** One seed: returns what went wrong (empty if nothing). */
async function runSeed(seed: number): Promise<string[]> {
  const r = new Rng(seed);
  const problems: string[] = [];
  const isSealed = seed % 4 === 3;
  const server = isSealed ? sealedServer : plain;
  const trigger = r.pick<Trigger>(["depth", "garbage", "reused id", "oversize"]);
  const reason = REASON[trigger];
  const timersBefore = timers();
  const signals: AbortSignal[] = [];
  const { conn, hooked, counter } = await open(server, isSealed, signals);
  const say = (s: string) => trace && console.error(`seed ${seed}: ${s}`);
  let triggered = false;
  let closedWith: string | undefined;
  void conn.closed.then((why) => (closedWith = why));

  /** An error of work pending when the goaway came (`goaway`), or begun once the connection was shut (`local`). */
  const ended = (what: string, e: unknown, mayBeLocal: boolean): string => {
    if (!triggered) throw new Mismatch(`${what} failed before the goaway: ${describe(e)}`);
    if (isCode(e, "unavailable", "goaway") && e.message === reason) return "goaway";
    if (mayBeLocal && isCode(e, "unavailable") && e.message === "connection closed" && e.reason === undefined) return "local";
    throw new Mismatch(`${what}: ${describe(e)}, expected unavailable ${reason}${mayBeLocal ? " or connection closed" : ""}`);
  };

  try {
    // Children held across the goaway.
    const held: Child[] = [];
    for (let i = r.int(3); i > 0; i--) held.push(await counter.makeChild({ name: `held-${i}` }));
    if (r.chance(0.7)) {
      say("aborted cap-returning calls");
      await abortCapReturning(r, conn, counter, held.length, signals);
    }
    if (r.chance(0.5)) {
      say("revocation");
      await revocation(r, conn, counter);
    }

    // Part 3: work in flight, then the goaway.
    say(`work in flight, then ${trigger} (${isSealed ? "sealed" : "plain"})`);
    const work: Array<Promise<void>> = [];
    const signal = () => {
      const ac = new AbortController();
      signals.push(ac.signal);
      return ac;
    };
    const controllers: AbortController[] = [];
    const n = 2 + r.int(12);
    for (let i = 0; i < n; i++) {
      const what = `step ${i}`;
      const kind = r.int(8);
      const ac = r.chance(0.4) ? signal() : undefined;
      if (ac !== undefined) controllers.push(ac);
      const opts = { ...(ac ? { signal: ac.signal } : {}), ...(r.chance(0.3) ? { deadlineMs: 4000 } : {}) };
      switch (kind) {
        case 0:
        case 1: {
          // A call still running when the goaway comes: it fails with the goaway's reason.
          const p = counter.slow({ ms: 3000 + r.int(2000), ignoreAbort: r.chance(0.5) }, opts);
          work.push(p.then((v) => void problems.push(`${what} slow answered ${JSON.stringify(v)} across the goaway`), (e) => void count(`slow ${ended(what, e, false)}`)));
          break;
        }
        case 2: {
          // A quick call: answered, or failed by the goaway.
          const p = r.chance(0.5) ? counter.increment({ delta: 1 }, opts) : counter.echo({ i, s: "x".repeat(r.int(100)) }, opts);
          work.push(p.then(() => void count("quick answered"), (e) => void count(`quick ${ended(what, e, false)}`)));
          break;
        }
        case 3:
        case 4: {
          // A stream read as its values come: they are in order, and it fails with the goaway's reason (it never just ends).
          const endless = kind === 3;
          const s: ValueStream<{ i: number } | { count: number }> = endless ? counter.watch({ everyMs: 1 + r.int(5) }, ac ? { signal: ac.signal } : {}) : counter.ticks({ n: 1_000_000 }, ac ? { signal: ac.signal } : {});
          const first = await bounded(`${what} first value`, s.next());
          check(!first.done, `${what}: the stream ended at once`);
          work.push(
            (async () => {
              let k = 1;
              for (;;) {
                let x: IteratorResult<{ i: number } | { count: number }>;
                try {
                  x = await s.next();
                } catch (e) {
                  count(`stream ${ended(what, e, false)}`);
                  // Once failed, it ends.
                  check((await s.next()).done === true, `${what}: next() after the stream failed`);
                  return;
                }
                check(!x.done, `${what}: the stream ended across the goaway`);
                if (!endless) check((x.value as { i: number }).i === k, `${what}: tick ${(x.value as { i: number }).i}, expected ${k}`);
                k++;
                // Read slowly sometimes, so that values wait in the buffer when the goaway comes.
                if (k % 50 === 0) await sleep(1);
              }
            })(),
          );
          break;
        }
        case 5: {
          // A cap-returning call in flight: answered (the child let go) or failed by the goaway.
          const p = counter.makeChild({ name: `in-flight-${i}` }, opts);
          work.push(
            p.then(
              (child) => {
                release(child);
                count("makeChild answered");
              },
              (e) => void count(`makeChild ${ended(what, e, false)}`),
            ),
          );
          break;
        }
        case 6: {
          const p = conn.bootstrap(InteropVersioned, opts);
          work.push(p.then((v) => void release(v), (e) => void count(`bootstrap ${ended(what, e, false)}`)));
          break;
        }
        default: {
          // An abort signal that fires after the goaway: nothing more happens.
          const p = counter.slow({ ms: 5000 }, { signal: signal().signal });
          work.push(p.then((v) => void problems.push(`${what} slow answered ${JSON.stringify(v)}`), (e) => void count(`slow ${ended(what, e, false)}`)));
          break;
        }
      }
      if (r.chance(0.3)) await sleep(r.int(3));
    }
    // Let the server take the calls (a stream's first value came, so the others were sent before it).
    await counter.get();

    triggered = true;
    switch (trigger) {
      case "depth": {
        // Through the public API: the server's decoder refuses a value nested past its depth limit.
        const p = counter.echo(nested(260 + r.int(200)));
        work.push(p.then(() => void problems.push("an echo past the server's depth limit was answered"), (e) => void count(`depth ${ended("echo", e, false)}`)));
        break;
      }
      case "garbage":
        hooked.inject(Uint8Array.from([0xc1, ...Array.from({ length: r.int(20) }, () => r.int(256))]));
        break;
      case "reused id": {
        // A slow call, then the same frame again: its id is still in use on the server.
        const p = counter.slow({ ms: 4000 });
        hooked.inject(hooked.last()!);
        work.push(p.then(() => void problems.push("a call whose id was reused was answered"), (e) => void count(`reused ${ended("reused call", e, false)}`)));
        break;
      }
      case "oversize":
        hooked.inject(new Uint8Array(MAX_BYTES + 1 + r.int(1000)).fill(0xc0));
        break;
    }
    // Work begun after the protocol was broken: answered (before the server read the bad
    // message), failed by the goaway, or failed locally.
    for (let i = r.int(4); i > 0; i--) {
      if (r.chance(0.5)) await sleep(r.int(3));
      const what = `after ${i}`;
      if (r.chance(0.5)) {
        work.push(counter.get().then(() => void count("after answered"), (e) => void count(`after ${ended(what, e, true)}`)));
      } else {
        const s = counter.ticks({ n: 3 });
        work.push(
          (async () => {
            try {
              for (let k = 0; k < 3; k++) check((await s.next()).value?.i === k, `${what}: tick ${k}`);
              check((await s.next()).done === true, `${what}: ticks did not end`);
              count("after stream answered");
            } catch (e) {
              if (e instanceof Mismatch) throw e;
              count(`after stream ${ended(what, e, true)}`);
            }
          })(),
        );
      }
    }

    const why = await bounded("closed", conn.closed);
    check(why === reason, `closed with ${JSON.stringify(why)}, expected the goaway's ${reason}`);
    check(closedWith === reason, "closed resolved before it was awaited, with the reason");
    await bounded("the work in flight", Promise.all(work));
    // Aborting after the goaway changes nothing (and throws nothing); the signals not aborted
    // must have no listener left either (checked at the end).
    for (const ac of controllers) if (r.chance(0.5)) ac.abort();

    // Everything begun now fails locally: calls, streams, bootstraps, serving, the held children.
    const local = (what: string, e: unknown) => check(isCode(e, "unavailable") && e.message === "connection closed" && e.reason === undefined, `${what} after the goaway: ${describe(e)}`);
    await counter.get().then(() => problems.push("a call after the goaway was answered"), (e) => local("call", e));
    await counter.ticks({ n: 2 }).next().then(() => problems.push("a stream after the goaway gave a value"), (e) => local("stream", e));
    await conn.bootstrap(InteropCounter).then(() => problems.push("a bootstrap after the goaway worked"), (e) => local("bootstrap", e));
    try {
      conn.serve({ name: "after.goaway", methods: {} }, {});
      problems.push("serve after the goaway worked");
    } catch (e) {
      local("serve", e);
    }
    for (const child of held) {
      await child.ping({ x: 1 }).then(() => problems.push("a held child answered after the goaway"), (e) => local("held child", e));
      if (r.chance(0.5)) release(child);
      else await bounded("dispose after the goaway", dispose(child));
    }
    count(`ended by ${trigger}${isSealed ? " (sealed)" : ""}`);
  } catch (e) {
    problems.push(describe(e));
    conn.close();
  }

  // The tables are empty, no timer and no abort listener is left.
  const stats = conn.stats();
  if (Object.values(stats).some((v) => v !== 0)) problems.push(`tables not empty after the goaway: ${JSON.stringify(stats)}`);
  const listening = signals.map((s) => getEventListeners(s, "abort").length).reduce((a, b) => a + b, 0);
  if (listening > 0) problems.push(`${listening} abort listener(s) left on the signals of finished work`);
  const left = await until(async () => timers() - timersBefore, (k) => k <= 0, 1000);
  if (left > 0) problems.push(`${left} timer(s) left`);
  // The server let the connection go, with its handlers and streams.
  const counts = await until(() => server.counts(), (c) => c["connections"] === 0 && c["handlers"] === 0 && c["streams"] === 0);
  if (counts["connections"] !== 0 || counts["handlers"] !== 0 || counts["streams"] !== 0) problems.push(`the server's counts after the goaway: ${JSON.stringify(counts)}`);
  return problems;
}

test("goaways and revocations from the Rust server: everything pending fails as it should, nothing is left on either side", async () => {
  const unexpected: unknown[] = [];
  const onError = (e: unknown) => void unexpected.push(e);
  process.on("unhandledRejection", onError);
  process.on("uncaughtException", onError);
  const failures: string[] = [];
  const run = async (seed: number) => {
    const problems = await runSeed(seed).catch((e: unknown) => [`threw: ${describe(e)}`]);
    problems.push(...unexpected.splice(0).map((e) => `thrown or rejected unhandled: ${describe(e)}`));
    if (problems.length > 0) {
      const line = `seed ${seed}: ${problems.slice(0, 5).join("; ")}`;
      console.log(`FAILED ${line}`);
      failures.push(line);
    }
  };
  try {
    const summary = () => [`${failures.length} failed`, `outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}`];
    if (await runSeeds("random goaways", FIXED, DEFAULT_SEEDS, run, summary)) {
      // The sequences reach what they aim at.
      for (const key of ["cap-returning aborted", "ephemeral ping revoked", "revocation raced", "slow goaway", "stream goaway", "depth goaway", "reused goaway", "ended by garbage", "ended by oversize", "ended by depth (sealed)"]) {
        assert.ok((outcomes.get(key) ?? 0) > 0, `no ${key}: ${JSON.stringify([...outcomes])}`);
      }
    }
  } finally {
    process.off("unhandledRejection", onError);
    process.off("uncaughtException", onError);
  }
  assert.deepEqual(failures.slice(0, 20), []);
  for (const s of [plain, sealedServer]) {
    assert.equal(s.child.exitCode, null, "a server exited");
    assert.equal(s.child.signalCode, null, "a server was killed");
  }
});
