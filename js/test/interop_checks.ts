// Every check of ../shared/spec/INTEROP.md, as the web client runs it against
// `bunite-rpc interop-server` over WebSocket, plain or inside the sealed pipe. One copy runs
// in two places: from Node (interop.test.ts, with `node:assert/strict`) and inside headless
// Chromium (../browser/interop.test.ts loads this module into a page, with
// portable_assert.ts), so this module imports nothing of Node. The calls go through the
// generated definitions (src/interop.gen.ts), so they are typed end to end; the checks that
// must call what the definitions do not have use the untyped escape hatches.

import {
  Connection,
  FrameDecoder,
  RpcError,
  callMethod,
  capId,
  dispose,
  keyFromHex,
  openWebSocket,
  sealed,
  type Transport,
} from "../src/index.js";
import { InteropChild, InteropCounter, InteropEphemeral, InteropSecret, InteropVersioned, type InteropPeer } from "../src/interop.gen.js";

/** What the checks assert with: `node:assert/strict` in Node, `portableAssert` (portable_assert.ts) in a browser. */
export interface Assert {
  equal(actual: unknown, expected: unknown, message?: string): void;
  deepEqual(actual: unknown, expected: unknown, message?: string): void;
  ok(value: unknown, message?: string): asserts value;
  fail(message?: string): never;
}

/** The key of the sealed runs (`interop-server --key KEY`). */
export const KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

export type Mode = "plain" | "sealed";

/** Every frame the client sent, decoded. */
export type Sent = Array<Record<string, unknown>>;

/** What a check runs against: the connection, and the frames sent on it so far. */
export interface CheckEnv {
  conn: Connection;
  sent: Sent;
}

export interface Check {
  /** The name in INTEROP.md's table (and the one last check of the tables). */
  name: string;
  run(env: CheckEnv): void | Promise<void>;
}

/** A transport that decodes (in step with our encoder) every frame we send, to see the ops. */
function spy(inner: Transport, sent: Sent): Transport {
  const mirror = new FrameDecoder();
  return {
    start: (e) => inner.start(e),
    send(data) {
      sent.push(mirror.decode(data) as Record<string, unknown>);
      inner.send(data);
    },
    close: () => inner.close(),
  };
}

/** Connects to the interop server at `url` (`ws://…`), serving `interop.peer`, recording into `sent`. */
export async function openInterop(url: string, mode: Mode, sent: Sent): Promise<Connection> {
  const ws = await openWebSocket(url);
  const transport = spy(mode === "sealed" ? sealed(ws, keyFromHex(KEY)) : ws, sent);
  const peer: Record<keyof InteropPeer, () => string> = { ping: () => "pong from client" };
  return new Connection(transport, {
    origin: "bunite-rpc web client test",
    serve: [{ def: { name: "interop.peer", methods: { ping: { kind: "call", args: "none" } } }, impl: peer }],
  });
}

export const richValue = () => {
  const shape = (x: number) => ({ x, y: "same shape" });
  return {
    ints: [63, 64, 127, 128, 4294967295, -1, -32, -33, -128, -129, -32769, -2147483648],
    float: 3.25,
    unicode: "héllo ☃ 😀 日本",
    nested: { a: { b: { c: [1, {}] } } },
    empty: {},
    twins: [shape(1), shape(2)],
    bin: Uint8Array.from({ length: 256 }, (_, i) => i),
    long: "x".repeat(300),
    null: null,
  };
};

const check = (name: string, run: Check["run"]): Check => ({ name, run });

/** The checks, in INTEROP.md's order, asserting with `assert`; run them in this order, once each, on one connection. */
export function interopChecks(assert: Assert): Check[] {
  async function expectError(p: Promise<unknown>, code: string, reason?: string): Promise<RpcError> {
    try {
      const v = await p;
      assert.fail(`expected ${code}, got ${JSON.stringify(v)}`);
    } catch (e) {
      assert.ok(e instanceof RpcError, `expected an RpcError, got ${String(e)}`);
      assert.equal(e.code, code, e.message);
      if (reason !== undefined) assert.equal(e.reason, reason, e.message);
      return e;
    }
  }

  async function until(f: () => Promise<boolean>): Promise<void> {
    for (let i = 0; i < 200; i++) {
      if (await f()) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.fail("condition never held");
  }

  return [
    check("bootstrap-and-calls", async ({ conn, sent }) => {
      const c = await conn.bootstrap(InteropCounter);
      assert.equal((await c.increment({ delta: 5 })).count, 5);
      assert.equal((await c.increment({ delta: 1 })).count, 6);
      assert.equal((await c.increment()).count, 7);
      assert.equal((await c.get()).count, 7);
      // A method without params takes the options as its one argument.
      assert.equal((await c.get({ context: { who: "test" }, deadlineMs: 5000 })).count, 7);
      const last = sent.filter((f) => f["op"] === "call" && f["method"] === "get").at(-1)!;
      assert.equal(last["args"], undefined);
      assert.deepEqual(last["meta"], { deadlineMs: 5000, context: { who: "test" } });
    }),

    check("echo-codec", async ({ conn }) => {
      const c = await conn.bootstrap(InteropCounter);
      const v = richValue();
      assert.deepEqual(await c.echo(v), v);
    }),

    check("errors", async ({ conn }) => {
      const c = await conn.bootstrap(InteropCounter);
      const e = await expectError(c.fail({ code: "failed_precondition", message: "nope", reason: "unauthorized" }), "failed_precondition", "unauthorized");
      assert.equal(e.message, "nope");
      assert.equal((await expectError(c.boom(), "internal")).message, "boom");
    }),

    check("unknown-method", async ({ conn }) => {
      const c = await conn.bootstrap(InteropCounter);
      await expectError(callMethod(c, "noSuchMethod"), "not_found");
    }),

    check("unknown-cap", async ({ conn }) => {
      await expectError(conn.bootstrap({ name: "interop.missing", methods: {} }), "not_found");
    }),

    check("versions", async ({ conn }) => {
      await expectError(conn.bootstrap({ ...InteropVersioned, version: "1" }), "failed_precondition", "version_mismatch");
      for (const def of [InteropVersioned, { name: InteropVersioned.name, methods: InteropVersioned.methods }]) {
        const v = await conn.bootstrap(def);
        assert.equal(await v.v(), "2");
      }
    }),

    check("policy", async ({ conn }) => {
      await expectError(conn.bootstrap(InteropSecret), "failed_precondition", "unauthorized");
    }),

    check("runtime-absent", async ({ conn }) => {
      const runtime = conn.clientFor(1, { name: "bunite.Runtime", methods: { appName: { kind: "call", args: "none" } } });
      await expectError(callMethod(runtime, "appName"), "not_found");
    }),

    check("sub-cap-dispose", async ({ conn, sent }) => {
      const c = await conn.bootstrap(InteropCounter);
      const closed0 = await c.closedCount();
      const live0 = await c.liveChildren();
      const child = await c.makeChild({ name: "kid" });
      assert.equal(await child.ping({ x: 41 }), 42);
      assert.equal(await c.liveChildren(), live0 + 1);
      const id = capId(child);
      await dispose(child);
      assert.equal(await c.closedCount(), closed0 + 1);
      await until(async () => (await c.liveChildren()) === live0);
      await expectError(conn.clientFor(id, InteropChild).ping({ x: 1 }), "not_found");
      const drops = sent.filter((f) => f["op"] === "drop" && JSON.stringify(f["caps"]) === JSON.stringify([{ id, delta: 1 }]));
      assert.equal(drops.length, 1, "one drop of the child");
    }),

    check("cap-array-and-record", async ({ conn }) => {
      const c = await conn.bootstrap(InteropCounter);
      const kids = await c.children({ names: ["a", "b", "c"] });
      assert.deepEqual(await Promise.all(kids.map((k) => k.name())), ["a", "b", "c"]);
      const map = await c.childMap({ names: ["a", "b", "c"] });
      assert.deepEqual(Object.keys(map), ["a", "b", "c"]);
      for (const [k, kid] of Object.entries(map)) assert.equal(await kid.name(), k);
      await Promise.all([...kids, ...Object.values(map)].map(dispose));
    }),

    check("stream-credit", async ({ conn, sent }) => {
      const c = await conn.bootstrap(InteropCounter);
      const got: number[] = [];
      for await (const t of c.ticks({ n: 100 })) got.push(t.i);
      assert.deepEqual(got, Array.from({ length: 100 }, (_, i) => i));
      const credits = sent.filter((f) => f["op"] === "stream" && f["ev"] === "credit");
      assert.ok(credits.length >= 8, `credit returned ${credits.length} times`);
    }),

    check("stream-cancel", async ({ conn, sent }) => {
      const c = await conn.bootstrap(InteropCounter);
      const before = await c.cancelledWatches();
      const watch = c.watch({ everyMs: 5 });
      let n = 0;
      for await (const v of watch) {
        assert.equal(typeof v.count, "number");
        if (++n === 3) break; // breaking out cancels
      }
      assert.ok(sent.some((f) => f["op"] === "cancel" && f["id"] === watch.id && f["reason"] === "client_cancel"));
      await until(async () => (await c.cancelledWatches()) > before);
    }),

    check("cancel-call", async ({ conn }) => {
      const c = await conn.bootstrap(InteropCounter);
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 50);
      const t0 = Date.now();
      await expectError(c.slow({ ms: 5000 }, { signal: ac.signal }), "cancelled");
      assert.ok(Date.now() - t0 < 2500, `took ${Date.now() - t0} ms`);
    }),

    check("deadline-server", async ({ conn }) => {
      const c = await conn.bootstrap(InteropCounter);
      const t0 = Date.now();
      assert.equal(await c.slow({ ms: 5000 }, { deadlineMs: 100 }), "aborted");
      const took = Date.now() - t0;
      assert.ok(took >= 90 && took < 2500, `took ${took} ms`);
    }),

    check("deadline-client", async ({ conn, sent }) => {
      const c = await conn.bootstrap(InteropCounter);
      const t0 = Date.now();
      await expectError(c.slow({ ms: 5000, ignoreAbort: true }, { deadlineMs: 100 }), "deadline_exceeded");
      const took = Date.now() - t0;
      assert.ok(took >= 590 && took < 3000, `took ${took} ms`);
      assert.ok(sent.some((f) => f["op"] === "cancel" && f["reason"] === "deadline_exceeded"), "the client sent cancel");
    }),

    check("revocation", async ({ conn, sent }) => {
      const e = await conn.bootstrap(InteropEphemeral);
      assert.equal(await e.ping(), "pong");
      await e.unserveMe();
      await until(async () => {
        try {
          await e.ping();
          return false;
        } catch (err) {
          assert.ok(err instanceof RpcError && err.code === "failed_precondition" && err.reason === "revoked", String(err));
          return true;
        }
      });
      const before = sent.length;
      await expectError(e.ping(), "failed_precondition", "revoked");
      assert.equal(sent.length, before, "a call on a revoked cap fails locally, sending nothing");
      await expectError(conn.bootstrap(InteropEphemeral), "not_found");
    }),

    check("bidirectional", async ({ conn }) => {
      const c = await conn.bootstrap(InteropCounter);
      assert.equal(await c.askPeer(), "pong from client");
    }),

    check("concurrency", async ({ conn }) => {
      const c = await conn.bootstrap(InteropCounter);
      const before = (await c.get()).count;
      await Promise.all(Array.from({ length: 1000 }, () => c.increment()));
      assert.equal((await c.get()).count, before + 1000);
    }),

    check("large-payload", async ({ conn }) => {
      const c = await conn.bootstrap(InteropCounter);
      const n = 8 * 1024 * 1024;
      const b = await c.bytes({ n });
      assert.ok(b instanceof Uint8Array);
      assert.equal(b.length, n);
      for (let k = 0; k < n; k++) if (b[k] !== k % 256) assert.fail(`byte ${k} is ${b[k]}`);
    }),

    check("no calls or streams left pending", ({ conn }) => {
      const s = conn.stats();
      assert.equal(s.pendingCalls, 0);
      assert.equal(s.clientStreams, 0);
      assert.equal(s.abandonedCalls, 0);
      assert.equal(s.activeHandlers, 0);
      assert.equal(s.bufferedStreamBytes, 0);
    }),
  ];
}
