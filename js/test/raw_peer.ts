// A raw peer for tests: sends values or bytes to a Connection over an in-memory transport
// and collects the frames it receives, so a test can pin the exact frames of a rule.

import assert from "node:assert/strict";

import { Connection, FrameDecoder, FrameEncoder, RpcError, memoryPair, type Transport } from "../src/index.js";

/** A raw peer: sends values or bytes, and collects the frames it receives. */
export function rawPeer(t: Transport) {
  const enc = new FrameEncoder();
  const dec = new FrameDecoder();
  const got: Array<Record<string, any>> = [];
  let closed = false;
  t.start({
    message: (d) => got.push(dec.decode(d) as Record<string, any>),
    protocolError: () => {},
    closed: () => (closed = true),
  });
  return {
    got,
    isClosed: () => closed,
    /** Sends `v`; the length of its message (what a stream value is charged besides `VALUE_KEPT`). */
    send: (v: unknown): number => {
      const bytes = enc.encode(v);
      t.send(bytes);
      return bytes.length;
    },
    sendBytes: (b: Uint8Array) => t.send(b),
    hello: (over: Record<string, unknown> = {}) =>
      t.send(enc.encode({ op: "hello", v: 1, mode: "native", features: [], maxBytes: 1 << 20, origin: "raw", ...over })),
  };
}

export const tick = () => new Promise((r) => setTimeout(r, 5));

export function setup() {
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "test" });
  const peer = rawPeer(b);
  return { conn, peer };
}

export async function failsWith(p: Promise<unknown>, code: string, reason?: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof RpcError && e.code === code && (reason === undefined || e.reason === reason));
}

/** `p` rejects with exactly this code, message and `details.reason` (`undefined`: none). */
export async function failsExactly(p: Promise<unknown>, code: string, message: string, reason: string | undefined): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof RpcError, `not an RpcError: ${String(e)}`);
    assert.deepEqual({ code: e.code, message: e.message, reason: e.reason }, { code, message, reason });
    return true;
  });
}

/**
 * Every table of the connection is empty: no call, stream, given-up call, served cap or handler
 * left, and no stream value counted as buffered.
 */
export function assertClean(conn: Connection): void {
  assert.deepEqual(conn.stats(), { pendingCalls: 0, clientStreams: 0, abandonedCalls: 0, servedCaps: 0, activeHandlers: 0, bufferedStreamBytes: 0 });
}
