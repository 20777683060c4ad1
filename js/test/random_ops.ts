// One sequence of the random-operations test (`random_ops.test.ts`, docs/RELIABILITY.md "The
// web client under random operations against the Rust server"): the web client against
// `bunite-rpc interop-server` over real WebSockets. Each seed opens 1-3 connections with 1-3
// "actors" each; every actor runs its own seeded sequence of operations on the interop caps
// (INTEROP.md) concurrently with the others, checking every answer against what the server's
// caps do, `askPeer` included while the actors serve, replace and unserve the client's
// `interop.peer`. Some connections are closed by the client while work is in flight; the others
// end with checks of the server's side (the counter adds up, no child left in its cap table,
// every disposal ran), or, when the seed's `Target` has its own server, by that server going
// away at a random operation: stopped gracefully (SIGTERM: a call running then is answered, the
// others fail `unavailable` `peer_closing`: refused by the drain, `{reason:"peer_closing"}`, or
// failed by the goaway, `{reason:"goaway"}`; every connection closes with the goaway) or killed
// (SIGKILL: everything fails `unavailable` `transport closed: …` `{reason:"peer_closing"}`).
// The target may run inside the sealed pipe. Then: nothing threw out of the client or
// rejected unhandled, every operation settled within `OP_MS`, every connection's tables are
// empty (`conn.stats()` all zero) and no timer is left.

import assert from "node:assert/strict";

import { inspect } from "node:util";

import { Connection, FrameDecoder, RpcError, capId, dispose, openWebSocket, release, sealed, type CapDef, type Client, type IfExists, type ServeHandle, type Transport, type ValueStream } from "../src/index.js";
import { InteropChild, InteropCounter, InteropEphemeral, InteropSecret, InteropVersioned } from "../src/interop.gen.js";
import { Rng } from "./random_frames.js";
import { Mismatch, OP_MS, bounded, check, sleep, timers, until } from "./settling.js";

/** How long one operation (or one end-of-connection check) may take to settle. */
/** `BUNITE_FUZZ_TRACE=1` prints each operation as it starts. */
const trace = process.env["BUNITE_FUZZ_TRACE"] !== undefined;
const traceFrames = process.env["BUNITE_FUZZ_TRACE"] === "frames";

let unexpected: unknown[] = [];
let installed = false;

/** What each kind of operation ended in, over all sequences (to check the sequences reach what they aim at). */
export const outcomes = new Map<string, number>();
const count = (key: string) => outcomes.set(key, (outcomes.get(key) ?? 0) + 1);

const Missing: CapDef = { name: "interop.missing", methods: { ping: { kind: "call", args: "none" } } };
const VersionedOne: CapDef<InteropVersioned> = { ...InteropVersioned, version: "1" };
const Peer: CapDef = { name: "interop.peer", methods: { ping: { kind: "call", args: "none" } } };

type Child = Client<InteropChild>;
type Counter = Client<InteropCounter>;


/** What one connection's actors share, and what its end checks. */
interface ConnState {
  name: string;
  conn: Connection;
  /** Closed by the test (`conn.close()`): from then on `unavailable` is the documented error. */
  closed: boolean;
  /** The number of operations begun after which the test closes the connection (Infinity: never, it ends cleanly). */
  closeAt: number;
  begun: number;
  /** Sum of the deltas of increments that succeeded, and of those that may or may not have run. */
  sure: number;
  maybe: number;
  /** Sum of the deltas of every increment sent so far (an upper bound of the count). */
  issued: number;
  /** `dispose` calls on children (each runs `close` once on a connection that stays open). */
  disposals: number;
  /** Watches opened, and those cancelled after a value came (so the server surely ran them). */
  watches: number;
  watchesCancelled: number;
  /** `unserveMe` was sent (`unserving`) or answered (`gone`). */
  ephemeralUnserving: boolean;
  ephemeralGone: boolean;
  /**
   * What the client's `interop.peer` answered over time (`undefined`: not served), oldest
   * first: an `askPeer` may see any state from the one it began in to the one it ended in.
   */
  peerStates: Array<string | undefined>;
  /** The handle of the `serve` that made the current registration, if one did (and it still owns it). */
  peerHandle: ServeHandle | undefined;
  /** The seed's server end, shared by its connections. */
  seed: SeedState;
  actors: Promise<void>[];
  problems: string[];
}

/** Where one seed's connections go, and how the server side goes away (if it does). */
export interface Target {
  url: string;
  /** The sealed pipe's key, when the server runs with `--key`. */
  key?: Uint8Array;
  /**
   * The server process of this seed alone, stopped at a random operation with work in flight:
   * `term` (SIGTERM: it drains the calls in progress, then every connection gets a goaway
   * `peer_closing`) or `kill` (SIGKILL: the sockets just drop).
   */
  end?: { how: "term" | "kill"; signal(): void; exited: Promise<{ code: number | null; signal: string | null }> };
}

/** What a seed's connections share: when the server goes away. */
interface SeedState {
  /** How the server goes away, if it does. */
  how: "term" | "kill" | undefined;
  begun: number;
  /** The number of operations begun (over every connection) at which the server is ended. */
  endAt: number;
  /** The server was signalled: from then on `unavailable` is the documented error everywhere. */
  ending: boolean;
  /** The stop, once begun (`fire`). */
  firing: Promise<void> | undefined;
  fire(): void;
}

function isCode(e: unknown, code: string, reason?: string): e is RpcError {
  return e instanceof RpcError && e.code === code && (reason === undefined || e.reason === reason);
}

function describe(e: unknown): string {
  return e instanceof RpcError ? `RpcError ${e.code}${e.reason !== undefined ? `/${e.reason}` : ""}: ${e.message}` : String((e as Error)?.stack ?? e);
}

/** `p` must reject with `code` (and `reason`). */
async function rejects(p: Promise<unknown>, code: string, what: string, reason?: string): Promise<RpcError> {
  try {
    const v = await p;
    throw new Mismatch(`${what}: resolved ${JSON.stringify(v)}, expected ${code}${reason ? `/${reason}` : ""}`);
  } catch (e) {
    if (e instanceof Mismatch) throw e;
    if (isCode(e, code, reason)) return e;
    throw e;
  }
}

/**
 * How an `unavailable` came, by its message and `details.reason`: the server's stop
 * (`peer_closing`: its drain's refusal, sent by the server, or its goaway, which fails pending
 * work `peer_closing` `{reason:"goaway"}`), the socket dropped (`transport closed: …`
 * `{reason:"peer_closing"}`), or a local failure after either (`connection closed`, no reason).
 */
function how(e: RpcError): string {
  if (isDrainRefusal(e) || (e.message === "peer_closing" && e.reason === "goaway")) return "peer_closing";
  if (e.message.startsWith("transport closed") && e.reason === "peer_closing") return "transport closed";
  if (e.message === "connection closed" && e.reason === undefined) return "connection closed";
  return describe(e);
}

/** A draining Rust server's refusal of a new call or bootstrap. */
function isDrainRefusal(e: unknown): boolean {
  return isCode(e, "unavailable", "peer_closing") && e.message === "draining: no new calls";
}



/** A value `echo` must give back deep-equal. */
function randomValue(r: Rng, depth = 0): unknown {
  const k = r.int(depth > 2 ? 7 : 9);
  switch (k) {
    case 0:
      return r.pick([0, 1, -1, 63, 64, 127, 128, 255, 256, 65535, 2 ** 31, 2 ** 32 - 1, -(2 ** 31), 2 ** 53 - 1, -(2 ** 53 - 1)]);
    case 1:
      return r.int(1e6) - 5e5 + r.pick([0, 0.5, 0.25]);
    case 2:
      return r.pick(["", "a", "héllo ☃ 😀 日本", "x".repeat(r.int(400))]);
    case 3:
      return r.chance(0.5);
    case 4:
      return null;
    case 5:
      return Uint8Array.from({ length: r.int(300) }, (_, i) => (i * 7) & 255);
    case 6:
      return r.int(2 ** 30);
    case 7:
      return Array.from({ length: r.int(5) }, () => randomValue(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      const n = r.int(5);
      for (let i = 0; i < n; i++) o[r.pick(["a", "b", "count", "name", "x", `k${i}`])] = randomValue(r, depth + 1);
      return o;
    }
  }
}

/** An `interop.peer` answering `reply`, at once or after a few milliseconds. */
function peerImpl(r: Rng, reply: string) {
  const ms = r.chance(0.5) ? 0 : 1 + r.int(5);
  return { ping: async () => (ms === 0 ? reply : sleep(ms).then(() => reply)) };
}

/** One actor: a sequence of operations on one connection, from its own seed. */
async function actor(st: ConnState, seed: number, label: string): Promise<void> {
  const r = new Rng(seed);
  const { conn } = st;
  const counter = (await bounded(`${label} bootstrap`, conn.bootstrap(InteropCounter)).catch((e) => {
    if ((st.closed || st.seed.ending) && isCode(e, "unavailable")) return undefined;
    throw e;
  })) as Counter | undefined;
  if (counter === undefined) return;
  /** Children this actor holds across operations. */
  const held: Array<{ child: Child; name: string }> = [];
  /** Operations started and not awaited (work in flight). */
  const inflight: Promise<void>[] = [];
  let nextName = 0;
  const fresh = () => `${label}-${nextName++}`;
  let step = 0;

  /** An increment of `delta`, with `opts`: counted as sure, or maybe if it may not have run. */
  const increment = async (delta: number, opts: { signal?: AbortSignal } = {}): Promise<number | undefined> => {
    st.issued += delta;
    try {
      const { count: c } = await counter.increment({ delta }, opts);
      st.sure += delta;
      check(c >= delta && c <= st.issued, `increment ${delta} gave ${c}, issued ${st.issued}`);
      return c;
    } catch (e) {
      st.maybe += delta;
      throw e;
    }
  };

  /** Checks a fresh child: its name, a ping. */
  const checkChild = async (child: Child, name: string) => {
    check((await child.name()) === name, `child ${name} has another name`);
    const x = r.int(1000);
    check((await child.ping({ x })) === x + 1, `child ping ${x}`);
  };

  /** Lets go of a child: release or dispose, then a call on it fails locally (`failed_precondition`, nothing sent). */
  const letGo = async (child: Child, how: "release" | "dispose") => {
    if (how === "release") release(child);
    else {
      await dispose(child);
      if (!st.closed) st.disposals += 1;
    }
    await rejects(child.ping({ x: 1 }), "failed_precondition", `ping after ${how}`);
    count(`call after ${how}`);
  };

  const ops: Array<[number, string, () => Promise<void>]> = [
    [6, "increment", async () => {
      await increment(1 + r.int(10));
    }],
    [3, "get", async () => {
      const { count: c } = await counter.get();
      check(c >= 0 && c <= st.issued, `get gave ${c}, issued ${st.issued}`);
    }],
    [2, "burst", async () => {
      // Many calls in flight at once: every count they get is distinct (all deltas are positive).
      const n = 10 + r.int(150);
      const got = await Promise.all(Array.from({ length: n }, () => increment(1)));
      check(new Set(got).size === n, `burst of ${n} increments gave ${new Set(got).size} distinct counts`);
    }],
    [3, "echo", async () => {
      const v = randomValue(r);
      assert.deepStrictEqual(await counter.echo(v), v);
    }],
    [2, "fail", async () => {
      const code = r.pick(["not_found", "failed_precondition", "already_exists", "invalid_argument", "resource_exhausted", "internal"] as const);
      const reason = r.chance(0.5) ? `why-${r.int(10)}` : undefined;
      const e = await rejects(counter.fail({ code, message: "m", ...(reason ? { reason } : {}) }), code, "fail", reason);
      check(e.message === "m", `fail message ${e.message}`);
    }],
    [1, "boom", async () => {
      const e = await rejects(counter.boom(), "internal", "boom");
      check(e.message === "boom", `boom message ${e.message}`);
    }],
    [1, "bytes", async () => {
      const n = r.pick([0, 1, 255, 256, 1000, 70_000]);
      const b = await counter.bytes({ n });
      check(b instanceof Uint8Array && b.length === n && b.every((x, k) => x === k % 256), `bytes ${n}`);
    }],
    [4, "makeChild", async () => {
      const name = fresh();
      const child = await counter.makeChild({ name });
      await checkChild(child, name);
      const then = r.int(3);
      if (then === 0) held.push({ child, name });
      else await letGo(child, then === 1 ? "release" : "dispose");
    }],
    [2, "children", async () => {
      const names = Array.from({ length: r.int(4) }, fresh);
      const useMap = r.chance(0.5);
      const kids = useMap ? await counter.childMap({ names }) : await counter.children({ names });
      const list = useMap ? Object.entries(kids as Record<string, Child>) : (kids as Child[]).map((k, i) => [names[i]!, k] as const);
      check(JSON.stringify(list.map(([n]) => n)) === JSON.stringify(names), `children ${JSON.stringify(names)}`);
      check(new Set(list.map(([, k]) => capId(k))).size === names.length, "children share a cap-id");
      for (const [name, child] of list) {
        await checkChild(child, name);
        if (r.chance(0.3)) held.push({ child, name });
        else await letGo(child, r.chance(0.5) ? "release" : "dispose");
      }
    }],
    [3, "held", async () => {
      const h = held.splice(r.int(held.length), 1)[0];
      if (h === undefined) return;
      const x = r.int(100);
      check((await h.child.ping({ x })) === x + 1, `held child ping`);
      if (r.chance(0.5)) await letGo(h.child, r.chance(0.5) ? "release" : "dispose");
      else held.push(h);
    }],
    [2, "bootstrap-again", async () => {
      // The same instance, one more reference: releasing it leaves the actor's own working.
      const again = await conn.bootstrap(InteropCounter);
      check(capId(again) === capId(counter), `second bootstrap gave cap-id ${capId(again)}, first ${capId(counter)}`);
      const { count: c } = await again.get();
      check(c <= st.issued, "get through the second bootstrap");
      release(again);
      await rejects(again.get(), "failed_precondition", "get on a released bootstrap");
      const { count: d } = await counter.get();
      check(d <= st.issued, "get after the second reference was released");
    }],
    [2, "bootstrap-refused", async () => {
      const which = r.int(4);
      if (which === 0) await rejects(conn.bootstrap(Missing), "not_found", "bootstrap interop.missing");
      else if (which === 1) await rejects(conn.bootstrap(InteropSecret), "failed_precondition", "bootstrap interop.secret", "unauthorized");
      else if (which === 2) await rejects(conn.bootstrap(VersionedOne), "failed_precondition", "bootstrap interop.versioned 1", "version_mismatch");
      else {
        const v = await conn.bootstrap(InteropVersioned);
        check((await v.v()) === "2", "versioned v");
        release(v);
      }
    }],
    [1, "runtime", async () => {
      await rejects(conn.clientFor(1, Missing).ping(), "not_found", "a call on the runtime");
    }],
    [3, "abort", async () => {
      const ac = new AbortController();
      const when = r.int(3);
      if (when === 0) {
        ac.abort();
        await rejects(counter.slow({ ms: 2000 }, { signal: ac.signal }), "cancelled", "slow aborted before it was sent");
        return;
      }
      if (when === 1) {
        // Aborted while the server runs it.
        const p = counter.slow({ ms: 2000, ignoreAbort: r.chance(0.5) }, { signal: ac.signal });
        p.catch(() => {}); // awaited below, after the sleep
        await sleep(r.int(30));
        ac.abort();
        await rejects(p, "cancelled", "slow aborted after it was sent");
        return;
      }
      // Aborted around a fast call: it either answered first or is cancelled.
      const delta = 1 + r.int(5);
      const p = increment(delta, { signal: ac.signal });
      p.catch(() => {}); // awaited below
      if (r.chance(0.5)) await Promise.resolve();
      else await sleep(r.int(3));
      ac.abort();
      try {
        await p;
        count("abort after answer");
      } catch (e) {
        if (!isCode(e, "cancelled")) throw e;
        count("abort cancelled increment");
      }
    }],
    [1, "abort-makeChild", async () => {
      // A cap-returning call given up on: the cap in a late answer is released by the client.
      const ac = new AbortController();
      const p = counter.makeChild({ name: fresh() }, { signal: ac.signal });
      p.catch(() => {}); // awaited below
      if (r.chance(0.5)) await sleep(r.int(3));
      ac.abort();
      try {
        const child = await p;
        release(child);
      } catch (e) {
        if (!isCode(e, "cancelled")) throw e;
      }
    }],
    [1, "deadline", async () => {
      const d = 20 + r.int(60);
      const t0 = Date.now();
      if (r.chance(0.5)) {
        // The server signals the (not idempotent) handler at the deadline: "aborted".
        check((await counter.slow({ ms: 3000 }, { deadlineMs: d })) === "aborted", "slow past its deadline did not answer aborted");
      } else {
        await rejects(counter.slow({ ms: 2000, ignoreAbort: true }, { deadlineMs: d }), "deadline_exceeded", "slow ignoring its deadline");
        const took = Date.now() - t0;
        check(took >= d + 500 - 5, `deadline_exceeded after ${took} ms, deadline ${d} ms + 500 ms grace`);
      }
    }],
    [2, "slow", async () => {
      check((await counter.slow({ ms: r.int(20) }, r.chance(0.5) ? { deadlineMs: 1000 } : {})) === "done", "slow");
    }],
    [4, "ticks", async () => {
      const n = r.int(300);
      const how = r.int(5);
      const ac = new AbortController();
      const s: ValueStream<{ i: number }> = counter.ticks({ n }, how === 4 ? { signal: ac.signal } : {});
      const stopAt = how === 0 ? n : r.int(n + 1);
      let i = 0;
      if (how === 3) {
        for await (const t of s) {
          check(t.i === i, `tick ${t.i}, expected ${i}`);
          if (++i >= stopAt) break;
        }
        if (i < stopAt) check(i === n, `ticks ended at ${i} of ${n}`);
      } else {
        for (; i < stopAt; i++) {
          const x = await s.next();
          if (x.done) throw new Mismatch(`ticks ${n} ended at ${i}`);
          check(x.value.i === i, `tick ${x.value.i}, expected ${i}`);
        }
        if (how === 0) {
          check((await s.next()).done === true, `ticks ${n} did not end after ${n} values`);
          count("ticks read to the end");
          return;
        }
        if (how === 1) await s.return!();
        else if (how === 2) s.cancel();
        else ac.abort();
        try {
          const after = await s.next();
          check(after.done === true, "a value after the stream was cancelled");
        } catch (e) {
          if (!(how === 4 && isCode(e, "cancelled"))) throw e;
        }
      }
      check((await s.next()).done === true, "next() after the end");
    }],
    [2, "watch", async () => {
      st.watches += 1;
      const s = counter.watch({ everyMs: 1 + r.int(5) });
      const k = 1 + r.int(3);
      let last = -1;
      for (let i = 0; i < k; i++) {
        const x = await s.next();
        if (x.done) throw new Mismatch("watch ended");
        check(x.value.count >= last && x.value.count <= st.issued, `watch count ${x.value.count} after ${last}`);
        last = x.value.count;
      }
      if (r.chance(0.5)) s.cancel();
      else await s.return!();
      st.watchesCancelled += 1;
      check((await s.next()).done === true, "watch after cancel");
    }],
    [2, "askPeer", async () => {
      // The server bootstraps `interop.peer` from this client and pings it while other actors
      // serve, replace and unserve it: the answer is that of a state between the call's start
      // and its end; `not_found` only if it was unserved meanwhile, and `revoked` (the
      // server's reference revoked between its bootstrap and its ping) only if it was
      // unserved after the call began.
      const from = st.peerStates.length - 1;
      let got: string;
      try {
        got = await counter.askPeer();
      } catch (e) {
        const seen = st.peerStates.slice(from);
        if (isCode(e, "not_found") && seen.includes(undefined)) return void count("askPeer not_found");
        if (isCode(e, "failed_precondition", "revoked") && seen.slice(1).includes(undefined)) return void count("askPeer revoked");
        throw e;
      }
      check(st.peerStates.slice(from).includes(got), `askPeer gave ${JSON.stringify(got)}, states ${JSON.stringify(st.peerStates.slice(from))}`);
      count("askPeer answered");
    }],
    [2, "peer-serve", async () => {
      // Serves `interop.peer` anew (or replaces it) with an answer of its own, as `ifExists` says.
      const reply = `pong ${label} ${step}`;
      const impl = peerImpl(r, reply);
      const served = st.peerStates.at(-1) !== undefined;
      const mode = r.pick(["throw", "skip", "replace", "replace()"] as const);
      if (mode === "replace()") {
        try {
          conn.replace(Peer, impl);
        } catch (e) {
          if (!(!served && isCode(e, "not_found"))) throw e;
          return void count("peer replace not served");
        }
        check(served, "replace of an unserved interop.peer worked");
        st.peerStates.push(reply);
        return;
      }
      let handle: ServeHandle;
      try {
        handle = conn.serve(Peer, impl, { ifExists: mode as IfExists });
      } catch (e) {
        if (!(served && mode === "throw" && isCode(e, "already_exists", "name_collision"))) throw e;
        return void count("peer serve collision");
      }
      check(!(served && mode === "throw"), "a second serve of interop.peer worked");
      if (served && mode === "skip") {
        check(handle.names.length === 0, "serve skip of a served name owns it");
        return;
      }
      if (!served) st.peerHandle = handle;
      st.peerStates.push(reply);
    }],
    [1, "peer-unserve", async () => {
      const h = st.peerHandle;
      if (h !== undefined && r.chance(0.5)) h.unserve();
      else conn.unserve(r.chance(0.5) ? "interop.peer" : Peer);
      st.peerHandle = undefined;
      if (st.peerStates.at(-1) !== undefined) st.peerStates.push(undefined);
    }],
    [1, "ephemeral", async () => {
      const gone = st.ephemeralGone;
      const racing = st.ephemeralUnserving;
      let e: Client<InteropEphemeral>;
      try {
        e = await conn.bootstrap(InteropEphemeral);
      } catch (err) {
        if (isCode(err, "not_found") && (gone || racing || st.ephemeralUnserving)) return;
        throw err;
      }
      check(!gone, "bootstrap of interop.ephemeral after it was unserved");
      try {
        if (r.chance(0.3) && !st.ephemeralUnserving) {
          st.ephemeralUnserving = true;
          await e.unserveMe();
          // The server unserves after its answer (INTEROP.md), and its cap_revoked follows: a
          // call meanwhile fails not_found, one after it revoked, locally. Only from then on
          // must every bootstrap fail not_found.
          const last = await until(
            () =>
              e.ping().then(
                () => "ok",
                (x) => {
                  if (isCode(x, "unavailable")) throw x;
                  return isCode(x, "failed_precondition", "revoked") ? "revoked" : isCode(x, "not_found") ? "not_found" : describe(x);
                },
              ),
            (v) => v === "revoked",
          );
          check(last === "revoked", `ping after unserveMe: ${last}`);
          st.ephemeralGone = true;
          await rejects(conn.bootstrap(InteropEphemeral), "not_found", "bootstrap after unserveMe");
          count("revoked");
        } else {
          check((await e.ping()) === "pong", "ephemeral ping");
        }
      } catch (err) {
        // Another actor unserved it meanwhile.
        if (!(st.ephemeralUnserving && (isCode(err, "failed_precondition", "revoked") || isCode(err, "not_found")))) throw err;
      } finally {
        release(e);
      }
    }],
  ];
  const total = ops.reduce((n, [w]) => n + w, 0);
  const pick = () => {
    let x = r.int(total);
    for (const op of ops) if ((x -= op[0]) < 0) return op;
    return ops[0]!;
  };

  const steps = 5 + r.int(25);
  for (step = 0; step < steps; step++) {
    const [, name, run] = pick();
    const what = `${label} step ${step} ${name}`;
    if (trace) console.error(what);
    st.begun += 1;
    st.seed.begun += 1;
    if (st.seed.begun >= st.seed.endAt) st.seed.fire();
    const p = bounded(what, run()).then(
      () => void count(`${name} ok`),
      (e) => {
        // After the test closed the connection, `unavailable` is the documented error of
        // everything pending and everything after.
        if (st.closed && isCode(e, "unavailable")) return void count(`${name} unavailable`);
        // After the server was signalled, too (the drain's refusals, its goaway, the socket
        // dropped, and every local failure after them).
        if (st.seed.ending && isCode(e, "unavailable")) {
          // SIGTERM: refused by the draining server, or failed by its goaway; SIGKILL: failed
          // as the socket dropped; either: failed locally once the connection had shut down.
          const came = how(e);
          const want = st.seed.how === "term" ? "peer_closing" : "transport closed";
          if (came !== want && came !== "connection closed") st.problems.push(`${what}: ${describe(e)}, expected ${want} after the server's ${st.seed.how}`);
          return void count(`${name} unavailable (${st.seed.how}: ${came})`);
        }
        st.problems.push(`${what}: ${describe(e)}`);
      },
    );
    if (st.begun >= st.closeAt && !st.closed) {
      st.closed = true;
      if (trace) console.error(`${st.name} closes with work in flight`);
      conn.close();
    }
    if (r.chance(0.3)) inflight.push(p);
    else await p;
  }
  await Promise.all(inflight);
  // What the actor still holds is released (or disposed) at the end.
  for (const { child } of held) {
    if (r.chance(0.5)) release(child);
    else {
      await bounded(`${label} final dispose`, dispose(child));
      if (!st.closed) st.disposals += 1;
    }
  }
  release(counter);
}

/** The checks of a connection that ends cleanly: the server's side adds up, then close. */
async function endCleanly(st: ConnState): Promise<void> {
  const { conn } = st;
  // Calls given up on wait for their answers (whose caps are then released).
  const settled = await until(async () => conn.stats(), (s) => s.pendingCalls === 0 && s.abandonedCalls === 0 && s.clientStreams === 0);
  check(settled.pendingCalls === 0 && settled.abandonedCalls === 0 && settled.clientStreams === 0, `not settled: ${JSON.stringify(settled)}`);
  const c = await conn.bootstrap(InteropCounter);
  const { count: n } = await c.get();
  check(n >= st.sure && n <= st.sure + st.maybe, `count ${n}, expected ${st.sure} (+ up to ${st.maybe} given up on)`);
  const live = await until(() => c.liveChildren(), (v) => v === 0);
  check(live === 0, `${live} children left in the server's cap table`);
  const closed = await c.closedCount();
  check(closed === st.disposals, `closedCount ${closed}, ${st.disposals} disposals`);
  const cancelled = await until(() => c.cancelledWatches(), (v) => v >= st.watchesCancelled);
  check(cancelled >= st.watchesCancelled && cancelled <= st.watches, `cancelledWatches ${cancelled}, ${st.watchesCancelled} cancelled of ${st.watches}`);
  release(c);
  st.closed = true;
  conn.close();
}

async function open(target: Target, name: string, closeAt: number, seed: SeedState): Promise<ConnState> {
  const socket = await openWebSocket(target.url);
  const ws: Transport = target.key !== undefined ? sealed(socket, target.key) : socket;
  const transport: Transport = !traceFrames
    ? ws
    : (() => {
        // `BUNITE_FUZZ_TRACE=frames`: every frame each way, decoded.
        const mine = new FrameDecoder();
        const theirs = new FrameDecoder();
        const show = (dir: string, d: Uint8Array, dec: FrameDecoder) => console.error(name, dir, inspect(dec.decode(d), { depth: 3, breakLength: 200, maxStringLength: 40, maxArrayLength: 8 }));
        return {
          start: (e) => ws.start({ ...e, message: (d) => (show("<-", d, theirs), e.message(d)) }),
          send: (d) => (show("->", d, mine), ws.send(d)),
          close: () => ws.close(),
        };
      })();
  const conn = new Connection(transport, { origin: "bunite-rpc random ops", serve: [{ def: Peer, impl: { ping: () => "pong from client" } }] });
  return {
    peerStates: ["pong from client"],
    peerHandle: undefined,
    seed,
    name,
    conn,
    closed: false,
    closeAt,
    begun: 0,
    sure: 0,
    maybe: 0,
    issued: 0,
    disposals: 0,
    watches: 0,
    watchesCancelled: 0,
    ephemeralUnserving: false,
    ephemeralGone: false,
    actors: [],
    problems: [],
  };
}

/** The connection a graceful stop is watched on: a call surely running when the signal goes must be answered. */
async function stopProbe(target: Target): Promise<{ conn: Connection; counter: Counter }> {
  const socket = await openWebSocket(target.url);
  const conn = new Connection(target.key !== undefined ? sealed(socket, target.key) : socket, { origin: "bunite-rpc random ops probe" });
  return { conn, counter: await conn.bootstrap(InteropCounter) };
}

/**
 * Runs the sequence of `seed` against `target` (its server ended at a random operation if
 * `target.end` says so); returns what went wrong (empty if nothing).
 */
export async function runSeed(target: Target, seed: number): Promise<string[]> {
  if (!installed) {
    installed = true;
    process.on("unhandledRejection", (e) => unexpected.push(e));
    process.on("uncaughtException", (e) => unexpected.push(e));
  }
  const problems: string[] = [];
  const r = new Rng(seed);
  const timersBefore = timers();
  const states: ConnState[] = [];
  const end = target.end;
  // Its own generator, so that a seed runs the same operations whatever the target.
  const endAt = end === undefined ? Infinity : 1 + new Rng((seed * 31 + 7) >>> 0).int(40);
  const probe = end?.how === "term" ? await stopProbe(target) : undefined;
  /** The probe's calls: one running when the signal goes, one sent after it. */
  let probed: Promise<void> | undefined;
  const seedState: SeedState = {
    how: end?.how,
    begun: 0,
    endAt,
    ending: false,
    firing: undefined,
    fire() {
      if (end === undefined || this.firing !== undefined) return;
      this.firing = (async () => {
        if (probe !== undefined) {
          // Calls on one connection are dispatched in order: once `get` is answered, `slow` runs.
          const running = probe.counter.slow({ ms: 300 });
          running.catch(() => {}); // awaited below
          await probe.counter.get();
          seedState.ending = true;
          if (trace) console.error(`the server is stopped (${end.how}) with work in flight`);
          end.signal();
          await sleep(5);
          const after = probe.counter.get().then(
            () => "answered",
            (e) => (isDrainRefusal(e) ? "refused" : describe(e)),
          );
          probed = (async () => {
            const got = await running.catch((e) => describe(e));
            if (got !== "done") problems.push(`a call running when the server was stopped gracefully gave ${got}, not "done"`);
            const a = await after;
            if (a !== "answered" && a !== "refused") problems.push(`a call sent after SIGTERM gave ${a}`);
            count(`probe call after SIGTERM ${a}`);
          })();
        } else {
          seedState.ending = true;
          if (trace) console.error(`the server is stopped (${end.how}) with work in flight`);
          end.signal();
        }
      })().catch((e) => void problems.push(`stopping the server: ${describe(e)}`));
    },
  };
  const nConns = 1 + r.int(3);
  const starts: Array<() => void> = [];
  for (let c = 0; c < nConns; c++) {
    const actors = 1 + r.int(3);
    // Some connections are closed by the client at a random operation, with work in flight.
    const closeAt = r.chance(0.35) ? 1 + r.int(actors * 20) : Infinity;
    const st = await open(target, `conn ${c}`, closeAt, seedState);
    states.push(st);
    const start = () => {
      for (let a = 0; a < actors; a++) {
        const label = `c${c}a${a}`;
        st.actors.push(
          actor(st, (seed * 7919 + c * 101 + a * 13) >>> 0, label).catch((e) => {
            if ((st.closed || st.seed.ending) && isCode(e, "unavailable")) return;
            st.problems.push(`${label}: ${describe(e)}`);
          }),
        );
      }
    };
    // A server that goes away stops accepting as it begins to: every connection is opened
    // before the operations that may stop it begin. Otherwise a connection opens while the
    // others work.
    if (end === undefined) start();
    else starts.push(start);
  }
  for (const start of starts) start();
  await Promise.all(
    states.map(async (st) => {
      await Promise.all(st.actors);
      // A connection whose server goes away is not ended by the client (unless it closed it).
      if (end !== undefined) return;
      try {
        if (!st.closed) await bounded(`${st.name} end checks`, endCleanly(st));
      } catch (e) {
        st.problems.push(`${st.name} end: ${describe(e)}`);
        st.conn.close();
      }
    }),
  );
  if (end !== undefined) {
    // The actors finished before the operation the stop was due at: stop it now, idle.
    seedState.fire();
    await seedState.firing;
    const exited = await bounded("the server's exit", end.exited, 15_000).catch((e) => ({ code: null, signal: describe(e) }));
    const expected = end.how === "term" ? { code: 0, signal: null } : { code: null, signal: "SIGKILL" };
    if (exited.code !== expected.code || exited.signal !== expected.signal) problems.push(`the server exited ${JSON.stringify(exited)}, expected ${JSON.stringify(expected)}`);
    if (probe !== undefined) {
      await probed;
      // The graceful stop ends with a goaway `peer_closing` on every connection.
      const why = await bounded("the probe's close", probe.conn.closed).catch((e) => describe(e));
      if (why !== "peer_closing") problems.push(`the probe connection closed with ${why}, not the goaway peer_closing`);
    }
  }
  await Promise.all(
    states.map(async (st) => {
      // The server's graceful stop may wait for the calls in progress (up to its grace, 10 s).
      const reason = await bounded(`${st.name} closed`, st.conn.closed, end === undefined ? OP_MS : 12_000).catch((e) => `not closed: ${describe(e)}`);
      if (reason.startsWith("not closed")) st.problems.push(`${st.name}: ${reason}`);
      else if (end !== undefined && !st.closed) {
        // Ended by the server: by its goaway (SIGTERM), or the socket dropping (SIGKILL).
        const want = end.how === "term" ? "peer_closing" : "transport closed";
        if (!reason.startsWith(want)) st.problems.push(`${st.name} closed with ${JSON.stringify(reason)}, expected ${want}`);
        count(`connection ended by ${end.how}`);
      }
      try {
        const s = st.conn.stats();
        assert.deepEqual(s, { pendingCalls: 0, clientStreams: 0, abandonedCalls: 0, servedCaps: 0, activeHandlers: 0, bufferedStreamBytes: 0 });
      } catch {
        st.problems.push(`${st.name} tables not empty after close: ${JSON.stringify(st.conn.stats())}`);
      }
      problems.push(...st.problems.map((p) => `${st.name}${Number.isFinite(st.closeAt) ? " (closed with work in flight)" : ""}: ${p}`));
    }),
  );
  if (probe !== undefined) {
    try {
      assert.deepEqual(probe.conn.stats(), { pendingCalls: 0, clientStreams: 0, abandonedCalls: 0, servedCaps: 0, activeHandlers: 0, bufferedStreamBytes: 0 });
    } catch {
      problems.push(`probe tables not empty after close: ${JSON.stringify(probe.conn.stats())}`);
    }
  }
  // The sockets' close handshakes finish on their own; give them a moment before counting timers.
  const left = await until(async () => timers() - timersBefore, (n) => n <= 0, 1000);
  if (left > 0) problems.push(`${left} timer(s) left`);
  if (unexpected.length > 0) {
    problems.push(...unexpected.map((e) => `thrown or rejected unhandled: ${describe(e)}`));
    unexpected = [];
  }
  return problems;
}
