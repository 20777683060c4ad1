// The web client's sealed pipe against a man in the middle (sealed_relay.ts): a replayed, a
// reflected, a dropped and a reordered message, and a replay from beyond the window, each
// refused by the receiving pipe with the Rust `OpenError`'s text, nothing after it delivered,
// the receiver's goaway `invalid_argument` sent through the pipe, and both sides closed. Between
// two web clients on in-memory transports, and between a web client and
// `bunite-rpc interop-server --key` (its pipe refuses the web client's messages out of
// sequence, which needs the web client's IVs numbered as the Rust pipe's are).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Connection, RpcError, callMethod, importKey, keyFromHex, memoryPair, openWebSocket, sealed, type CapDef, type Client } from "../src/index.js";
import { InteropCounter } from "../src/interop.gen.js";
import { KEY } from "./interop_checks.js";
import { assertClean } from "./raw_peer.js";
import { relay, type Direction, type Frame, type Seen } from "./sealed_relay.js";
import { start, type Server } from "./server.js";

const REPLAYED = "sealed message replayed (its IV was already accepted on this connection)";
const REFLECTED = "sealed message reflected (it is one of ours, sent back to us)";
const outOfSequence = (got: number, afterCounter: number) =>
  `sealed message out of sequence (counter ${got} after ${afterCounter}: a message was dropped, reordered or replayed)`;

const Echo: CapDef = { name: "t.echo", methods: { echo: { kind: "call" } } };

/** Whether `m` carries the call whose args are `tag`. */
const carries = (m: Seen, tag: string) => m.frame?.["op"] === "call" && m.frame["args"] === tag;

/** Whether `m` carries the answer to the call `tag` of `calls` (the other direction's frames). */
const answers = (m: Seen | Frame | undefined, tag: string, calls: Direction) => {
  const f = m !== undefined && "bytes" in m ? (m as Seen).frame : (m as Frame | undefined);
  const call = calls.frames().find((c) => c["op"] === "call" && c["args"] === tag);
  return f?.["op"] === "result" && call !== undefined && f["id"] === call["id"];
};

/** The IV of a sealed message: its salt (hex) and counter. */
const ivOf = (bytes: Uint8Array) => ({
  salt: Buffer.from(bytes.subarray(1, 9)).toString("hex"),
  counter: new DataView(bytes.buffer, bytes.byteOffset).getUint32(9),
});

/** `p`, its rejection handled now (a test awaits it later, once the connection has closed). */
function later<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

async function within<T>(p: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** Once `closing` has closed: the place of the message carrying the call `tag` among `dir`'s. */
async function placeOf(closing: Connection, dir: Direction, tag: string): Promise<number> {
  await within(closing.closed, "close");
  await within(dir.settled(), "relay");
  const i = dir.seen.findIndex((m) => carries(m, tag));
  assert.ok(i > 0, `no message carried ${tag}`);
  return i;
}

/** `p` fails `unavailable` (its connection shut down), not answered. */
async function notAnswered(p: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(within(p, what), (e: unknown) => e instanceof RpcError && e.code === "unavailable", what);
}

/**
 * `refuser` refused a message with `text`: it shut down as a protocol error with that text, its
 * goaway `invalid_argument` with that text went out (`from` saw it), and `other` shut down on it.
 */
async function refusedWith(refuser: Connection, from: Direction, text: string, other?: Connection): Promise<void> {
  assert.equal(await within(refuser.closed, "the refusing side's close"), `protocol error: ${text}`);
  await within(
    (async () => {
      while (from.goaway() === undefined) await new Promise((r) => setTimeout(r, 5));
    })(),
    "the refusing side's goaway",
  );
  assert.deepEqual(from.goaway(), { op: "goaway", reason: "invalid_argument", error: { code: "invalid_argument", message: text } });
  if (other !== undefined) assert.equal(await within(other.closed, "the other side's close"), "invalid_argument");
  // Shut down with nothing left behind.
  assertClean(refuser);
  if (other !== undefined) assertClean(other);
}

describe("the sealed pipe between two web clients, a man in the middle", () => {
  /** A (calling) and B (serving `t.echo`, logging each call it runs), sealed, through a relay. */
  async function pair() {
    const key = keyFromHex(KEY);
    const [a, ra] = memoryPair();
    const [rb, b] = memoryPair();
    const { toA, toB } = relay(await importKey(key), ra, rb);
    const ran: unknown[] = [];
    const A = new Connection(sealed(a, key), { origin: "A" });
    const B = new Connection(sealed(b, key), { origin: "B", serve: [{ def: Echo, impl: { echo: (x: unknown) => (ran.push(x), x) } }] });
    const echo = await A.bootstrap(Echo);
    assert.equal(await callMethod(echo, "echo", "first"), "first");
    return { A, B, toA, toB, ran, echo };
  }

  const call = (echo: Client, tag: string) => later(callMethod(echo, "echo", tag));

  test("a message delivered twice is refused at the second (replayed), and the message after it is not delivered", async () => {
    const { A, B, toA, toB, ran, echo } = await pair();
    toB.tamper = (m) => (carries(m, "x1") ? [m.bytes, m.bytes] : [m.bytes]);
    const x1 = call(echo, "x1").catch(() => "failed");
    const x2 = call(echo, "x2");
    await refusedWith(B, toA, REPLAYED, A);
    await notAnswered(x2, "x2");
    await x1;
    assert.deepEqual(ran, ["first", "x1"]);
  });

  test("an earlier message delivered again later is refused (replayed)", async () => {
    const { A, B, toA, toB, ran, echo } = await pair();
    const first = toB.seen.find((m) => carries(m, "first"))!;
    toB.tamper = (m) => (carries(m, "x1") ? [m.bytes, first.bytes] : [m.bytes]);
    const x1 = call(echo, "x1").catch(() => "failed");
    const x2 = call(echo, "x2");
    await refusedWith(B, toA, REPLAYED, A);
    await notAnswered(x2, "x2");
    await x1;
    assert.deepEqual(ran, ["first", "x1"]);
  });

  test("our own message sent back to us is refused (reflected), and the answer after it is not delivered", async () => {
    const { A, B, toA, toB, ran, echo } = await pair();
    // A's call goes to B, and a copy back to A before B's answer.
    toB.tamper = (m) => {
      if (carries(m, "x1")) toA.inject(m.bytes);
      return [m.bytes];
    };
    const x1 = call(echo, "x1");
    await refusedWith(A, toB, REFLECTED, B);
    await notAnswered(x1, "x1");
    assert.deepEqual(ran, ["first", "x1"]);
    await within(toA.settled(), "relay");
    assert.ok(toA.seen.some((m) => answers(m, "x1", toB)), "B answered x1, and A did not take the answer");
  });

  test("a message dropped is noticed at the next one (out of sequence), which is not delivered", async () => {
    const { A, B, toA, toB, ran, echo } = await pair();
    toB.tamper = (m) => (carries(m, "x1") ? [] : [m.bytes]);
    const x1 = call(echo, "x1");
    const x2 = call(echo, "x2");
    const i1 = await placeOf(B, toB, "x1");
    assert.equal(ivOf(toB.seen[i1]!.bytes).counter, i1, "A's counters are its messages' places");
    await refusedWith(B, toA, outOfSequence(i1 + 1, i1 - 1), A);
    await notAnswered(x1, "x1");
    await notAnswered(x2, "x2");
    assert.deepEqual(ran, ["first"]);
  });

  test("two messages swapped are refused at the first out of turn (out of sequence)", async () => {
    const { A, B, toA, toB, ran, echo } = await pair();
    let held: Uint8Array | undefined;
    toB.tamper = (m) => {
      if (carries(m, "x1")) return ((held = m.bytes), []);
      if (carries(m, "x2")) return [m.bytes, held!];
      return [m.bytes];
    };
    const x1 = call(echo, "x1");
    const x2 = call(echo, "x2");
    const i1 = await placeOf(B, toB, "x1");
    await refusedWith(B, toA, outOfSequence(i1 + 1, i1 - 1), A);
    await notAnswered(x1, "x1");
    await notAnswered(x2, "x2");
    assert.deepEqual(ran, ["first"]);
  });

  test("a message with a bit flipped is refused (failed authentication), as before, and now the refusing side's goaway goes out too", async () => {
    const { A, B, toA, toB, ran, echo } = await pair();
    toB.tamper = (m) => {
      if (!carries(m, "x1")) return [m.bytes];
      const bad = m.bytes.slice();
      bad[bad.length - 1]! ^= 1;
      return [bad];
    };
    const x1 = call(echo, "x1");
    const x2 = call(echo, "x2");
    await refusedWith(B, toA, "sealed message failed authentication (a different key, or an altered message)", A);
    await notAnswered(x1, "x1");
    await notAnswered(x2, "x2");
    assert.deepEqual(ran, ["first"]);
  });

  for (const [back, text] of [
    [1023, (_: number, __: number) => REPLAYED],
    [1024, outOfSequence],
  ] as const) {
    test(`a message replayed after ${back} more: ${back === 1023 ? "at the window's edge, replayed" : "beyond the window, out of sequence"}`, async () => {
      const { A, B, toA, toB, ran, echo } = await pair();
      for (let i = 0; i < 11; i++) await Promise.all(Array.from({ length: 100 }, (_, j) => call(echo, `n${i * 100 + j}`)));
      await within(toB.settled(), "relay");
      const last = toB.seen.length - 1;
      const early = toB.seen[last - back]!;
      assert.equal(ivOf(early.bytes).counter, last - back);
      toB.tamper = (m) => (carries(m, "x1") ? [early.bytes, m.bytes] : [m.bytes]);
      const x1 = call(echo, "x1");
      await refusedWith(B, toA, text(last - back, last), A);
      await notAnswered(x1, "x1");
      assert.equal(ran.length, 1101);
      assert.ok(!ran.includes("x1"));
    });
  }

  test("the IVs: one salt per sink, counters from 0 in the order sent, 300 calls at once", async () => {
    const { A, B, toA, toB, ran, echo } = await pair();
    const tags = Array.from({ length: 300 }, (_, i) => `c${i}`);
    assert.deepEqual(await Promise.all(tags.map((t) => call(echo, t))), tags);
    await within(toB.settled(), "relay");
    for (const dir of [toA, toB]) {
      const ivs = dir.seen.map((m) => ivOf(m.bytes));
      assert.equal(new Set(ivs.map((iv) => iv.salt)).size, 1);
      assert.deepEqual(
        ivs.map((iv) => iv.counter),
        ivs.map((_, i) => i),
      );
    }
    assert.notEqual(ivOf(toA.seen[0]!.bytes).salt, ivOf(toB.seen[0]!.bytes).salt);
    assert.deepEqual(
      toB.frames().filter((f) => f["op"] === "call" && String(f["args"]).startsWith("c")).map((f) => f["args"]),
      tags,
    );
    assert.equal(ran.length, 301);
    A.close();
    await within(B.closed, "B's close");
    assertClean(A);
    assertClean(B);
  });
});

describe("the sealed pipe between a web client and bunite-rpc interop-server --key, a man in the middle", () => {
  let server: Server;
  before(async () => {
    server = await start(["interop-server", "--key", KEY]);
  });
  after(async () => {
    await server.stop();
  });

  /** The web client A, through a relay, to the Rust server. */
  async function toServer() {
    const key = keyFromHex(KEY);
    const [a, ra] = memoryPair();
    const ws = await openWebSocket(server.urls[0]!);
    const { toA, toB } = relay(await importKey(key), ra, ws);
    const A = new Connection(sealed(a, key), { origin: "bunite-rpc sealed pipe test" });
    const counter = await A.bootstrap(InteropCounter);
    assert.equal(await counter.echo("first"), "first");
    return { A, toA, toB, counter };
  }

  /** The Rust server refused with `text`: its goaway, the web client's close on it. */
  async function serverRefused(A: Connection, toA: Direction, text: string): Promise<void> {
    assert.equal(await within(A.closed, "the web client's close"), "invalid_argument");
    await within(toA.settled(), "relay");
    assert.deepEqual(toA.goaway(), { op: "goaway", reason: "invalid_argument", error: { code: "invalid_argument", message: text } });
    assertClean(A);
  }

  test("the web client's message dropped: the Rust pipe refuses the next (out of sequence); neither call answered", async () => {
    const { A, toA, toB, counter } = await toServer();
    toB.tamper = (m) => (carries(m, "x1") ? [] : [m.bytes]);
    const x1 = later(counter.echo("x1"));
    const x2 = later(counter.echo("x2"));
    const i1 = await placeOf(A, toB, "x1");
    await serverRefused(A, toA, outOfSequence(i1 + 1, i1 - 1));
    await notAnswered(x1, "x1");
    await notAnswered(x2, "x2");
    assert.ok(!toA.seen.some((m) => answers(m, "x1", toB) || answers(m, "x2", toB)), "the server answered a refused call");
  });

  test("the web client's messages swapped: the Rust pipe refuses the first out of turn (out of sequence)", async () => {
    const { A, toA, toB, counter } = await toServer();
    let held: Uint8Array | undefined;
    toB.tamper = (m) => {
      if (carries(m, "x1")) return ((held = m.bytes), []);
      if (carries(m, "x2")) return [m.bytes, held!];
      return [m.bytes];
    };
    const x1 = later(counter.echo("x1"));
    const x2 = later(counter.echo("x2"));
    const i1 = await placeOf(A, toB, "x1");
    await serverRefused(A, toA, outOfSequence(i1 + 1, i1 - 1));
    await notAnswered(x1, "x1");
    await notAnswered(x2, "x2");
    assert.ok(!toA.seen.some((m) => answers(m, "x1", toB) || answers(m, "x2", toB)), "the server answered a refused call");
  });

  test("the web client's IVs are numbered as the Rust pipe's: 300 calls at once, all answered, counters in the order sent", async () => {
    const { A, toA, toB, counter } = await toServer();
    const tags = Array.from({ length: 300 }, (_, i) => `c${i}`);
    assert.deepEqual(await Promise.all(tags.map((t) => counter.echo(t))), tags);
    await within(toB.settled(), "relay");
    const ivs = toB.seen.map((m) => ivOf(m.bytes));
    assert.equal(new Set(ivs.map((iv) => iv.salt)).size, 1);
    assert.deepEqual(
      ivs.map((iv) => iv.counter),
      ivs.map((_, i) => i),
    );
    assert.equal(toA.goaway(), undefined);
    A.close();
    await within(A.closed, "close");
    assertClean(A);
  });

  test("the server's message delivered twice: the web client refuses it (replayed), the answer after it is not delivered, and its goaway reaches the server", async () => {
    const { A, toA, toB, counter } = await toServer();
    toA.tamper = (m) => (answers(m, "x1", toB) ? [m.bytes, m.bytes] : [m.bytes]);
    const x1 = later(counter.echo("x1"));
    assert.equal(await within(x1, "x1"), "x1");
    const x2 = later(counter.echo("x2"));
    await refusedWith(A, toB, REPLAYED);
    await notAnswered(x2, "x2");
  });

  test("the web client's own message sent back to it: refused (reflected), the server's answer after it not delivered", async () => {
    const { A, toA, toB, counter } = await toServer();
    toB.tamper = (m) => {
      if (carries(m, "x1")) toA.inject(m.bytes);
      return [m.bytes];
    };
    const x1 = later(counter.echo("x1"));
    await refusedWith(A, toB, REFLECTED);
    await notAnswered(x1, "x1");
  });

  test("the server's message dropped: the web client refuses the next (out of sequence), and neither answer is delivered", async () => {
    const { A, toA, toB, counter } = await toServer();
    toA.tamper = (m) => (answers(m, "x1", toB) ? [] : [m.bytes]);
    const x1 = later(counter.echo("x1"));
    const x2 = later(counter.echo("x2"));
    await within(A.closed, "the web client's close");
    await within(toA.settled(), "relay");
    const i1 = toA.seen.findIndex((m) => answers(m, "x1", toB));
    assert.ok(i1 > 0, "the server answered x1");
    await refusedWith(A, toB, outOfSequence(i1 + 1, i1 - 1));
    await notAnswered(x1, "x1");
    await notAnswered(x2, "x2");
  });
});
