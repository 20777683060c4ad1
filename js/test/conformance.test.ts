// The web client against PROTOCOL.md, as a client and as a peer serving caps: a raw peer on an
// in-memory transport sends the frames a rule speaks of and checks the exact frames that come
// back (docs/RELIABILITY.md, "Web client conformance audit").

import assert from "node:assert/strict";
import { test } from "node:test";

import { CapRef, Connection, memoryPair, type CallContext, type CapDef, type Impl } from "../src/index.js";
import { InteropCounter } from "../src/interop.gen.js";
import { assertClean, failsWith, rawPeer, tick } from "./raw_peer.js";

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
