// The web client against PROTOCOL.md, as a client and as a peer serving caps: a raw peer on an
// in-memory transport sends the frames a rule speaks of and checks the exact frames that come
// back (docs/RELIABILITY.md, "Web client conformance audit").

import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { test } from "node:test";

import { CapRef, Connection, FrameEncoder, RpcError, callMethod, dispose, memoryPair, release, streamMethod, type CallContext, type CapDef, type Impl, type Transport } from "../src/index.js";
import { InteropCounter } from "../src/interop.gen.js";
import { assertClean, failsWith, rawPeer, setup, tick } from "./raw_peer.js";

const Child: CapDef = { name: "t.child", methods: { ping: { kind: "call" } } };
const Parent: CapDef = {
  name: "t.parent",
  methods: {
    work: { kind: "call" },
    ticks: { kind: "stream", initialCredit: 8 },
    make: { kind: "call", returns: "cap", cap: () => Child },
    makeAll: { kind: "call", returns: "array", cap: () => Child },
  },
};

/** A connection serving `impl` as `t.parent`, a raw peer that bootstrapped it (cap-id 2, call id 1). */
async function serving(impl: Impl) {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  const handle = conn.serve(Parent, impl);
  const peer = rawPeer(b);
  peer.hello();
  peer.send({ op: "call", id: 1, target: { kind: "cap", id: 0 }, method: "bootstrap", args: { name: "t.parent" }, meta: undefined });
  await tick();
  const boot = peer.got.find((f) => f["op"] === "result" && f["id"] === 1);
  assert.ok(boot?.["value"] instanceof CapRef && boot["value"].id === 2, JSON.stringify(boot));
  return { conn, peer, handle };
}

const call = (id: number, method: string, args: unknown = undefined, meta: unknown = undefined) => ({
  op: "call",
  id,
  target: { kind: "cap", id: 2 },
  method,
  args,
  meta,
});

/** A handler that makes a call, opens a stream and bootstraps, all from the peer's caps as children of its call, then waits. */
function childMaker(made: { ctx?: CallContext; results: Promise<unknown>[] }): Impl {
  return {
    work: (_args: unknown, ctx: CallContext) => {
      made.ctx = ctx;
      const opts = { parentCallId: ctx.callId };
      const counter = ctx.connection.clientFor(5, InteropCounter);
      const s = counter.ticks({ n: 1 }, opts);
      made.results.push(counter.get(opts), s.next(), ctx.connection.bootstrap(InteropCounter, opts));
      return new Promise(() => {});
    },
  };
}

test("cancelling a call cancels the calls, streams and bootstraps its handler made, each with the same reason", async () => {
  const made: { ctx?: CallContext; results: Promise<unknown>[] } = { results: [] };
  const { conn, peer } = await serving(childMaker(made));
  peer.send(call(2, "work"));
  await tick();
  const children = peer.got.filter((f) => f["op"] === "call");
  assert.deepEqual(
    children.map((f) => [f["method"], f["meta"]?.["parentCallId"]]),
    [["ticks", 2], ["get", 2], ["bootstrap", 2]],
  );
  peer.send({ op: "cancel", id: 2, reason: "user left" });
  for (const r of made.results) await failsWith(r, "cancelled");
  await tick();
  assert.deepEqual(peer.got.find((f) => f["op"] === "result" && f["id"] === 2)?.["error"], { code: "cancelled", message: "user left" });
  const cancels = peer.got.filter((f) => f["op"] === "cancel");
  assert.deepEqual(
    cancels.map((f) => [f["id"], f["reason"]]).sort(),
    children.map((f) => [f["id"], "user left"]).sort(),
  );
  assert.equal(made.ctx?.signal.aborted, true);
  conn.close();
  assertClean(conn);
});

test("a cancel without a reason is answered cancelled without a message, and the children's cancels carry none", async () => {
  const made: { ctx?: CallContext; results: Promise<unknown>[] } = { results: [] };
  const { conn, peer } = await serving(childMaker(made));
  peer.send(call(2, "work"));
  await tick();
  const children = peer.got.filter((f) => f["op"] === "call").map((f) => f["id"]);
  peer.send({ op: "cancel", id: 2, reason: undefined });
  for (const r of made.results) await failsWith(r, "cancelled");
  await tick();
  const result = peer.got.find((f) => f["op"] === "result" && f["id"] === 2);
  assert.deepEqual(result?.["error"], { code: "cancelled" });
  const cancels = peer.got.filter((f) => f["op"] === "cancel");
  assert.deepEqual(cancels.map((f) => f["id"]).sort(), [...children].sort());
  for (const c of cancels) {
    assert.ok("reason" in c, "the cancel frame's reason key is always present (§4)");
    assert.equal(c["reason"], undefined);
  }
  conn.close();
  assertClean(conn);
});

test("unserving a cap stops the streams served on it: end after cap_revoked, no slot held", async () => {
  let stopped = false;
  const { conn, peer, handle } = await serving({
    ticks: function* () {
      try {
        for (let i = 0; ; i++) yield { i };
      } finally {
        stopped = true;
      }
    },
  });
  peer.send(call(2, "ticks", {}));
  await tick();
  // Stalled on credit after its initial 8.
  assert.equal(peer.got.filter((f) => f["op"] === "stream" && f["ev"] === "next").length, 8);
  assert.equal(conn.stats().activeHandlers, 1);
  handle.unserve();
  await tick();
  const after = peer.got.slice(peer.got.findIndex((f) => f["op"] === "cap_revoked"));
  assert.deepEqual(
    after.map((f) => [f["op"], f["capIds"] ?? f["ev"], f["id"]]),
    [["cap_revoked", [2], undefined], ["stream", "end", 2]],
  );
  assert.equal(stopped, true, "the source is stopped");
  // Credit the consumer sent before it saw the revocation finds nothing to wake.
  peer.send({ op: "stream", id: 2, ev: "credit", credit: { messages: 8 } });
  await tick();
  assert.equal(peer.got.filter((f) => f["op"] === "stream").length, 9);
  conn.close();
  assertClean(conn);
});

test("a cap-returning handler that returns no cap it exported is answered failed_precondition unregistered_cap_return", async () => {
  const Other: CapDef = { name: "t.other", methods: { ping: { kind: "call" } } };
  const returns: unknown[] = [];
  const { conn, peer } = await serving({
    make: (_a: unknown, ctx: CallContext) => {
      const r = returns.shift();
      return typeof r === "function" ? r(ctx) : r;
    },
    makeAll: (_a: unknown, ctx: CallContext) => [ctx.exportCap(Child, {}), "not a cap"],
  });
  returns.push(
    "not a cap",
    new CapRef(2),
    (ctx: CallContext) => [ctx.exportCap(Child, {})],
    (ctx: CallContext) => ctx.exportCap(Other, {}),
    (ctx: CallContext) => ctx.exportCap(Child, {}),
  );
  for (let id = 2; id <= 6; id++) peer.send(call(id, "make"));
  peer.send(call(7, "makeAll"));
  await tick();
  const answer = (id: number) => peer.got.find((f) => f["op"] === "result" && f["id"] === id);
  const expect = "expected ctx.exportCap return for cap method";
  for (const [id, message] of [[2, expect], [3, expect], [4, expect], [5, "exported cap type mismatch with method returns"], [7, expect]] as const) {
    assert.deepEqual(answer(id)?.["error"], { code: "failed_precondition", message, details: { reason: "unregistered_cap_return" } }, `call ${id}`);
  }
  const ok = answer(6);
  assert.equal(ok?.["ok"], true);
  assert.ok(ok?.["value"] instanceof CapRef);
  // The caps the failing handlers exported were freed: the bootstrap instance and the one returned stay.
  assert.equal(conn.stats().servedCaps, 2);
  conn.close();
  assertClean(conn);
});

test("a stream method is never signalled at its deadline: its values keep coming", async () => {
  let signal: AbortSignal | undefined;
  const { conn, peer } = await serving({
    ticks: async function* (_a: unknown, ctx: CallContext) {
      signal = ctx.signal;
      for (let i = 0; ; i++) {
        yield { i };
        await new Promise((r) => setTimeout(r, 5));
      }
    },
  });
  peer.send(call(2, "ticks", {}, { deadlineMs: 10 }));
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(signal?.aborted, false);
  assert.equal(peer.got.some((f) => f["op"] === "stream" && f["ev"] === "end"), false);
  peer.send({ op: "stream", id: 2, ev: "credit", credit: { messages: 8 } });
  await new Promise((r) => setTimeout(r, 80));
  assert.ok(peer.got.filter((f) => f["op"] === "stream" && f["ev"] === "next").length > 8);
  conn.close();
  assertClean(conn);
});

test("deadlines past setTimeout's 24.8 days, or not finite, fire nothing at once, on either side", async () => {
  const signals: AbortSignal[] = [];
  const { conn, peer } = await serving({
    work: (_a: unknown, ctx: CallContext) => {
      signals.push(ctx.signal);
      return new Promise(() => {});
    },
  });
  peer.send(call(2, "work", undefined, { deadlineMs: 2 ** 31 }));
  peer.send(call(3, "work", undefined, { deadlineMs: Infinity }));
  // As a client: a call with such a deadline waits for its answer.
  const pending = conn.call(9, "x", undefined, { deadlineMs: 2 ** 31 });
  let settled = false;
  pending.then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(
    signals.map((s) => s.aborted),
    [false, false],
  );
  assert.equal(settled, false);
  assert.equal(peer.got.some((f) => f["op"] === "cancel"), false);
  const sent = peer.got.find((f) => f["op"] === "call" && f["method"] === "x")!;
  assert.equal(sent["meta"]?.["deadlineMs"], 2 ** 31);
  peer.send({ op: "result", id: sent["id"], ok: true, value: "late but fine" });
  assert.equal(await pending, "late but fine");
  conn.close();
  assertClean(conn);
});

test("an error too large for the peer's maxBytes is replaced by resource_exhausted max_frame_bytes: results, stream errors, bootstrap answers", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  conn.serve(Parent, {
    work: () => {
      throw new Error("x".repeat(5000));
    },
    ticks: function* () {
      throw new Error("y".repeat(5000));
    },
  });
  const peer = rawPeer(b);
  peer.hello({ maxBytes: 1000 });
  peer.send({ op: "call", id: 1, target: { kind: "cap", id: 0 }, method: "bootstrap", args: { name: "t.parent" }, meta: undefined });
  peer.send({ op: "call", id: 2, target: { kind: "cap", id: 0 }, method: "bootstrap", args: { name: "n".repeat(5000) }, meta: undefined });
  peer.send(call(3, "work"));
  peer.send(call(4, "ticks", {}));
  await tick();
  const replaced = { code: "resource_exhausted", message: "error exceeds the peer's maxBytes 1000", details: { reason: "max_frame_bytes" } };
  assert.deepEqual(peer.got.find((f) => f["op"] === "result" && f["id"] === 2)?.["error"], replaced);
  assert.deepEqual(peer.got.find((f) => f["op"] === "result" && f["id"] === 3)?.["error"], replaced);
  assert.deepEqual(peer.got.find((f) => f["op"] === "stream" && f["id"] === 4)?.["error"], replaced);
  // A small error still goes out whole.
  peer.send(call(5, "nope"));
  await tick();
  assert.deepEqual(peer.got.find((f) => f["op"] === "result" && f["id"] === 5)?.["error"], { code: "not_found", message: 'method "nope" on cap "t.parent"' });
  assert.equal(conn.isClosed, false);
  conn.close();
  assertClean(conn);
});

// ---- rules that held, pinned ----

test("a call reusing the id of a call or stream still running is a protocol error; a finished id may come again", async () => {
  for (const first of [call(2, "work"), call(2, "ticks", {})]) {
    const { conn, peer } = await serving({
      work: () => new Promise(() => {}),
      make: (_a: unknown, ctx: CallContext) => ctx.exportCap(Child, {}),
      ticks: function* () {
        for (;;) yield 1;
      },
    });
    // Id 1 (the bootstrap) has finished: reusing it is no error.
    peer.send({ ...call(1, "make") });
    await tick();
    assert.equal(peer.got.find((f) => f["op"] === "result" && f["id"] === 1 && f["ok"] && f["value"]?.id === 3)?.["ok"], true);
    peer.send(first);
    await tick();
    assert.equal(conn.isClosed, false);
    peer.send(call(2, "work"));
    await conn.closed;
    const goaway = peer.got.find((f) => f["op"] === "goaway");
    assert.equal(goaway?.["reason"], "invalid_argument");
    assert.equal(goaway?.["error"]?.["code"], "invalid_argument");
    assertClean(conn);
  }
});

test("client credit: 8 back per 8 consumed, and the rest whenever the app waits on an empty buffer", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  const peer = rawPeer(b);
  peer.hello();
  const s = conn.clientFor(2, InteropCounter).ticks({ n: 100 });
  await tick();
  const id = peer.got.find((f) => f["op"] === "call")!["id"];
  for (let i = 0; i < 11; i++) peer.send({ op: "stream", id, ev: "next", value: { i } });
  await tick();
  const credits = () => peer.got.filter((f) => f["op"] === "stream" && f["ev"] === "credit").map((f) => [f["id"], f["credit"]]);
  for (let i = 0; i < 7; i++) assert.deepEqual((await s.next()).value, { i });
  await tick();
  assert.deepEqual(credits(), []);
  await s.next();
  await tick();
  assert.deepEqual(credits(), [[id, { messages: 8 }]]);
  for (let i = 8; i < 11; i++) await s.next();
  await tick();
  assert.deepEqual(credits(), [[id, { messages: 8 }]], "values still buffered: no credit yet");
  const waiting = s.next();
  await tick();
  assert.deepEqual(credits(), [[id, { messages: 8 }], [id, { messages: 3 }]]);
  peer.send({ op: "stream", id, ev: "end" });
  assert.equal((await waiting).done, true);
  conn.close();
  assertClean(conn);
});

test("server credit: at least 8 at first, credit 0 or missing ignored, and a cancel while stalled stops the source with end", async () => {
  let stopped = false;
  const Small: CapDef = { name: "t.small", methods: { ticks: { kind: "stream", initialCredit: 2 } } };
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  conn.serve(Small, {
    ticks: function* () {
      try {
        for (let i = 0; ; i++) yield i;
      } finally {
        stopped = true;
      }
    },
  });
  const peer = rawPeer(b);
  peer.hello();
  peer.send({ op: "call", id: 1, target: { kind: "cap", id: 0 }, method: "bootstrap", args: { name: "t.small" }, meta: undefined });
  peer.send({ op: "call", id: 2, target: { kind: "cap", id: 2 }, method: "ticks", args: {}, meta: undefined });
  await tick();
  const nexts = () => peer.got.filter((f) => f["op"] === "stream" && f["ev"] === "next").length;
  assert.equal(nexts(), 8);
  peer.send({ op: "stream", id: 2, ev: "credit", credit: { messages: 0 } });
  peer.send({ op: "stream", id: 2, ev: "credit", credit: {} });
  peer.send({ op: "stream", id: 2, ev: "credit" });
  peer.send({ op: "stream", id: 2, ev: "credit", credit: { messages: -5 } });
  await tick();
  assert.equal(nexts(), 8);
  peer.send({ op: "stream", id: 2, ev: "credit", credit: { messages: 3 } });
  await tick();
  assert.equal(nexts(), 11);
  peer.send({ op: "cancel", id: 2, reason: "client_cancel" });
  await tick();
  const last = peer.got.filter((f) => f["op"] === "stream" || f["op"] === "result").at(-1);
  assert.deepEqual([last?.["op"], last?.["ev"], last?.["id"]], ["stream", "end", 2]);
  assert.equal(stopped, true);
  assert.equal(conn.stats().activeHandlers, 0);
  conn.close();
  assertClean(conn);
});

test("cap_revoked fails a pending stream failed_precondition revoked, and a later one locally with nothing sent", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  const peer = rawPeer(b);
  peer.hello();
  const c = conn.clientFor(2, InteropCounter);
  const s = c.ticks({ n: 5 });
  await tick();
  peer.send({ op: "cap_revoked", capIds: [2] });
  await assert.rejects(s.next(), (e: unknown) => e instanceof RpcError && e.code === "failed_precondition" && e.message === "cap revoked" && e.reason === "revoked");
  const sent = peer.got.length;
  await assert.rejects(c.ticks({ n: 1 }).next(), (e: unknown) => e instanceof RpcError && e.code === "failed_precondition" && e.reason === "revoked");
  await tick();
  assert.equal(peer.got.length, sent, "nothing sent: no cancel for the revoked stream, no call for the later one");
  conn.close();
  assertClean(conn);
});

test("a stream's abort listener goes once its end or error is read, or it is cancelled (as a call's with its answer); an abort after that changes nothing", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const c = conn.clientFor(2, InteropCounter);
  const ac = new AbortController();
  const listeners = () => getEventListeners(ac.signal, "abort").length;
  const idOf = () => peer.got.at(-1)!["id"] as number;
  // Ended: the listener goes when the end is read.
  const ended = c.ticks({ n: 1 }, { signal: ac.signal });
  await tick();
  peer.send({ op: "stream", id: idOf(), ev: "next", value: { i: 0 } });
  peer.send({ op: "stream", id: idOf(), ev: "end" });
  await tick();
  assert.equal(listeners(), 1, "held while the value and the end wait to be read");
  assert.deepEqual(await ended.next(), { value: { i: 0 }, done: false });
  assert.deepEqual(await ended.next(), { value: undefined, done: true });
  assert.equal(listeners(), 0, "gone once the end was read");
  // Failed while a next() waits: the error is read at once.
  const failed = c.ticks({ n: 1 }, { signal: ac.signal });
  await tick();
  const waiting = failed.next();
  peer.send({ op: "stream", id: idOf(), ev: "error", error: { code: "internal", message: "x" } });
  await failsWith(waiting, "internal");
  assert.equal(listeners(), 0, "gone once the error was read");
  // Cancelled, and ended by the connection's shutdown (a goaway) while a next() waits.
  c.ticks({ n: 1 }, { signal: ac.signal }).cancel();
  assert.equal(listeners(), 0, "gone on cancel");
  const open = c.ticks({ n: 1 }, { signal: ac.signal });
  await tick();
  const pending = open.next();
  peer.send({ op: "goaway", reason: "invalid_argument" });
  await failsWith(pending, "unavailable", "goaway");
  assert.equal(listeners(), 0, "gone once the shutdown's error was read");
  ac.abort();
  assertClean(conn);
});

test("an unknown status code is kept as internal with the original text; a second hello's maxBytes bounds our calls", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  const peer = rawPeer(b);
  peer.hello({ maxBytes: 1 << 20 });
  const p = conn.call(2, "x", undefined);
  await tick();
  peer.send({ op: "result", id: 1, ok: false, error: { code: "teapot", message: "short and stout", details: { reason: "tea" } } });
  await assert.rejects(p, (e: unknown) => e instanceof RpcError && e.code === "internal" && e.message.includes("teapot") && e.message.includes("short and stout"));
  peer.hello({ maxBytes: 1000, origin: "second" });
  await tick();
  assert.equal(conn.peer?.origin, "second");
  await failsWith(conn.call(2, "x", "z".repeat(2000)), "resource_exhausted", "max_frame_bytes");
  conn.close();
  assertClean(conn);
});

test("revoked ids are remembered in a bounded set, the newest 4096", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  const peer = rawPeer(b);
  peer.hello();
  peer.send({ op: "cap_revoked", capIds: Array.from({ length: 4097 }, (_, i) => 10 + i) });
  await tick();
  // 10 was pushed out by the 4097th; 11 is still remembered.
  await failsWith(conn.call(11, "x", undefined), "failed_precondition", "revoked");
  const forgotten = conn.call(10, "x", undefined);
  await tick();
  assert.equal(peer.got.filter((f) => f["op"] === "call" && f["target"]?.["id"] === 10).length, 1);
  conn.close();
  await failsWith(forgotten, "unavailable", "peer_closing");
  assertClean(conn);
});

test("a reference is released once: release twice sends one drop, dispose twice calls the disposal once, nothing after close", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  const peer = rawPeer(b);
  peer.hello();
  const counter = conn.clientFor(2, InteropCounter);
  const made = [counter.makeChild({ name: "a" }), counter.makeChild({ name: "b" }), counter.makeChild({ name: "c" })];
  await tick();
  const calls = peer.got.filter((f) => f["op"] === "call");
  calls.forEach((c, i) => peer.send({ op: "result", id: c["id"], ok: true, value: new CapRef(7 + i) }));
  const [x, y, z] = await Promise.all(made);
  release(x!);
  release(x!);
  const disposals = [dispose(y!), dispose(y!)];
  await tick();
  const close = peer.got.filter((f) => f["op"] === "call" && f["method"] === "close");
  assert.equal(close.length, 1);
  peer.send({ op: "result", id: close[0]!["id"], ok: true, value: undefined });
  await Promise.all(disposals);
  assert.deepEqual(
    peer.got.filter((f) => f["op"] === "drop").map((f) => f["caps"]),
    [[{ id: 7, delta: 1 }], [{ id: 8, delta: 1 }]],
  );
  conn.close();
  await tick();
  const sent = peer.got.length;
  release(z!);
  await dispose(z!);
  await tick();
  assert.equal(peer.got.length, sent);
  assertClean(conn);
});

test("a released or disposed proxy fails its calls and streams locally, failed_precondition cap released, sending nothing (as the Rust client's LocalError::Released); another proxy of the same cap keeps working", async () => {
  const { conn, peer } = setup();
  peer.hello();
  // The same bootstrap instance twice (the server counts two references), and a child.
  const boots = [conn.bootstrap(InteropCounter), conn.bootstrap(InteropCounter)];
  await tick();
  for (const c of peer.got.filter((f) => f["op"] === "call")) peer.send({ op: "result", id: c["id"], ok: true, value: new CapRef(2) });
  const [first, second] = await Promise.all(boots);
  const making = first!.makeChild({ name: "k" });
  await tick();
  peer.send({ op: "result", id: peer.got.at(-1)!["id"], ok: true, value: new CapRef(7) });
  const child = await making;
  release(second!);
  const disposing = dispose(child);
  await tick();
  const close = peer.got.filter((f) => f["op"] === "call" && f["method"] === "close");
  peer.send({ op: "result", id: close[0]!["id"], ok: true, value: undefined });
  await disposing;
  const sent = peer.got.length;
  // Each fails at once, without waiting for an answer.
  const failsLocally = async (p: Promise<unknown>, what: string) => {
    const r = await Promise.race([p.then(() => "resolved", (e: unknown) => e), tick().then(() => "still pending")]);
    assert.ok(r instanceof RpcError && r.code === "failed_precondition" && r.message === "cap released", `${what}: ${String(r)}`);
  };
  await failsLocally(second!.get(), "get on a released bootstrap");
  await failsLocally(second!.increment({ delta: 1 }), "increment on a released bootstrap");
  await failsLocally(second!.ticks({ n: 3 }).next(), "a stream of a released bootstrap");
  await failsLocally(callMethod(second!, "get"), "callMethod on a released bootstrap");
  await failsLocally(streamMethod(second!, "ticks", { n: 3 }).next(), "streamMethod on a released bootstrap");
  await failsLocally(child.ping({ x: 1 }), "ping on a disposed child");
  await tick();
  assert.deepEqual(peer.got.slice(sent), [], "nothing sent for a released proxy");
  // The first proxy holds its own reference: its calls still go out.
  const still = first!.get();
  await tick();
  assert.equal(peer.got.slice(sent).filter((f) => f["op"] === "call" && f["target"]?.["id"] === 2).length, 1);
  peer.send({ op: "result", id: peer.got.at(-1)!["id"], ok: true, value: { count: 1 } });
  assert.deepEqual(await still, { count: 1 });
  release(first!);
  conn.close();
  assertClean(conn);
});

test("close sends goaway peer_closing (as the Rust client) before the transport closes; pending calls fail unavailable peer_closing", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  const peer = rawPeer(b);
  peer.hello();
  const pending = conn.clientFor(2, InteropCounter).get();
  await tick();
  conn.close();
  await failsWith(pending, "unavailable", "peer_closing");
  await tick();
  assert.equal(peer.isClosed(), true);
  const last = peer.got.at(-1);
  assert.deepEqual(last, { op: "goaway", reason: "peer_closing" });
  assert.equal(peer.got.filter((f) => f["op"] === "goaway").length, 1);
  // A second close sends nothing more.
  conn.close();
  await tick();
  assert.equal(peer.got.filter((f) => f["op"] === "goaway").length, 1);
  assertClean(conn);
});

test("shutdown errors say why, as the Rust client's Disconnect::status: goaway for the peer's goaway, peer_closing for our close, the transport's end and protocol errors", async () => {
  type Ends = { conn: Connection; peer: ReturnType<typeof rawPeer>; transport: Transport };
  const cases: Array<{ name: string; end: (e: Ends) => void; message: string; reason: string; hello?: { code: string; message: string; reason: string | undefined } }> = [
    { name: "the peer's goaway", end: (e) => e.peer.send({ op: "goaway", reason: "bye" }), message: "bye", reason: "goaway" },
    { name: "a reasonless goaway", end: (e) => e.peer.send({ op: "goaway" }), message: "goaway", reason: "goaway" },
    // A Rust server's graceful stop (drain, then close) ends with this goaway.
    { name: "the peer's graceful stop", end: (e) => e.peer.send({ op: "goaway", reason: "peer_closing" }), message: "peer_closing", reason: "goaway" },
    {
      name: "a goaway with an error",
      end: (e) => e.peer.send({ op: "goaway", reason: "resource_exhausted", error: { code: "resource_exhausted", message: "too long", details: { reason: "max_frame_bytes" } } }),
      message: "resource_exhausted",
      reason: "goaway",
      // A bootstrap waiting for the hello gets the goaway's error, as in the Rust client.
      hello: { code: "resource_exhausted", message: "too long", reason: "max_frame_bytes" },
    },
    {
      name: "a goaway whose error has no reason",
      end: (e) => e.peer.send({ op: "goaway", reason: "invalid_argument", error: { code: "invalid_argument", message: "bad frame" } }),
      message: "invalid_argument",
      reason: "goaway",
      hello: { code: "invalid_argument", message: "bad frame", reason: undefined },
    },
    { name: "our close", end: (e) => e.conn.close(), message: "closed locally", reason: "peer_closing" },
    { name: "our close with a reason", end: (e) => e.conn.close("page hidden"), message: "page hidden", reason: "peer_closing" },
    { name: "the transport's end", end: (e) => e.transport.close(), message: "transport closed: memory transport closed", reason: "peer_closing" },
    { name: "a protocol error", end: (e) => e.peer.sendBytes(Uint8Array.from([0xc1])), message: "protocol error: undecodable message: reserved byte 0xc1", reason: "peer_closing" },
    { name: "an oversize message", end: (e) => e.peer.sendBytes(new Uint8Array(2000)), message: "message of 2000 bytes exceeds maxBytes 1000", reason: "peer_closing" },
  ];
  for (const c of cases) {
    for (const withHello of [true, false]) {
      const [a, b] = memoryPair();
      const conn = new Connection(a, { origin: "test", limits: { maxBytes: 1000 } });
      const peer = rawPeer(b);
      if (withHello) peer.hello();
      await tick();
      const counter = conn.clientFor(2, InteropCounter);
      const call = counter.get();
      const stream = counter.ticks({ n: 1 }).next();
      const boot = conn.bootstrap(InteropCounter);
      let handled: string | undefined;
      conn.onClose((r) => (handled = r));
      await tick();
      assert.equal(peer.got.filter((f) => f["op"] === "call").length, withHello ? 3 : 2, `${c.name}: what was sent`);
      c.end({ conn, peer, transport: b });
      const what = `${c.name}${withHello ? "" : ", before the hello"}`;
      const expect = async (p: Promise<unknown>, code: string, message: string, reason: string | undefined, which: string) => {
        await assert.rejects(p, (e: unknown) => {
          assert.ok(e instanceof RpcError, `${what}, ${which}: ${String(e)}`);
          assert.deepEqual({ code: e.code, message: e.message, reason: e.reason }, { code, message, reason }, `${what}, ${which}`);
          return true;
        });
      };
      await expect(call, "unavailable", c.message, c.reason, "call");
      await expect(stream, "unavailable", c.message, c.reason, "stream");
      const h = !withHello && c.hello !== undefined ? c.hello : { code: "unavailable", message: c.message, reason: c.reason };
      await expect(boot, h.code, h.message, h.reason, "bootstrap");
      assert.equal(await conn.closed, c.message, what);
      assert.equal(handled, c.message, what);
      // Work begun after the shutdown fails locally, with no reason (the Rust `Error::closed`).
      await expect(counter.get(), "unavailable", "connection closed", undefined, "a call after");
      await expect(counter.ticks({ n: 1 }).next(), "unavailable", "connection closed", undefined, "a stream after");
      assertClean(conn);
    }
  }
});

test("a cancel's reason is cut at 1 KiB of UTF-8 at a character boundary (as the Rust peer) before it is echoed or passed to the children", async () => {
  const made: { ctx?: CallContext; results: Promise<unknown>[] } = { results: [] };
  const { conn, peer } = await serving(childMaker(made));
  peer.send(call(2, "work"));
  await tick();
  const children = peer.got.filter((f) => f["op"] === "call").map((f) => f["id"]);
  // 4 bytes of UTF-8 (a surrogate pair) a character, after one byte: the cut at 1024 bytes
  // falls inside a character and must step back to 1021.
  const long = "x" + "😀".repeat(100_000);
  peer.send({ op: "cancel", id: 2, reason: long });
  for (const r of made.results) await failsWith(r, "cancelled");
  await tick();
  const cut = "x" + "😀".repeat(255) + "…";
  const cancels = peer.got.filter((f) => f["op"] === "cancel");
  assert.deepEqual(cancels.map((f) => f["id"]).sort(), [...children].sort());
  for (const c of cancels) assert.equal(c["reason"], cut);
  assert.deepEqual(peer.got.find((f) => f["op"] === "result" && f["id"] === 2)?.["error"], { code: "cancelled", message: cut });
  assert.equal(made.ctx?.signal.reason, cut);
  // A reason of exactly 1024 bytes is kept whole.
  const made2: { ctx?: CallContext; results: Promise<unknown>[] } = { results: [] };
  const { conn: conn2, peer: peer2 } = await serving(childMaker(made2));
  peer2.send(call(2, "work"));
  await tick();
  const exact = "é".repeat(512);
  peer2.send({ op: "cancel", id: 2, reason: exact });
  for (const r of made2.results) await failsWith(r, "cancelled");
  await tick();
  assert.equal(peer2.got.filter((f) => f["op"] === "cancel").length, 3);
  for (const c of peer2.got.filter((f) => f["op"] === "cancel")) assert.equal(c["reason"], exact);
  conn.close();
  conn2.close();
  assertClean(conn);
  assertClean(conn2);
});

test("names and versions a peer chose are quoted back in errors cut at 1 KiB (as the Rust peer), and compared whole", async () => {
  const longMethod = "m".repeat(5000);
  const Versioned: CapDef = { name: "t.versioned", version: "1", methods: { [longMethod]: { kind: "call" } } };
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  conn.serve(Versioned, {});
  const peer = rawPeer(b);
  peer.hello();
  const long = "é".repeat(50_000);
  const cut = "é".repeat(512) + "…";
  const boot = (id: number, args: unknown) => peer.send({ op: "call", id, target: { kind: "cap", id: 0 }, method: "bootstrap", args, meta: undefined });
  boot(1, { name: long });
  boot(2, { name: "t.versioned", version: long });
  // A version that starts like the served one but is longer is still a mismatch: compared whole.
  boot(3, { name: "t.versioned", version: "1" + "x".repeat(2000) });
  boot(4, { name: "t.versioned", version: "1" });
  await tick();
  const answer = (id: number) => peer.got.find((f) => f["op"] === "result" && f["id"] === id);
  assert.deepEqual(answer(1)?.["error"], { code: "not_found", message: `cap "${cut}" not served` });
  assert.deepEqual(answer(2)?.["error"], {
    code: "failed_precondition",
    message: `version mismatch (server "1", client "${cut}")`,
    details: { reason: "version_mismatch" },
  });
  assert.deepEqual(answer(3)?.["error"], {
    code: "failed_precondition",
    message: `version mismatch (server "1", client "1${"x".repeat(1023)}…")`,
    details: { reason: "version_mismatch" },
  });
  assert.ok(answer(4)?.["value"] instanceof CapRef);
  const cap = (answer(4)!["value"] as CapRef).id;
  peer.send({ op: "call", id: 5, target: { kind: "cap", id: cap }, method: long, args: undefined, meta: undefined });
  peer.send({ op: "call", id: 6, target: { kind: "cap", id: cap }, method: longMethod, args: undefined, meta: undefined });
  await tick();
  assert.deepEqual(answer(5)?.["error"], { code: "not_found", message: `method "${cut}" on cap "t.versioned"` });
  assert.deepEqual(answer(6)?.["error"], { code: "not_found", message: `method "${"m".repeat(1024)}…" has no handler` });
  conn.close();
  assertClean(conn);
});

test("a call whose meta.context is past 64 KiB of UTF-8 (as the Rust peer's max_context_bytes) fails invalid_argument and runs no handler", async () => {
  const contexts: Array<Record<string, string>> = [];
  const { conn, peer } = await serving({ work: (_a: unknown, ctx: CallContext) => (contexts.push(ctx.context), "ran") });
  // The key's byte counts too: 1 + 2 × 32767 + 1 = 65536 bytes, then one more.
  const at = { k: "é".repeat(32767) + "x" };
  const over = { k: "é".repeat(32767) + "xy" };
  peer.send(call(2, "work", undefined, { context: over }));
  peer.send(call(3, "work", undefined, { context: at }));
  await tick();
  assert.deepEqual(peer.got.find((f) => f["op"] === "result" && f["id"] === 2)?.["error"], {
    code: "invalid_argument",
    message: "meta.context of 65537 bytes is over the limit of 65536 bytes (max_context_bytes)",
  });
  assert.equal(peer.got.find((f) => f["op"] === "result" && f["id"] === 3)?.["value"], "ran");
  assert.deepEqual(contexts, [at]);
  conn.close();
  assertClean(conn);
});

/** A raw peer on a fresh connection, with helpers to bootstrap and call and read the answers. */
function servingPeer(options: ConstructorParameters<typeof Connection>[1] = {}) {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test", ...options });
  const peer = rawPeer(b);
  peer.hello();
  let nextId = 1;
  const answer = (id: number) => peer.got.find((f) => f["op"] === "result" && f["id"] === id);
  const send = (cap: number, method: string, args: unknown) => {
    const id = nextId++;
    peer.send({ op: "call", id, target: { kind: "cap", id: cap }, method, args, meta: undefined });
    return id;
  };
  return {
    conn,
    peer,
    answer,
    revoked: () => peer.got.filter((f) => f["op"] === "cap_revoked").map((f) => f["capIds"]),
    /** Bootstraps `name`: its cap-id, or its error, once answered. */
    bootstrap: async (name: string): Promise<number | Record<string, unknown>> => {
      const id = send(0, "bootstrap", { name });
      for (let i = 0; i < 100 && answer(id) === undefined; i++) await tick();
      const r = answer(id);
      return r?.["ok"] ? (r["value"] as CapRef).id : r?.["error"];
    },
    call: async (cap: number, method: string): Promise<unknown> => {
      const id = send(cap, method, undefined);
      await tick();
      return answer(id)?.["value"];
    },
  };
}

const throwsRpc = (f: () => unknown, code: string, reason: string | undefined, message: string) =>
  assert.throws(f, (e: unknown) => e instanceof RpcError && e.code === code && e.reason === reason && e.message === message);

test("serve ifExists (as the Rust peer's IfExists): throw is name_collision, skip owns nothing, replace switches the live instance at once with no cap_revoked; replace() needs the name and its version", async () => {
  const Svc = (version: string | undefined): CapDef => ({ name: "t.svc", version, disposal: "close", methods: { who: { kind: "call" }, close: { kind: "call" } } });
  const disposed: string[] = [];
  const impl = (who: string): Impl => ({ who: () => who, close: () => void disposed.push(who) });
  const s = servingPeer();
  const h1 = s.conn.serve(Svc("1"), impl("a"));
  assert.deepEqual(h1.names, ["t.svc"]);
  const cap = await s.bootstrap("t.svc");
  assert.equal(cap, 2);
  assert.equal(await s.call(2, "who"), "a");
  throwsRpc(() => s.conn.serve(Svc("1"), impl("b")), "already_exists", "name_collision", 'cap "t.svc" already served');
  throwsRpc(() => s.conn.serve({ name: "bunite.Mine", methods: {} }, {}), "already_exists", "reserved_namespace", 'cap name "bunite.Mine" uses reserved prefix "bunite."');
  const skipped = s.conn.serve(Svc("1"), impl("b"), { ifExists: "skip" });
  assert.deepEqual(skipped.names, []);
  skipped.unserve();
  assert.equal(await s.call(2, "who"), "a");
  throwsRpc(() => s.conn.serve(Svc("2"), impl("b"), { ifExists: "replace" }), "failed_precondition", "version_mismatch", 'version mismatch (current "1", new "2")');
  throwsRpc(() => s.conn.serve(Svc(undefined), impl("b"), { ifExists: "replace" }), "failed_precondition", "version_mismatch", 'version mismatch (current "1", new "undefined")');
  assert.equal(await s.call(2, "who"), "a");
  const h2 = s.conn.serve(Svc("1"), impl("b"), { ifExists: "replace" });
  assert.deepEqual(h2.names, ["t.svc"]);
  assert.equal(await s.call(2, "who"), "b", "the live instance runs the new impl");
  assert.equal(await s.bootstrap("t.svc"), 2, "the same instance, one more reference");
  s.conn.replace(Svc("1"), impl("c"));
  assert.equal(await s.call(2, "who"), "c");
  throwsRpc(() => s.conn.replace({ name: "t.none", methods: {} }, {}), "not_found", undefined, 'cap "t.none" not served');
  throwsRpc(() => s.conn.replace(Svc("2"), impl("d")), "failed_precondition", "version_mismatch", 'version mismatch (current "1", new "2")');
  assert.deepEqual(s.revoked(), [], "nothing revoked by skip or replace");
  assert.deepEqual(disposed, [], "a replaced impl is not disposed");
  // The first handle still owns the name it served, replaced since: unserving disposes the
  // current impl of the live instance and revokes it; the replacing handle then has nothing left.
  h1.unserve();
  await tick();
  assert.deepEqual(s.revoked(), [[2]]);
  assert.deepEqual(disposed, ["c"]);
  assert.equal(((await s.bootstrap("t.svc")) as Record<string, unknown>)["code"], "not_found");
  h2.unserve();
  await tick();
  assert.deepEqual(s.revoked(), [[2]]);
  s.conn.close();
  assertClean(s.conn);
});

test("serveAll is atomic (every check passes before anything is served, a name twice is a collision); unserving its handle revokes every live instance in one cap_revoked; unserve of a name not served is a no-op", async () => {
  const def = (name: string, version = "1"): CapDef => ({ name, version, methods: { who: { kind: "call" } } });
  const impl: Impl = { who: () => "x" };
  const s = servingPeer();
  s.conn.serve(def("t.a"), impl);
  throwsRpc(() => s.conn.serveAll([{ def: def("t.b"), impl }, { def: def("t.a"), impl }]), "already_exists", "name_collision", 'cap "t.a" already served');
  throwsRpc(() => s.conn.serveAll([{ def: def("t.b"), impl }, { def: def("t.b"), impl }], { ifExists: "replace" }), "already_exists", "name_collision", 'cap "t.b" already served');
  throwsRpc(
    () => s.conn.serveAll([{ def: def("t.b"), impl }, { def: def("t.a", "2"), impl }], { ifExists: "replace" }),
    "failed_precondition",
    "version_mismatch",
    'version mismatch on replace for "t.a" (current "1", new "2")',
  );
  assert.equal(((await s.bootstrap("t.b")) as Record<string, unknown>)["code"], "not_found", "nothing of a failed batch is served");
  const skipSome = s.conn.serveAll([{ def: def("t.a"), impl }, { def: def("t.b"), impl }, { def: def("t.c"), impl }], { ifExists: "skip" });
  assert.deepEqual(skipSome.names, ["t.b", "t.c"]);
  assert.equal(await s.bootstrap("t.b"), 2);
  assert.equal(await s.bootstrap("t.c"), 3);
  assert.equal(await s.bootstrap("t.a"), 4);
  skipSome.unserve();
  await tick();
  assert.deepEqual(s.revoked(), [[2, 3]], "one cap_revoked for the handle's names, t.a left alone");
  assert.equal(await s.call(4, "who"), "x");
  s.conn.unserve("t.nothing");
  s.conn.unserve(def("t.b"));
  await tick();
  assert.deepEqual(s.revoked(), [[2, 3]]);
  // A handle whose name was unserved and served again by another serve leaves that one alone.
  const stale = s.conn.serve(def("t.d"), impl);
  s.conn.unserve("t.d");
  s.conn.serve(def("t.d"), impl);
  stale.unserve();
  assert.equal(await s.bootstrap("t.d"), 5);
  s.conn.unserve(def("t.a"));
  await tick();
  assert.deepEqual(s.revoked(), [[2, 3], [4]]);
  s.conn.close();
  throwsRpc(() => s.conn.serve(def("t.e"), impl), "unavailable", undefined, "connection closed");
  throwsRpc(() => s.conn.replace(def("t.d"), impl), "unavailable", undefined, "connection closed");
  assertClean(s.conn);
});

test("a bootstrap waiting on the policy checks the registry again when it answers (as the Rust peer): a replaced name gets the new impl, an unserved one not_found", async () => {
  const def: CapDef = { name: "t.p", methods: { who: { kind: "call" } } };
  const allow: (() => void)[] = [];
  const s = servingPeer({ policy: () => new Promise<boolean>((r) => allow.push(() => r(true))) });
  s.conn.serve(def, { who: () => "old" });
  const first = s.bootstrap("t.p");
  await tick();
  s.conn.replace(def, { who: () => "new" });
  for (const a of allow.splice(0)) a();
  const cap = await first;
  assert.equal(cap, 2);
  assert.equal(await s.call(2, "who"), "new");
  s.conn.serve({ name: "t.q", methods: {} }, {});
  const third = s.bootstrap("t.q");
  await tick();
  s.conn.unserve("t.q");
  for (const a of allow.splice(0)) a();
  assert.deepEqual(await third, { code: "not_found", message: 'cap "t.q" not served' });
  s.conn.close();
  assertClean(s.conn);
});

test("caps a handler exports for a call whose cap was unserved while it ran are freed with its answer (as the Rust peer's target_revoked): its client failed the call on cap_revoked and never releases them", async () => {
  let finish: () => void = () => {};
  const { conn, peer, handle } = await serving({
    make: async (_a: unknown, ctx: CallContext) => {
      await new Promise<void>((r) => (finish = r));
      return ctx.exportCap(Child, { ping: () => "pong" });
    },
  });
  peer.send(call(2, "make"));
  await tick();
  handle.unserve();
  await tick();
  assert.deepEqual(peer.got.find((f) => f["op"] === "cap_revoked")?.["capIds"], [2]);
  finish();
  await tick();
  // The answer still goes out (its client ignores it); what it exported is not kept.
  assert.ok(peer.got.find((f) => f["op"] === "result" && f["id"] === 2)?.["value"] instanceof CapRef);
  assert.deepEqual(conn.stats(), { pendingCalls: 0, clientStreams: 0, abandonedCalls: 0, servedCaps: 0, activeHandlers: 0, bufferedStreamBytes: 0 });
  conn.close();
  assertClean(conn);
});

test("a hello's missing fields take the Rust decoder's defaults; a field of the wrong type is goaway invalid_argument 'invalid hello frame: <field>'", async () => {
  const { conn, peer } = setup();
  peer.send({ op: "hello", v: 1 });
  await tick();
  assert.deepEqual(conn.peer, { mode: "native", features: [], maxBytes: 64 * 1024 * 1024, origin: "" });
  // A maxBytes of 0 is read (as the Rust peer's non-negative integer), a fraction cut down.
  peer.send({ op: "hello", v: 1, maxBytes: 0 });
  await tick();
  assert.equal(conn.peer?.maxBytes, 0);
  peer.send({ op: "hello", v: 1, maxBytes: 1000.5, mode: "web", origin: "o", features: ["f"] });
  await tick();
  assert.deepEqual(conn.peer, { mode: "web", features: ["f"], maxBytes: 1000, origin: "o" });
  assert.equal(conn.isClosed, false);
  conn.close();
  assertClean(conn);
  const bad: Array<[Record<string, unknown>, string]> = [
    [{ mode: null }, "mode"],
    [{ mode: 1 }, "mode"],
    [{ features: "x" }, "features"],
    [{ features: [1] }, "features"],
    [{ maxBytes: -1 }, "maxBytes"],
    [{ maxBytes: Number.NaN }, "maxBytes"],
    [{ maxBytes: "1" }, "maxBytes"],
    [{ origin: null }, "origin"],
  ];
  for (const [fields, field] of bad) {
    const { conn, peer } = setup();
    peer.send({ op: "hello", v: 1, ...fields });
    await conn.closed;
    await tick();
    assert.deepEqual(peer.got.find((f) => f["op"] === "goaway")?.["error"], { code: "invalid_argument", message: `invalid hello frame: ${field}` }, JSON.stringify(fields));
    assertClean(conn);
  }
});

test("a float bootstrap version is spelled as String() spells it, as the Rust peer's js_string: 1.5, 1e+21, 0 for -0, NaN, Infinity, 1e-7", async () => {
  // The Rust peer's table (a_float_version_is_spelled_as_js_spells_it in
  // crates/bunite-rpc/src/session/bootstrap.rs); each sent as a float64, -0 too.
  const cases: Array<[number, string]> = [
    [1.5, "1.5"],
    [-1.5, "-1.5"],
    [1e21, "1e+21"],
    [1e20, "100000000000000000000"],
    [123456789012345680000, "123456789012345680000"],
    [-0, "0"],
    [NaN, "NaN"],
    [Infinity, "Infinity"],
    [-Infinity, "-Infinity"],
    [1e-7, "1e-7"],
    [1.5e-7, "1.5e-7"],
    [0.000001, "0.000001"],
    [0.1 + 0.2, "0.30000000000000004"],
    [5e-324, "5e-324"],
    [Number.MAX_VALUE, "1.7976931348623157e+308"],
    [2.5e25, "2.5e+25"],
    [4294967296.5, "4294967296.5"],
  ];
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  conn.serve({ name: "t.v", version: "1e+21", methods: {} }, {});
  const peer = rawPeer(b);
  peer.hello();
  const enc = new FrameEncoder();
  const placeholder = 0.25; // cb 3f d0 00 00 00 00 00 00
  cases.forEach(([version], i) => {
    const bytes = enc.encode({ op: "call", id: i + 1, target: { kind: "cap", id: 0 }, method: "bootstrap", args: { name: "t.v", version: placeholder }, meta: undefined });
    const at = bytes.findIndex((x, j) => x === 0xcb && bytes[j + 1] === 0x3f && bytes[j + 2] === 0xd0);
    new DataView(bytes.buffer, bytes.byteOffset + at + 1, 8).setFloat64(0, version);
    peer.sendBytes(bytes);
  });
  await tick();
  const answer = (id: number) => peer.got.find((f) => f["op"] === "result" && f["id"] === id);
  cases.forEach(([version, spelled], i) => {
    if (spelled === "1e+21") return assert.ok(answer(i + 1)?.["value"] instanceof CapRef, String(version));
    assert.deepEqual(answer(i + 1)?.["error"], {
      code: "failed_precondition",
      message: `version mismatch (server "1e+21", client "${spelled}")`,
      details: { reason: "version_mismatch" },
    });
  });
  peer.send({ op: "drop", caps: [{ id: (answer(3)?.["value"] as CapRef).id, delta: 1 }] });
  conn.close();
  assertClean(conn);
});

test("a bootstrap's version that is not a string is compared by its string form, as the Rust peer's js_string; null is none", async () => {
  const Versioned: CapDef = { name: "t.v", version: "1", methods: {} };
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  conn.serve(Versioned, {});
  const peer = rawPeer(b);
  peer.hello();
  const boot = (id: number, version: unknown) => peer.send({ op: "call", id, target: { kind: "cap", id: 0 }, method: "bootstrap", args: { name: "t.v", version }, meta: undefined });
  boot(1, 1);
  boot(2, 2);
  boot(3, true);
  boot(4, [1]);
  boot(5, null);
  await tick();
  const answer = (id: number) => peer.got.find((f) => f["op"] === "result" && f["id"] === id);
  const mismatch = (client: string) => ({ code: "failed_precondition", message: `version mismatch (server "1", client "${client}")`, details: { reason: "version_mismatch" } });
  assert.ok(answer(1)?.["value"] instanceof CapRef);
  assert.deepEqual(answer(2)?.["error"], mismatch("2"));
  assert.deepEqual(answer(3)?.["error"], mismatch("true"));
  assert.deepEqual(answer(4)?.["error"], mismatch("[object Object]"));
  assert.ok(answer(5)?.["value"] instanceof CapRef);
  conn.close();
  assertClean(conn);
});
