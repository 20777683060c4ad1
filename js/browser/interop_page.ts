// The browser side of interop.test.ts: loaded into a page served from http://127.0.0.1 (a
// secure context, so the sealed pipe has WebCrypto), it connects the web client to the
// interop server and runs the checks of ../test/interop_checks.ts one at a time, asserting
// with ../test/portable_assert.ts, and hands each outcome back to the Node test.

import type { Connection } from "../src/index.js";
import { interopChecks, openInterop, type Mode, type Sent } from "../test/interop_checks.js";
import { portableAssert } from "../test/portable_assert.js";

/** One check's outcome, as the Node test receives it. */
export interface Outcome {
  ok: boolean;
  /** Why it failed: the error's name and message. */
  message?: string;
  ms: number;
}

const checks = interopChecks(portableAssert);
let state: { conn: Connection; sent: Sent } | undefined;

/** Connects to the interop server at `url`; fails outside a secure context (no `crypto.subtle`). */
export async function open(url: string, mode: Mode): Promise<void> {
  if (!globalThis.isSecureContext) throw new Error(`${location.origin} is not a secure context: the sealed pipe needs crypto.subtle`);
  const sent: Sent = [];
  state = { conn: await openInterop(url, mode, sent), sent };
}

/** Runs the check called `name` on the open connection. */
export async function run(name: string): Promise<Outcome> {
  const t0 = performance.now();
  const outcome = (ok: boolean, message?: string): Outcome => ({ ok, ...(message === undefined ? {} : { message }), ms: Math.round(performance.now() - t0) });
  const check = checks.find((c) => c.name === name);
  if (check === undefined) return outcome(false, `no check called ${name}`);
  if (state === undefined) return outcome(false, "not connected: open() first");
  try {
    await check.run(state);
    return outcome(true);
  } catch (e) {
    return outcome(false, e instanceof Error ? `${e.name}: ${e.message}` : String(e));
  }
}

/** Closes the connection and waits until it is closed. */
export async function close(): Promise<void> {
  const conn = state?.conn;
  state = undefined;
  conn?.close();
  await conn?.closed;
}
