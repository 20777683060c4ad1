// The client against a hostile peer: a raw peer on an in-memory transport sends what a
// broken or malicious server might. Nothing may throw out of the client; pending work fails
// with the status PROTOCOL §11–13 says; protocol errors get a goaway first.

import assert from "node:assert/strict";
import { test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

import { CapRef, Connection, DecodeError, FrameDecoder, FrameEncoder, RpcError, dispose, memoryPair, release } from "../src/index.js";
import { InteropCounter } from "../src/interop.gen.js";
import { VALUE_KEPT } from "../src/stream.js";
import { assertClean, failsExactly, failsWith, rawPeer, setup, tick } from "./raw_peer.js";

// `gc()` for the test of a stream collected unread.
setFlagsFromString("--expose-gc");

let unhandled: unknown[] = [];
process.on("unhandledRejection", (e) => unhandled.push(e));
process.on("uncaughtException", (e) => unhandled.push(e));

test("garbage bytes: goaway invalid_argument, then every pending call fails unavailable peer_closing", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const pending = conn.call(2, "x", undefined);
  await tick();
  peer.sendBytes(Uint8Array.from([0xc1]));
  await failsWith(pending, "unavailable", "peer_closing");
  assert.equal(conn.isClosed, true);
  const goaway = peer.got.find((f) => f["op"] === "goaway");
  assert.equal(goaway?.["reason"], "invalid_argument");
  await failsExactly(conn.call(2, "x", undefined), "unavailable", "connection closed", undefined);
  assertClean(conn);
});

test("unknown op, wrong hello version, a map instead of a record, a reused frame id: each a protocol error", async () => {
  for (const bad of [
    { op: "bogus" },
    { op: "hello", v: 2, mode: "native", features: [], maxBytes: 1, origin: "" },
    new Map([["op", "hello"]]),
    { op: "result", id: "one", ok: true, value: 1 },
    { op: "call", id: 1, target: { kind: "cap", id: -1 }, method: "m", args: undefined, meta: undefined },
    { op: "drop", caps: [{ id: 2 }] },
    [1, 2, 3],
  ]) {
    const { conn, peer } = setup();
    peer.send(bad);
    await conn.closed;
    await tick();
    assert.equal(peer.got.find((f) => f["op"] === "goaway")?.["error"]?.["code"], "invalid_argument", JSON.stringify([...(bad instanceof Map ? bad : Object.entries(bad))]));
    assertClean(conn);
  }
});

test("a message above our maxBytes: goaway resource_exhausted max_frame_bytes", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { limits: { maxBytes: 1000 } });
  const peer = rawPeer(b);
  peer.send({ op: "result", id: 9, ok: true, value: "x".repeat(2000) });
  await conn.closed;
  await tick();
  const g = peer.got.find((f) => f["op"] === "goaway");
  assert.equal(g?.["error"]?.["details"]?.["reason"], "max_frame_bytes");
  assertClean(conn);
});

test("a non-cap where a cap is declared fails the call invalid_argument and releases what came", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const counter = conn.clientFor(2, InteropCounter);
  const kids = counter.children({ names: ["a", "b"] });
  await tick();
  const call = peer.got.find((f) => f["op"] === "call")!;
  peer.send({ op: "result", id: call["id"], ok: true, value: [new CapRef(7), "not a cap"] });
  await failsWith(kids, "invalid_argument");
  await tick();
  assert.deepEqual(peer.got.find((f) => f["op"] === "drop")?.["caps"], [{ id: 7, delta: 1 }]);
  conn.close();
  assertClean(conn);
});

test("caps that came in the wrong container are released too: an array where one cap is declared, a cap where a record is", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const counter = conn.clientFor(2, InteropCounter);
  const one = counter.makeChild({ name: "a" });
  const map = counter.childMap({ names: ["b"] });
  const boot = conn.bootstrap(InteropCounter);
  await tick();
  const [c1, c2, c3] = peer.got.filter((f) => f["op"] === "call").map((f) => f["id"]);
  peer.send({ op: "result", id: c1, ok: true, value: [new CapRef(7), new CapRef(8)] });
  peer.send({ op: "result", id: c2, ok: true, value: new CapRef(9) });
  peer.send({ op: "result", id: c3, ok: true, value: { x: new CapRef(10) } });
  await failsWith(one, "invalid_argument");
  await failsWith(map, "invalid_argument");
  await failsWith(boot, "invalid_argument");
  await tick();
  const drops = peer.got.filter((f) => f["op"] === "drop").map((f) => f["caps"]);
  assert.deepEqual(drops, [[{ id: 7, delta: 1 }, { id: 8, delta: 1 }], [{ id: 9, delta: 1 }], [{ id: 10, delta: 1 }]]);
  conn.close();
  assertClean(conn);
});

test("caps nested anywhere in a result nobody adopts are released, as the Rust client's Payload::cap_refs: in arrays, records, Maps and Sets", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const counter = conn.clientFor(2, InteropCounter);
  const map = counter.childMap({ names: ["b"] });
  const boot = conn.bootstrap(InteropCounter);
  const ac = new AbortController();
  const kids = counter.children({ names: ["a"] }, { signal: ac.signal });
  await tick();
  const [c1, c2, c3] = peer.got.filter((f) => f["op"] === "call").map((f) => f["id"]);
  ac.abort();
  await failsWith(kids, "cancelled");
  peer.send({ op: "result", id: c1, ok: true, value: { x: [new CapRef(11), { y: new CapRef(12) }] } });
  peer.send({ op: "result", id: c2, ok: true, value: [{ a: new CapRef(13) }, new CapRef(1)] });
  peer.send({ op: "result", id: c3, ok: true, value: [new Map([[new CapRef(14), new CapRef(15)]]), new Set([new CapRef(16)])] });
  await failsWith(map, "invalid_argument");
  await failsWith(boot, "invalid_argument");
  await tick();
  const drops = peer.got.filter((f) => f["op"] === "drop").map((f) => f["caps"]);
  const one = (id: number) => ({ id, delta: 1 });
  assert.deepEqual(drops, [[one(11), one(12)], [one(13)], [one(14), one(15), one(16)]]);
  conn.close();
  assertClean(conn);
});

test("cap_revoked naming ids 0 and 1 revokes neither, as the Rust client reads it: a waiting bootstrap and later calls to them still go out", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const boot = conn.bootstrap(InteropCounter);
  await tick();
  const first = peer.got.find((f) => f["op"] === "call")!["id"];
  peer.send({ op: "cap_revoked", capIds: [0, 1, 5] });
  await tick();
  peer.send({ op: "result", id: first, ok: true, value: new CapRef(5) });
  const counter = await boot;
  // 5 was revoked: calls on it fail locally; 0 and 1 were not.
  await failsWith(counter.get(), "failed_precondition", "revoked");
  const again = conn.bootstrap(InteropCounter);
  const runtime = conn.call(1, "appName", undefined);
  await tick();
  const calls = peer.got.filter((f) => f["op"] === "call" && f["id"] !== first);
  const [bootId, appId] = [0, 1].map((cap) => calls.find((f) => f["target"]["id"] === cap)?.["id"]);
  assert.equal(calls.length, 2);
  peer.send({ op: "result", id: bootId, ok: true, value: new CapRef(6) });
  peer.send({ op: "result", id: appId, ok: true, value: "app" });
  release(await again);
  release(counter);
  assert.equal(await runtime, "app");
  conn.close();
  assertClean(conn);
});

test("caps in the answer to a cap-returning call given up on are released, once, and other late answers ignored", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const counter = conn.clientFor(2, InteropCounter);
  // Cancelled by the caller, then answered with caps that raced the cancel.
  const ac = new AbortController();
  const kids = counter.children({ names: ["a", "b"] }, { signal: ac.signal });
  await tick();
  const call = peer.got.find((f) => f["op"] === "call")!;
  ac.abort();
  await failsWith(kids, "cancelled");
  peer.send({ op: "result", id: call["id"], ok: true, value: [new CapRef(7), new CapRef(8)] });
  // A second answer to the same id, and one to an id never used, release nothing.
  peer.send({ op: "result", id: call["id"], ok: true, value: [new CapRef(9)] });
  peer.send({ op: "result", id: 999, ok: true, value: new CapRef(10) });
  await tick();
  // A value method's late answer is not ours to release, CapRef or not (PROTOCOL §7).
  const ac2 = new AbortController();
  const echo = counter.echo("x", { signal: ac2.signal });
  await tick();
  const echoCall = peer.got.filter((f) => f["op"] === "call").at(-1)!;
  ac2.abort();
  await failsWith(echo, "cancelled");
  peer.send({ op: "result", id: echoCall["id"], ok: true, value: new CapRef(11) });
  await tick();
  const drops = peer.got.filter((f) => f["op"] === "drop").map((f) => f["caps"]);
  assert.deepEqual(drops, [[{ id: 7, delta: 1 }, { id: 8, delta: 1 }]]);
  assert.equal(peer.got.filter((f) => f["op"] === "cancel").length, 2);
  assertClean(conn);
  conn.close();
  assertClean(conn);
});

test("a cap-returning call given up on keeps its in-flight slot until its answer arrives, and none is forgotten", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test", limits: { maxInFlightCalls: 3 } });
  const peer = rawPeer(b);
  peer.hello();
  const counter = conn.clientFor(2, InteropCounter);
  const given = [0, 1, 2].map(() => {
    const ac = new AbortController();
    const kids = counter.children({ names: ["a"] }, { signal: ac.signal });
    return { ac, kids };
  });
  await tick();
  const ids = peer.got.filter((f) => f["op"] === "call").map((f) => f["id"]);
  assert.equal(ids.length, 3);
  for (const g of given) g.ac.abort();
  for (const g of given) await failsWith(g.kids, "cancelled");
  assert.equal(conn.stats().abandonedCalls, 3);
  assert.equal(conn.stats().pendingCalls, 0);
  // Their answers may still bring caps of ours to release: the slots stay taken.
  await failsWith(counter.echo("x"), "resource_exhausted", "max_concurrent_calls");
  await tick();
  assert.equal(peer.got.filter((f) => f["op"] === "call").length, 3);
  // One late answer frees one slot, and its cap is released.
  peer.send({ op: "result", id: ids[0], ok: true, value: [new CapRef(7)] });
  await tick();
  assert.equal(conn.stats().abandonedCalls, 2);
  const echo = counter.echo("y");
  await tick();
  const echoCall = peer.got.filter((f) => f["op"] === "call").at(-1)!;
  assert.equal(echoCall["method"], "echo");
  peer.send({ op: "result", id: echoCall["id"], ok: true, value: "y" });
  assert.equal(await echo, "y");
  // The others' caps are released when their answers come, however late.
  peer.send({ op: "result", id: ids[2], ok: true, value: [new CapRef(9)] });
  peer.send({ op: "result", id: ids[1], ok: false, error: { code: "cancelled", message: "client_cancel" } });
  await tick();
  const drops = peer.got.filter((f) => f["op"] === "drop").map((f) => f["caps"]);
  assert.deepEqual(drops, [[{ id: 7, delta: 1 }], [{ id: 9, delta: 1 }]]);
  assertClean(conn);
  conn.close();
  assertClean(conn);
});

test("a stream flooding past its credit window fails resource_exhausted and is cancelled", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const ticks = conn.clientFor(2, InteropCounter).ticks({ n: 1 });
  await tick();
  const id = peer.got.find((f) => f["op"] === "call")!["id"];
  for (let i = 0; i < 1100; i++) peer.send({ op: "stream", id, ev: "next", value: { i } });
  await tick();
  let n = 0;
  await assert.rejects(
    (async () => {
      for await (const _ of ticks) n++;
    })(),
    (e: unknown) => e instanceof RpcError && e.reason === "stream_credit_window",
  );
  assert.ok(n > 0 && n <= 1032, `read ${n}`);
  assert.ok(peer.got.some((f) => f["op"] === "cancel" && f["id"] === id));
  assert.equal(conn.stats().clientStreams, 0);
  conn.close();
  assertClean(conn);
});

// ---- the stream buffer in bytes (maxBufferedStreamBytes, as the Rust client's max_buffered_stream_bytes) ----

/** Opens `n` streams against a raw peer, the connection's stream buffer bounded at `max` bytes. */
async function streamsUpTo(max: number, n: number) {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test", limits: { maxBufferedStreamBytes: max } });
  const peer = rawPeer(b);
  peer.hello();
  const counter = conn.clientFor(2, InteropCounter);
  const streams = Array.from({ length: n }, () => counter.ticks({ n: 1 }));
  await tick();
  const ids = peer.got.filter((f) => f["op"] === "call").map((f) => f["id"] as number);
  /** Sends a value of `len` characters on stream `id`; what it is charged (its message + VALUE_KEPT). */
  const next = (id: number, len = 1000) => peer.send({ op: "stream", id, ev: "next", value: "x".repeat(len) }) + VALUE_KEPT;
  return { conn, peer, streams, ids, next };
}

/** Reads every value left and the end of `s`; how many values, and the error it ended with. */
async function drain(s: AsyncIterator<unknown>): Promise<{ n: number; error?: RpcError }> {
  let n = 0;
  for (;;) {
    try {
      const r = await s.next();
      if (r.done) return { n };
      n++;
    } catch (e) {
      return { n, error: e as RpcError };
    }
  }
}

test("a stream past its credit window sends the server cancel stream_credit_window, as the Rust client does", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const ticks = conn.clientFor(2, InteropCounter).ticks({ n: 1 });
  await tick();
  const id = peer.got.find((f) => f["op"] === "call")!["id"];
  for (let i = 0; i < 1033; i++) peer.send({ op: "stream", id, ev: "next", value: { i } });
  await tick();
  assert.deepEqual(peer.got.filter((f) => f["op"] === "cancel").map((f) => [f["id"], f["reason"]]), [[id, "stream_credit_window"]]);
  ticks.cancel();
  assert.equal(peer.got.filter((f) => f["op"] === "cancel").length, 1);
  conn.close();
  assertClean(conn);
});

test("stream values within maxBufferedStreamBytes are kept, each counted at its message plus VALUE_KEPT until read", async () => {
  const { conn, peer, streams, ids, next } = await streamsUpTo(10_000, 1);
  const [id] = ids;
  let charged = 0;
  for (let i = 0; i < 8; i++) charged += next(id!);
  await tick();
  assert.ok(charged <= 10_000 && charged > 8 * 1000, `charged ${charged}`);
  assert.equal(conn.stats().bufferedStreamBytes, charged);
  assert.equal(conn.stats().clientStreams, 1);
  peer.send({ op: "stream", id, ev: "end" });
  await tick();
  assert.deepEqual(await drain(streams[0]!), { n: 8 });
  assert.equal(peer.got.filter((f) => f["op"] === "cancel").length, 0);
  assertClean(conn);
  conn.close();
  assertClean(conn);
});

test("the value that would take the stream buffer past maxBufferedStreamBytes fails its stream resource_exhausted, and the server is sent cancel client_cancel", async () => {
  const { conn, peer, streams, ids, next } = await streamsUpTo(5_000, 1);
  const [id] = ids;
  const charges = Array.from({ length: 8 }, () => next(id!));
  await tick();
  // The fifth value of about 1,090 bytes would pass 5,000: the four before it stay readable.
  assert.ok(charges.slice(0, 4).reduce((x, y) => x + y) <= 5_000 && charges.slice(0, 5).reduce((x, y) => x + y) > 5_000);
  const cancels = peer.got.filter((f) => f["op"] === "cancel");
  assert.deepEqual(cancels.map((f) => [f["id"], f["reason"]]), [[id, "client_cancel"]]);
  assert.equal(conn.stats().clientStreams, 0);
  const { n, error } = await drain(streams[0]!);
  assert.equal(n, 4);
  assert.equal(error?.code, "resource_exhausted");
  assert.match(error!.message, /maxBufferedStreamBytes/);
  assert.match(error!.message, /limit of 5000 bytes/);
  conn.close();
  assertClean(conn);
});

test("bytes of the stream buffer are given back as values are read, and when a stream is cancelled", async () => {
  const { conn, peer, streams, ids, next } = await streamsUpTo(5_000, 2);
  const [id, other] = ids;
  const first = Array.from({ length: 4 }, () => next(id!));
  await tick();
  const full = first.reduce((x, y) => x + y);
  assert.equal(conn.stats().bufferedStreamBytes, full);
  // Two read: two more fit, where without the reads the first of them would not.
  await streams[0]!.next();
  await streams[0]!.next();
  assert.equal(conn.stats().bufferedStreamBytes, first[2]! + first[3]!);
  const more = [next(id!), next(id!)];
  await tick();
  assert.equal(conn.stats().bufferedStreamBytes, first[2]! + first[3]! + more[0]! + more[1]!);
  assert.equal(peer.got.filter((f) => f["op"] === "cancel").length, 0);
  // Cancelling a stream lets go of what it has not read: the other stream has room again.
  await streams[0]!.return!();
  assert.equal(conn.stats().bufferedStreamBytes, 0);
  assert.deepEqual(peer.got.filter((f) => f["op"] === "cancel").map((f) => [f["id"], f["reason"]]), [[id, "client_cancel"]]);
  const second = Array.from({ length: 4 }, () => next(other!));
  await tick();
  assert.equal(conn.stats().bufferedStreamBytes, second.reduce((x, y) => x + y));
  peer.send({ op: "stream", id: other, ev: "end" });
  await tick();
  assert.deepEqual(await drain(streams[1]!), { n: 4 });
  conn.close();
  assertClean(conn);
});

test("a stream that ended still counts its unread values and the peer's error that ended it, until they are read or let go", async () => {
  const { conn, peer, streams, ids, next } = await streamsUpTo(5_000, 4);
  const [ended, failed, third, fourth] = ids;
  const kept = next(ended!) + next(ended!);
  peer.send({ op: "stream", id: ended, ev: "end" });
  const value = next(failed!);
  const errorLen = peer.send({ op: "stream", id: failed, ev: "error", error: { code: "internal", message: "e".repeat(500) } });
  await tick();
  assert.equal(conn.stats().clientStreams, 2);
  // What the ended streams hold leaves room for one value of 1,000 bytes, not two.
  const fits = next(third!);
  next(third!);
  await tick();
  assert.deepEqual(peer.got.filter((f) => f["op"] === "cancel").map((f) => f["id"]), [third]);
  assert.equal(conn.stats().bufferedStreamBytes, kept + value + errorLen + fits);
  const { n, error } = await drain(streams[2]!);
  assert.equal(n, 1);
  assert.match(error!.message, /maxBufferedStreamBytes/);
  // Read, the ended streams give back what they held; a stream dropped by `return` after its
  // end lets go of its values and error too.
  assert.deepEqual(await drain(streams[0]!), { n: 2 });
  await streams[1]!.next();
  await streams[1]!.return!();
  assert.equal(conn.stats().bufferedStreamBytes, 0);
  // A peer's error that does not fit is kept cut, as a goaway's (1 KiB), and not counted.
  const filler = [next(fourth!), next(fourth!), next(fourth!), next(fourth!)].reduce((x, y) => x + y);
  peer.send({ op: "stream", id: fourth, ev: "error", error: { code: "internal", message: "m".repeat(3000), details: { reason: "why", big: "b".repeat(100) } } });
  await tick();
  assert.equal(conn.stats().bufferedStreamBytes, filler);
  const last = await drain(streams[3]!);
  assert.equal(last.n, 4);
  assert.equal(last.error?.code, "internal");
  assert.ok(last.error!.message.length <= 1025, `message of ${last.error!.message.length}`);
  assert.deepEqual(last.error!.details, { reason: "why" });
  conn.close();
  assertClean(conn);
});

test("all the connection's client streams share maxBufferedStreamBytes", async () => {
  const { conn, peer, streams, ids, next } = await streamsUpTo(5_000, 2);
  const [a, b] = ids;
  // Three values of a and one of b fit (about 4,360 bytes); b's second does not, though b
  // alone holds about 1,090 bytes.
  next(a!), next(a!), next(a!), next(b!);
  await tick();
  assert.equal(peer.got.filter((f) => f["op"] === "cancel").length, 0);
  next(b!);
  await tick();
  assert.deepEqual(peer.got.filter((f) => f["op"] === "cancel").map((f) => f["id"]), [b]);
  assert.equal(conn.stats().clientStreams, 1);
  const fromB = await drain(streams[1]!);
  assert.equal(fromB.n, 1);
  assert.match(fromB.error!.message, /maxBufferedStreamBytes/);
  // b read, a has room for a fourth.
  next(a!);
  peer.send({ op: "stream", id: a, ev: "end" });
  await tick();
  assert.deepEqual(await drain(streams[0]!), { n: 4 });
  conn.close();
  assertClean(conn);
});

test("a stream that ended is let go when its consumer drops it unread: its bytes are given back once it is collected", async () => {
  const gc = runInNewContext("gc") as () => void;
  const { conn, peer, streams, ids, next } = await streamsUpTo(5_000, 1);
  next(ids[0]!);
  peer.send({ op: "stream", id: ids[0], ev: "end" });
  await tick();
  assert.ok(conn.stats().bufferedStreamBytes > 1000);
  streams.length = 0;
  for (let i = 0; i < 20 && conn.stats().bufferedStreamBytes > 0; i++) {
    gc();
    await tick();
  }
  conn.close();
  assertClean(conn);
});

test("an open stream its consumer drops unread, without cancelling, is cancelled client_cancel once collected: its in-flight slot and bytes are given back", async () => {
  const gc = runInNewContext("gc") as () => void;
  const { conn, peer, streams, ids, next } = await streamsUpTo(1 << 20, 2);
  const [dropped, kept] = ids;
  next(dropped!);
  next(kept!);
  await tick();
  assert.equal(conn.stats().clientStreams, 2);
  streams.shift();
  for (let i = 0; i < 20 && conn.stats().clientStreams > 1; i++) {
    gc();
    await tick();
  }
  assert.deepEqual(peer.got.filter((f) => f["op"] === "cancel").map((f) => [f["id"], f["reason"]]), [[dropped, "client_cancel"]]);
  assert.equal(conn.stats().clientStreams, 1);
  assert.deepEqual(await streams[0]!.next(), { value: "x".repeat(1000), done: false });
  assert.equal(conn.stats().bufferedStreamBytes, 0);
  streams[0]!.cancel();
  conn.close();
  assertClean(conn);
});

test("a stream whose handle is dropped while its next() waits is not collected before the value comes: the awaited next() gets it", async () => {
  const gc = runInNewContext("gc") as () => void;
  const { conn, peer, streams, ids, next } = await streamsUpTo(1 << 20, 1);
  // Only the promise of the next value is kept, as `await conn.stream(...).next()` does.
  const waiting = streams.shift()!.next();
  await tick();
  for (let i = 0; i < 10; i++) {
    gc();
    await tick();
  }
  assert.deepEqual(peer.got.filter((f) => f["op"] === "cancel"), []);
  assert.equal(conn.stats().clientStreams, 1);
  next(ids[0]!);
  assert.deepEqual(await waiting, { value: "x".repeat(1000), done: false });
  // Nothing waits for it any more: now it is let go once collected.
  for (let i = 0; i < 20 && conn.stats().clientStreams > 0; i++) {
    gc();
    await tick();
  }
  assert.deepEqual(peer.got.filter((f) => f["op"] === "cancel").map((f) => [f["id"], f["reason"]]), [[ids[0], "client_cancel"]]);
  assert.equal(conn.stats().bufferedStreamBytes, 0);
  conn.close();
  assertClean(conn);
});

test("results for unknown ids, credit for nothing, drops of unknown caps, a result frame on a stream: handled quietly", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const s = conn.clientFor(2, InteropCounter).ticks({ n: 3 });
  await tick();
  const id = peer.got.find((f) => f["op"] === "call")!["id"];
  peer.send({ op: "result", id: 999, ok: true, value: 1 });
  peer.send({ op: "stream", id: 999, ev: "credit", credit: { messages: 0 } });
  peer.send({ op: "drop", caps: [{ id: 55, delta: 3 }, { id: 0, delta: 1 }] });
  peer.send({ op: "cancel", id: 12345, reason: undefined });
  peer.send({ op: "result", id, ok: true, value: "oops" });
  await assert.rejects(s.next(), (e: unknown) => e instanceof RpcError && e.code === "invalid_argument");
  assert.equal(conn.isClosed, false);
  conn.close();
  assertClean(conn);
});

test("goaway fails a bootstrap still waiting for hello with the goaway's error", async () => {
  const { conn, peer } = setup();
  const boot = conn.bootstrap(InteropCounter);
  peer.send({ op: "goaway", reason: "unavailable", error: { code: "unavailable", message: "going away", details: { reason: "peer_closing" } } });
  await failsWith(boot, "unavailable", "peer_closing");
  assertClean(conn);
});

test("a bootstrap aborted while it waits for the hello fails at once and is never sent", async () => {
  const { conn, peer } = setup();
  const abort = new AbortController();
  const boot = conn.bootstrap(InteropCounter, { signal: abort.signal });
  const kept = conn.bootstrap(InteropCounter);
  await tick();
  abort.abort();
  await failsWith(boot, "cancelled");
  peer.hello();
  await tick();
  const calls = peer.got.filter((f) => f["op"] === "call");
  assert.equal(calls.length, 1, "only the bootstrap still wanted is sent");
  peer.send({ op: "result", id: calls[0]!["id"], ok: true, value: new CapRef(2) });
  const client = await kept;
  release(client);
  await tick();
  conn.close();
  assertClean(conn);
});

test("cap_revoked fails pending calls on the cap, and later calls locally", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const c = conn.clientFor(2, InteropCounter);
  const pending = c.get();
  await tick();
  peer.send({ op: "cap_revoked", capIds: [2] });
  await failsWith(pending, "failed_precondition", "revoked");
  const sent = peer.got.length;
  await failsWith(c.get(), "failed_precondition", "revoked");
  await tick();
  assert.equal(peer.got.length, sent);
  conn.close();
  assertClean(conn);
});

test("the in-flight limit fails a call locally, and a call too big for the peer's maxBytes is never sent", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { limits: { maxInFlightCalls: 2 } });
  const peer = rawPeer(b);
  peer.hello({ maxBytes: 1000 });
  await tick();
  const c = conn.clientFor(2, InteropCounter);
  void c.get().catch(() => {});
  void c.get().catch(() => {});
  await failsWith(c.get(), "resource_exhausted", "max_concurrent_calls");
  const [a2, b2] = memoryPair();
  const conn2 = new Connection(a2);
  const peer2 = rawPeer(b2);
  peer2.hello({ maxBytes: 1000 });
  await tick();
  await failsWith(conn2.clientFor(2, InteropCounter).echo("x".repeat(5000)), "resource_exhausted", "max_frame_bytes");
  // The encoder was not touched: a later small call still decodes on the peer.
  void conn2.clientFor(2, InteropCounter).echo({ small: true }).catch(() => {});
  await tick();
  assert.deepEqual(peer2.got.filter((f) => f["op"] === "call").map((f) => f["args"]), [{ small: true }]);
  conn.close();
  conn2.close();
  assertClean(conn);
  assertClean(conn2);
});

/** A record of `n` keys of 40 characters, each prefixed with `tag` so every call makes a new shape. */
function wide(tag: string, n: number): Record<string, number> {
  const o: Record<string, number> = {};
  for (let i = 0; i < n; i++) o[`${tag}-${i}`.padEnd(40, "k")] = i;
  return o;
}

test("record definitions past maxRecordTableBytes: goaway invalid_argument, and nothing kept past the bound", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { limits: { maxRecordTableBytes: 64 * 1024 } });
  const peer = rawPeer(b);
  peer.hello();
  const pending = conn.call(2, "x", undefined);
  await tick();
  // 400 keys of 40 characters: 400 × (32 + 80) = 44,800 bytes a definition; the second is past 64 KiB.
  peer.send({ op: "result", id: 77, ok: true, value: wide("a", 400) });
  await tick();
  assert.equal(conn.isClosed, false, "one definition is within the bound");
  peer.send({ op: "result", id: 78, ok: true, value: wide("b", 400) });
  await failsWith(pending, "unavailable", "peer_closing");
  const goaway = peer.got.find((f) => f["op"] === "goaway");
  assert.equal(goaway?.["error"]?.["code"], "invalid_argument");
  assert.match(goaway?.["error"]?.["message"], /record definitions keep \d+ bytes, past the table's bound of 65536/);
  assertClean(conn);
});

test("a definition that overwrites a slot gives back what the slot kept", () => {
  const enc = new FrameEncoder();
  const one = 200 * (32 + 80);
  const dec = new FrameDecoder(undefined, 40 * one);
  // 100 shapes through the encoder's ring of 32 ids: the slots are overwritten again and
  // again, so what is kept stays at 32 definitions (and would pass 40 if they added up).
  for (let i = 0; i < 100; i++) {
    const v = dec.decode(enc.encode(wide(`s${i}`, 200))) as Record<string, number>;
    assert.equal(v[`s${i}-199`.padEnd(40, "k")], 199);
  }
  assert.equal(dec.recordTableBytes, 32 * one);
});

test("msgpackr's two-byte record definitions fail the message, whatever their high byte, as in the Rust decoder", () => {
  // d5 72 ID HIGH: a definition of the keys ["a"] with the value 1, under ids 64 and -33.
  for (const id of [0x60, 0x41]) {
    const dec = new FrameDecoder();
    assert.throws(() => dec.decode(Uint8Array.from([0xd5, 0x72, id, 0x01, 0x91, 0xa1, 0x61, 0x01])));
  }
  // With a high byte of 0 too: the Rust decoder reads record definitions only as `d4 72 id`.
  assert.throws(() => new FrameDecoder().decode(Uint8Array.from([0xd5, 0x72, 0x60, 0x00, 0x91, 0xa1, 0x61, 0x01])), DecodeError);
});

test("a two-byte record definition or a definition with a key twice is a protocol error: goaway invalid_argument", async () => {
  const messages = [
    [0xd5, 0x72, 0x60, 0x00, 0x91, 0xa1, 0x61, 0x01],
    // {op: "hello", op: "goaway"}: which op it is depends on which of the two keys a reader keeps.
    [0xd4, 0x72, 0x40, 0x92, 0xa2, 0x6f, 0x70, 0xa2, 0x6f, 0x70, 0xa5, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0xa6, 0x67, 0x6f, 0x61, 0x77, 0x61, 0x79],
  ];
  for (const bytes of messages) {
    const { conn, peer } = setup();
    peer.sendBytes(Uint8Array.from(bytes));
    await conn.closed;
    await tick();
    const goaway = peer.got.find((f) => f["op"] === "goaway");
    assert.equal(goaway?.["error"]?.["code"], "invalid_argument");
    assert.match(goaway?.["error"]?.["message"], /record definition/);
    assertClean(conn);
  }
});

/** A `result` frame for call `id` whose value is an array of `n` empty records, each after the first a one-byte reference (slot 0x5f, which no frame of the raw peer's uses). */
function emptyRecordsResult(id: number, n: number): Uint8Array {
  const head = [
    ...[0xd4, 0x72, 0x5e, 0x94, 0xa2, 0x6f, 0x70, 0xa2, 0x69, 0x64, 0xa2, 0x6f, 0x6b, 0xa5, 0x76, 0x61, 0x6c, 0x75, 0x65], // {op, id, ok, value}
    ...[0xa6, 0x72, 0x65, 0x73, 0x75, 0x6c, 0x74, id, 0xc3], // "result", id, true
    ...[0xdd, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255, 0xd4, 0x72, 0x5f, 0x90],
  ];
  const b = new Uint8Array(head.length + n - 1);
  b.set(head);
  b.fill(0x5f, head.length);
  return b;
}

test("a result of 8 MiB of empty-record references (about 500 MB once decoded): refused by the decode budget before decoding, goaway, nothing pending", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const pending = conn.call(2, "get", undefined);
  await tick();
  const id = peer.got.find((f) => f["op"] === "call")!["id"];
  // The same frame, small, is an ordinary answer: the bytes above are well formed.
  const { conn: conn2, peer: peer2 } = setup();
  peer2.hello();
  const small = conn2.call(2, "get", undefined);
  await tick();
  peer2.sendBytes(emptyRecordsResult(peer2.got.find((f) => f["op"] === "call")!["id"], 3));
  assert.deepEqual(await small, [{}, {}, {}]);
  conn2.close();
  assertClean(conn2);

  peer.sendBytes(emptyRecordsResult(id, 8 * 1024 * 1024));
  await failsWith(pending, "unavailable", "peer_closing");
  await conn.closed;
  await tick();
  const goaway = peer.got.find((f) => f["op"] === "goaway");
  assert.equal(goaway?.["reason"], "invalid_argument");
  assert.equal(goaway?.["error"]?.["code"], "invalid_argument");
  assert.match(goaway?.["error"]?.["message"], /^undecodable message: over the decode budget: a message of 8388644 bytes may take 29360236 bytes once decoded/);
  assert.equal(peer.isClosed(), true);
  assertClean(conn);
});

test("the decode budget is the connection's limits: decodeBudgetBase and decodeBudgetFactor", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test", limits: { decodeBudgetBase: 64 * 1024, decodeBudgetFactor: 2 } });
  const peer = rawPeer(b);
  peer.hello();
  const fits = conn.call(2, "get", undefined);
  const over = conn.call(2, "get", undefined);
  await tick();
  const [id1, id2] = peer.got.filter((f) => f["op"] === "call").map((f) => f["id"]);
  // 4,000 small integers: about 32 KB once decoded, within 64 KiB + 2 × 4 KB.
  const ints = Array.from({ length: 4000 }, (_, i) => i & 0x3f);
  peer.send({ op: "result", id: id1, ok: true, value: ints });
  assert.deepEqual(await fits, ints);
  // 40,000 of them: about 320 KB, past 64 KiB + 2 × 40 KB; within the defaults.
  peer.send({ op: "result", id: id2, ok: true, value: Array.from({ length: 40_000 }, () => 1) });
  await failsWith(over, "unavailable", "peer_closing");
  assert.match(peer.got.find((f) => f["op"] === "goaway")?.["error"]?.["message"], /over the decode budget/);
  assertClean(conn);
  const { conn: conn2, peer: peer2 } = setup();
  peer2.hello();
  const fine = conn2.call(2, "get", undefined);
  await tick();
  peer2.send({ op: "result", id: peer2.got.find((f) => f["op"] === "call")!["id"], ok: true, value: Array.from({ length: 40_000 }, () => 1) });
  assert.equal(((await fine) as unknown[]).length, 40_000);
  conn2.close();
  assertClean(conn2);
});

test("a string that is not UTF-8 is a protocol error, goaway invalid_argument as the Rust peer's (InvalidUtf8), and no handler runs", async () => {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  let ran = 0;
  conn.serve({ name: "t.u", methods: { m: { kind: "call" } } }, { m: () => ran++ });
  const peer = rawPeer(b);
  peer.hello();
  peer.send({ op: "call", id: 1, target: { kind: "cap", id: 0 }, method: "bootstrap", args: { name: "t.u" }, meta: undefined });
  await tick();
  const cap = (peer.got.find((f) => f["op"] === "result")?.["value"] as CapRef).id;
  const bytes = new FrameEncoder().encode({ op: "call", id: 2, target: { kind: "cap", id: cap }, method: "XY", args: undefined, meta: undefined });
  // The method's fixstr, "XY", becomes two bytes that are not UTF-8 (msgpackr read them as two U+FFFD).
  const at = bytes.findIndex((x, i) => x === 0xa2 && bytes[i + 1] === 0x58 && bytes[i + 2] === 0x59);
  bytes.set([0xff, 0xfe], at + 1);
  peer.sendBytes(bytes);
  await conn.closed;
  await tick();
  assert.deepEqual(
    peer.got.find((f) => f["op"] === "goaway"),
    { op: "goaway", reason: "invalid_argument", error: { code: "invalid_argument", message: "undecodable message: string is not valid UTF-8" } },
  );
  assert.equal(ran, 0);
  assert.equal(peer.isClosed(), true);
  assertClean(conn);
});

test("values nested past maxDepth: goaway from the walk (too deep), not from msgpackr's recursion overflowing the stack", async () => {
  for (const levels of [257, 200_000]) {
    const { conn, peer } = setup();
    peer.hello();
    const pending = conn.call(2, "get", undefined);
    await tick();
    const bytes = Uint8Array.from([0xd4, 0x72, 0x5e, 0x94, 0xa2, 0x6f, 0x70, 0xa2, 0x69, 0x64, 0xa2, 0x6f, 0x6b, 0xa5, 0x76, 0x61, 0x6c, 0x75, 0x65, 0xa6, 0x72, 0x65, 0x73, 0x75, 0x6c, 0x74, 0x01, 0xc3, ...new Array<number>(levels).fill(0x91), 0x01]);
    peer.sendBytes(bytes);
    await failsWith(pending, "unavailable", "peer_closing");
    await tick();
    assert.equal(peer.got.find((f) => f["op"] === "goaway")?.["error"]?.["message"], "undecodable message: value nested deeper than 256");
    assertClean(conn);
  }
});

test("dispose sends the drop right behind the disposal call: a server that never answers it still gets the drop", async () => {
  const { conn, peer } = setup();
  peer.hello();
  const counter = conn.clientFor(2, InteropCounter);
  const made = counter.makeChild({ name: "a" });
  await tick();
  const make = peer.got.find((f) => f["op"] === "call")!;
  peer.send({ op: "result", id: make["id"], ok: true, value: new CapRef(7) });
  const child = await made;
  let done = false;
  const disposed = dispose(child).then(() => (done = true));
  await tick();
  // PROTOCOL §7, as 0.10.0 sends them: call(close), then drop, before the close's answer.
  const after = peer.got.slice(peer.got.indexOf(make) + 1);
  assert.deepEqual(
    after.map((f) => [f["op"], f["method"] ?? f["caps"]]),
    [["call", "close"], ["drop", [{ id: 7, delta: 1 }]]],
  );
  assert.equal(done, false, "dispose waits for the disposal's answer");
  peer.send({ op: "result", id: after[0]!["id"], ok: true, value: undefined });
  await disposed;
  conn.close();
  assertClean(conn);
});

test("a long goaway is cut (as the Rust peer) before pending calls, hello waiters and close handlers get it: reason and message at 1 KiB, of the details only a short reason", async () => {
  const { conn, peer } = setup();
  // No hello yet: the bootstrap waits for it and gets the goaway's error.
  const boot = conn.bootstrap(InteropCounter);
  const pending = conn.call(2, "x", undefined);
  let closedWith: string | undefined;
  conn.onClose((r) => (closedWith = r));
  await tick();
  // Two bytes a character after one: the cut at 1024 bytes falls inside a character.
  const long = "é".repeat(50_000);
  peer.send({
    op: "goaway",
    reason: "x" + long,
    error: {
      code: "resource_exhausted",
      message: long,
      details: { reason: "max_frame_bytes", padding: long },
      retry: { kind: "after-cooldown", minMs: 5, padding: long },
    },
  });
  const reason = "x" + "é".repeat(511) + "…";
  await assert.rejects(boot, (e: unknown) => {
    assert.ok(e instanceof RpcError);
    assert.equal(e.code, "resource_exhausted");
    assert.equal(e.message, "é".repeat(512) + "…");
    assert.deepEqual(e.details, { reason: "max_frame_bytes" });
    assert.deepEqual(e.retry, { kind: "after-cooldown", minMs: 5 });
    return true;
  });
  await assert.rejects(pending, (e: unknown) => e instanceof RpcError && e.code === "unavailable" && e.message === reason && e.reason === "goaway");
  assert.equal(closedWith, reason);
  assert.equal(await conn.closed, reason);
  assertClean(conn);

  // A details.reason past 1 KiB is dropped with the rest of the details; short texts are kept whole.
  const second = setup();
  const boot2 = second.conn.bootstrap(InteropCounter);
  await tick();
  second.peer.send({ op: "goaway", reason: "bye", error: { code: "unavailable", message: "later", details: { reason: "r".repeat(1025) } } });
  await assert.rejects(boot2, (e: unknown) => e instanceof RpcError && e.message === "later" && e.details === undefined);
  assert.equal(await second.conn.closed, "bye");
  assertClean(second.conn);
});

test("a hello past its bounds (as the Rust peer: 64 features, 4 KiB of UTF-8 a string) is a protocol error with the Rust peer's message, and a bad version is quoted short", async () => {
  const at = "é".repeat(2048); // 4096 bytes of UTF-8, 2048 UTF-16 units
  const over = at + "x";
  const goawayOf = async (hello: Record<string, unknown>, limits = {}) => {
    const [a, b] = memoryPair();
    const conn = new Connection(a, { origin: "test", limits });
    const peer = rawPeer(b);
    peer.hello(hello);
    await tick();
    const g = peer.got.find((f) => f["op"] === "goaway");
    if (g !== undefined) assert.equal(conn.peer, undefined, "a refused hello is not kept");
    if (g === undefined) conn.close();
    assertClean(conn);
    return { g, conn };
  };
  for (const [hello, field] of [
    [{ features: Array.from({ length: 65 }, (_, i) => `f${i}`) }, "features"],
    [{ features: ["a", over] }, "features"],
    [{ mode: over }, "mode"],
    [{ origin: over }, "origin"],
  ] as const) {
    const { g } = await goawayOf(hello);
    assert.deepEqual(g?.["error"], { code: "invalid_argument", message: `invalid hello frame: ${field}` }, field);
  }
  // At the bounds: kept.
  const { g: none, conn } = await goawayOf({ mode: at, origin: at, features: Array.from({ length: 64 }, () => at) });
  assert.equal(none, undefined);
  assert.equal(conn.peer?.features.length, 64);
  assert.equal(conn.peer?.origin, at);
  // The bounds are the connection's limits.
  const { g: few } = await goawayOf({ features: ["a", "b", "c"] }, { maxHelloFeatures: 2 });
  assert.equal(few?.["error"]?.["message"], "invalid hello frame: features");
  const { g: short } = await goawayOf({ origin: "abcdefg" }, { maxHelloText: 6 }); // "native" is 6 bytes
  assert.equal(short?.["error"]?.["message"], "invalid hello frame: origin");
  // A version of a megabyte is quoted by its first 32 characters; an array is not spelled out.
  const { g: v1 } = await goawayOf({ v: "9".repeat(1 << 20) });
  assert.equal(v1?.["error"]?.["message"], `unsupported protocol version "${"9".repeat(32)}"`);
  const { g: v2 } = await goawayOf({ v: Array.from({ length: 100_000 }, () => 1) });
  assert.equal(v2?.["error"]?.["message"], "unsupported protocol version a non-number");
});

test("a peer's huge credit opens a served stream's window only to 1024, as the Rust peer's MAX_WINDOW: one credit frame cannot make an endless source send without end", async () => {
  // Found by the random frames (seed 835): credit 2^53+2 on a stream whose source never ends
  // sent values in one chain of microtasks, never yielding to the event loop, the page's
  // send buffer growing without bound. 5,000 values stand for "without end" here.
  let made = 0;
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  conn.serve({ name: "t.endless", methods: { ticks: { kind: "stream", initialCredit: 8 } } }, {
    ticks: async function* () {
      while (made < 5000) yield made++;
    },
  });
  const peer = rawPeer(b);
  peer.hello();
  peer.send({ op: "call", id: 1, target: { kind: "cap", id: 0 }, method: "bootstrap", args: { name: "t.endless" }, meta: undefined });
  peer.send({ op: "call", id: 2, target: { kind: "cap", id: 2 }, method: "ticks", args: undefined, meta: undefined });
  await tick();
  peer.send({ op: "stream", id: 2, ev: "credit", credit: { messages: 2 ** 53 + 2 } });
  await tick();
  const nexts = () => peer.got.filter((f) => f["op"] === "stream" && f["ev"] === "next").length;
  // The initial 8, then a window of 1024.
  assert.equal(nexts(), 8 + 1024);
  peer.send({ op: "stream", id: 2, ev: "credit", credit: { messages: 10 } });
  await tick();
  assert.equal(nexts(), 8 + 1024 + 10);
  conn.close();
  await tick();
  assertClean(conn);
});

test("nothing above threw or rejected unhandled", async () => {
  await tick();
  assert.deepEqual(unhandled, []);
  unhandled = [];
});
