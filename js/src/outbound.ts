// Our calls and streams on the peer's caps (PROTOCOL §7, §10–12): the pending results, the
// client streams, their deadlines and cancellation, the calls we gave up on, the revoked ids,
// and the in-flight limit over all of them. It decides and sends through its connection
// (`OutboundWire`); the connection hands it the peer's results, stream frames and revocations.

import { CapRef } from "./codec.js";
import * as F from "./frames.js";
import type { Frame } from "./frames.js";
import type { Limits } from "./limits.js";
import { ClientStream, StreamBytes, StreamHandle } from "./stream.js";
import { RpcError, rpcError, statusFrom } from "./status.js";
import { timeout } from "./timer.js";
import type { CallOptions, StreamOptions, ValueStream } from "./types.js";

/** The client deadline grace (PROTOCOL §5). */
const DEADLINE_GRACE_MS = 500;
/** Revoked ids remembered (PROTOCOL §13.7). */
const MAX_REVOKED = 4096;
/** The `decode` of a call whose result holds no caps of ours (PROTOCOL §7: only bootstraps and cap-returning methods do). */
export const passThrough = (v: unknown): unknown => v;

/** What the outbound calls need of their connection: its state and its way out. */
export interface OutboundWire {
  readonly isClosed: boolean;
  /** Sends a frame (nothing after shutdown). */
  send(frame: Frame): void;
  /** Sends `frame` if it fits the peer's maxBytes; false (nothing sent) if it does not. */
  sendBounded(frame: Frame, payload: unknown): boolean;
  /** The peer's maxBytes (ours until its hello arrives). */
  peerMaxBytes(): number;
}

interface Pending {
  capId: number;
  parentCallId: number | undefined;
  resolve(v: unknown): void;
  reject(e: RpcError): void;
  decode(v: unknown): unknown;
  cleanup(): void;
}

export class Outbound {
  private readonly pending = new Map<number, Pending>();
  private readonly streams = new Map<number, ClientStream<unknown>>();
  /** What the unread values of our client streams keep (`maxBufferedStreamBytes`). */
  private readonly streamBytes: StreamBytes;
  private readonly revoked = new Set<number>();
  private readonly revokedOrder: number[] = [];
  /**
   * Ids of cap-returning calls we gave up on whose result has not arrived: a result that raced our
   * `cancel` may carry caps, which are ours to release (PROTOCOL §7: each received
   * reference is released exactly once). Each keeps its in-flight slot until its result
   * arrives, as the Rust client does, so none is ever forgotten and `maxInFlightCalls` bounds them.
   */
  private readonly abandoned = new Set<number>();
  private nextId = 1;

  constructor(
    private readonly wire: OutboundWire,
    private readonly limits: Limits,
  ) {
    this.streamBytes = new StreamBytes(limits.maxBufferedStreamBytes);
  }

  stats(): { pendingCalls: number; clientStreams: number; abandonedCalls: number; bufferedStreamBytes: number } {
    const open = { pendingCalls: this.pending.size, clientStreams: this.streams.size, abandonedCalls: this.abandoned.size };
    return { ...open, bufferedStreamBytes: this.streamBytes.used };
  }

  /** Calls `method` on the peer's cap `capId`; `decode` turns the result value into the reply. */
  call(capId: number, method: string, args: unknown, options: CallOptions, decode: (v: unknown) => unknown): Promise<unknown> {
    const refused = this.refuse(capId);
    if (refused) return Promise.reject(refused);
    if (options.signal?.aborted) return Promise.reject(rpcError("cancelled", "cancelled before it was sent"));
    const id = this.nextId++;
    const frame = F.call(id, capId, method, args, meta(options));
    return new Promise((resolve, reject) => {
      let stopTimer: (() => void) | undefined;
      const abort = () => this.cancelCall(id, "client_cancel", rpcError("cancelled", "cancelled by the client"));
      const entry: Pending = {
        capId,
        parentCallId: options.parentCallId,
        resolve,
        reject,
        decode,
        cleanup: () => {
          stopTimer?.();
          options.signal?.removeEventListener("abort", abort);
        },
      };
      if (!this.wire.sendBounded(frame, args)) {
        return reject(rpcError("resource_exhausted", `call exceeds the peer's maxBytes ${this.wire.peerMaxBytes()}`, "max_frame_bytes"));
      }
      this.pending.set(id, entry);
      options.signal?.addEventListener("abort", abort, { once: true });
      const d = options.deadlineMs;
      if (d !== undefined && d > 0) {
        stopTimer = timeout(
          () => this.cancelCall(id, "deadline_exceeded", rpcError("deadline_exceeded", `deadline of ${d} ms exceeded`)),
          d + DEADLINE_GRACE_MS,
        );
      }
    });
  }

  /** Opens the server stream `method` on the peer's cap `capId`. */
  stream<T>(capId: number, method: string, args: unknown, options: StreamOptions): ValueStream<T> {
    const refused = this.refuse(capId) ?? (options.signal?.aborted ? rpcError("cancelled", "cancelled before it was sent") : undefined);
    const id = refused ? 0 : this.nextId++;
    const { signal } = options;
    // The signal's listener goes once the consumer is through with the stream (`settled`), as
    // a call's goes with its answer: a signal shared by many streams kept one listener, and
    // its stream, for each of them.
    const abort = () => s.cancel(rpcError("cancelled", "cancelled by the client"));
    const s: ClientStream<T> = new ClientStream<T>(id, capId, {
      credit: (n) => this.wire.send(F.credit(id, n)),
      cancel: () => {
        if (this.streams.delete(id)) this.wire.send(F.cancel(id, "client_cancel"));
      },
      done: () => this.streams.delete(id),
      settled: () => signal?.removeEventListener("abort", abort),
    }, this.streamBytes, options.parentCallId);
    const handle = new StreamHandle(s);
    if (refused) {
      s.fail(refused);
      return handle;
    }
    if (!this.wire.sendBounded(F.call(id, capId, method, args, meta(options)), args)) {
      s.fail(rpcError("resource_exhausted", `stream call exceeds the peer's maxBytes ${this.wire.peerMaxBytes()}`, "max_frame_bytes"));
      return handle;
    }
    this.streams.set(id, s as ClientStream<unknown>);
    signal?.addEventListener("abort", abort, { once: true });
    return handle;
  }

  /** The peer's `result` for `id`; `messageLen` is what a peer's error on a stream is charged. */
  onResult(id: number, ok: boolean, value: unknown, messageLen: number): void {
    const p = this.pending.get(id);
    if (p !== undefined) {
      this.pending.delete(id);
      p.cleanup();
      if (!ok) return p.reject(new RpcError(statusFrom(value)));
      try {
        p.resolve(p.decode(value));
      } catch (e) {
        p.reject(e instanceof RpcError ? e : rpcError("internal", String(e)));
      }
      return;
    }
    const s = this.streams.get(id);
    if (s !== undefined) {
      this.streams.delete(id);
      if (ok) s.fail(rpcError("invalid_argument", "stream method returned result frame"));
      else s.fail(new RpcError(statusFrom(value)), messageLen);
      return;
    }
    // The answer to a call we gave up on: nobody adopts its caps, so release them.
    if (this.abandoned.delete(id) && ok) releaseRefs(this.wire, value);
    // Any other result for an unknown id is ignored.
  }

  /** A `stream` frame (but credit) of one of our streams; `messageLen` is what its value or error is charged. */
  onStreamFrame(f: Extract<Frame, { op: "stream" }>, messageLen: number): void {
    const s = this.streams.get(f.id);
    if (s === undefined) return;
    if (f.ev === "next") {
      const overflow = s.push(f.value, messageLen);
      if (overflow !== undefined) {
        this.streams.delete(f.id);
        this.wire.send(F.cancel(f.id, overflow));
      }
    } else if (f.ev === "end") {
      this.streams.delete(f.id);
      s.end();
    } else if (f.ev === "error") {
      this.streams.delete(f.id);
      s.fail(new RpcError(statusFrom(f.error)), messageLen);
    }
  }

  onRevoked(capIds: number[]): void {
    // Ids 0 and 1 are no caps (PROTOCOL §7), as the Rust client's `on_revoked` reads them:
    // revoking 0 would fail every later bootstrap locally, 1 every call to the runtime.
    const ids = capIds.filter((id) => id > 1);
    for (const id of ids) {
      if (!this.revoked.has(id)) {
        this.revoked.add(id);
        this.revokedOrder.push(id);
        if (this.revokedOrder.length > MAX_REVOKED) this.revoked.delete(this.revokedOrder.shift()!);
      }
    }
    const set = new Set(ids);
    for (const [id, p] of [...this.pending]) {
      if (set.has(p.capId)) {
        this.pending.delete(id);
        p.cleanup();
        p.reject(revokedError());
      }
    }
    for (const [id, s] of [...this.streams]) {
      if (set.has(s.capId)) {
        this.streams.delete(id);
        s.fail(revokedError());
      }
    }
  }

  /**
   * Cancels our calls, bootstraps and streams made from inside the handler of the peer's call
   * `parent`, each with `cancel` carrying the same reason (§11; none if it had none).
   */
  cancelChildren(parent: number, reason: string | undefined): void {
    const error = () => rpcError("cancelled", reason ?? "cancelled");
    for (const [id, p] of [...this.pending]) {
      if (p.parentCallId === parent) this.cancelCall(id, reason, error());
    }
    for (const [id, s] of [...this.streams]) {
      if (s.parentCallId !== parent) continue;
      this.streams.delete(id);
      this.wire.send(F.cancel(id, reason));
      s.fail(error());
    }
  }

  /** Shutdown: every pending call and stream fails with `err`; the calls we gave up on are forgotten. */
  shutdown(err: RpcError): void {
    for (const p of this.pending.values()) {
      p.cleanup();
      p.reject(err);
    }
    this.pending.clear();
    this.abandoned.clear();
    for (const s of this.streams.values()) s.fail(err);
    this.streams.clear();
  }

  /** Fails call `id` locally with `error` and tells the peer (`cancel {reason}`). */
  private cancelCall(id: number, reason: string | undefined, error: RpcError): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    p.cleanup();
    // Only a bootstrap's or a cap-returning method's result holds caps of ours (§7).
    if (p.decode !== passThrough) this.abandoned.add(id);
    this.wire.send(F.cancel(id, reason));
    p.reject(error);
  }

  /** Why a call on `capId` must fail locally, if it must. */
  private refuse(capId: number): RpcError | undefined {
    if (this.wire.isClosed) return rpcError("unavailable", "connection closed");
    if (this.revoked.has(capId)) return revokedError();
    const n = this.pending.size + this.streams.size + this.abandoned.size;
    if (n >= this.limits.maxInFlightCalls) {
      return rpcError("resource_exhausted", `in-flight calls limit ${this.limits.maxInFlightCalls}`, "max_concurrent_calls");
    }
    return undefined;
  }
}

/**
 * Releases the CapRefs of a result nobody takes, in one `drop` (none for ids 0 and 1, PROTOCOL
 * §7): every one anywhere in it, as the Rust client's `Payload::cap_refs`, not only its top
 * level (a cap nested in the wrong container was kept by the peer for the connection's life).
 */
export function releaseRefs(wire: { send(frame: Frame): void }, value: unknown): void {
  const ids = capRefsIn(value, [])
    .filter((r) => r.id > 1)
    .map((r) => ({ id: r.id, delta: 1 }));
  if (ids.length > 0) wire.send(F.drop(ids));
}

/** Every CapRef in `v`, in order: in arrays, records, Maps (keys and values) and Sets. Recursion within the decoder's depth limit. */
function capRefsIn(v: unknown, out: CapRef[]): CapRef[] {
  if (v instanceof CapRef) out.push(v);
  else if (Array.isArray(v)) for (const x of v) capRefsIn(x, out);
  else if (v instanceof Map) for (const [k, x] of v) capRefsIn(x, capRefsIn(k, out));
  else if (v instanceof Set) for (const x of v) capRefsIn(x, out);
  else if (isPlainRecord(v)) for (const x of Object.values(v)) capRefsIn(x, out);
  return out;
}

/** Where a result carries caps (PROTOCOL §7): an array's items, a record's values, or the value itself. */
export function capSlots(v: unknown): unknown[] {
  return Array.isArray(v) ? v : isPlainRecord(v) ? Object.values(v) : [v];
}

export function isPlainRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Map) && !ArrayBuffer.isView(v) && !(v instanceof CapRef);
}

function revokedError(): RpcError {
  return rpcError("failed_precondition", "cap revoked", "revoked");
}

function meta(o: CallOptions | StreamOptions): F.CallMeta | undefined {
  const m: F.CallMeta = {};
  if (o.parentCallId !== undefined) m.parentCallId = o.parentCallId;
  if ("deadlineMs" in o && o.deadlineMs !== undefined && o.deadlineMs > 0) m.deadlineMs = o.deadlineMs;
  if (o.context !== undefined) m.context = o.context;
  return Object.keys(m).length > 0 ? m : undefined;
}
