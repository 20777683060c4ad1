// The peer's calls to the caps this peer serves (PROTOCOL §8–12): bootstrap, dispatch of a
// call to its handler, server streams with credit, the peer's cancel, deadlines, the calls
// running on a cap that is unserved, and stopping every handler at shutdown. What is served
// is `registry.ts`'s and `cap_table.ts`'s; this module runs the handlers and answers.

import type { CapTable, Entry } from "./cap_table.js";
import { CapRef } from "./codec.js";
import * as F from "./frames.js";
import type { Frame } from "./frames.js";
import { clipPeerText, utf8Length } from "./peer_text.js";
import type { Registry } from "./registry.js";
import type { CallContext, Policy, ServingWire } from "./serving.js";
import { RpcError, rpcError, toStatus, type Status } from "./status.js";
import { timeout } from "./timer.js";
import type { CapDef, MethodDef } from "./types.js";

interface Active {
  /** The cap the call targets (unserving it stops a stream on it, §12). */
  capId: number;
  /** Its cap was unserved while it ran: the client failed the call on `cap_revoked`. */
  targetRevoked: boolean;
  ctrl: AbortController;
  exported: number[];
  /** Stops the deadline timer, if one is armed. */
  timer: (() => void) | undefined;
  stream: { credit: number; wake: (() => void) | undefined; iter: AsyncIterator<unknown> | Iterator<unknown> | undefined } | undefined;
}

type CallFrame = Extract<Frame, { op: "call" }>;

/** What a call to one of our caps runs: the cap's entry, the method's definition and its handler. */
interface Target {
  entry: Entry;
  method: MethodDef;
  handler: (args: unknown, ctx: CallContext) => unknown;
}

const MAX_INITIAL_CREDIT = 1024;
/**
 * The most credit a served stream's window holds, as the Rust peer's `MAX_WINDOW`. A larger
 * window let one credit frame make a source that never ends send in one chain of microtasks,
 * never yielding to the event loop (the memory transport's and a WebSocket's sends never wait).
 */
const MAX_WINDOW = MAX_INITIAL_CREDIT;
const MIN_INITIAL_CREDIT = 8;
const DEFAULT_INITIAL_CREDIT = 32;

export class Inbound {
  /** The peer's calls and streams whose handler runs, by call id. */
  private readonly active = new Map<number, Active>();

  constructor(
    private readonly conn: ServingWire,
    /** What each handler's context gives as its connection. */
    private readonly connection: CallContext["connection"],
    private readonly registry: Registry,
    private readonly table: CapTable,
    private readonly policy: Policy | undefined,
  ) {}

  get size(): number {
    return this.active.size;
  }

  /**
   * The peer's `call`: a bootstrap, or a call to one of our caps checked in §9's order (target,
   * method, handler, then the in-flight and context limits), registered and run.
   */
  onCall(f: CallFrame): void {
    if (this.active.has(f.id)) throw new Error(`call id ${f.id} is still running`);
    if (f.target.id === 0) return this.onBootstrap(f);
    const target = this.resolve(f);
    if (target instanceof RpcError) return this.reply(f.id, target);
    const refused = this.admit(f);
    if (refused !== undefined) return this.reply(f.id, refused);
    const a = this.begin(f, target.method);
    const ctx = this.callContext(f, a);
    const run = () => target.handler.call(target.entry.impl, f.args, ctx);
    if (target.method.kind === "stream") void this.runStream(f.id, a, target.method, run);
    else void this.runCall(f.id, a, target.method, run);
  }

  /** A call on cap-id 0: only the method `bootstrap` (§5, §9). */
  private onBootstrap(f: CallFrame): void {
    if (f.method !== "bootstrap") return this.reply(f.id, rpcError("not_found", "cap has no impl"));
    void this.bootstrap(f.id, f.args);
  }

  /** The cap, method and handler a call names, or why it names none (§9, in order). */
  private resolve(f: CallFrame): Target | RpcError {
    const capId = f.target.id;
    const entry = this.table.get(capId);
    if (entry === undefined) return rpcError("not_found", capId === 1 ? "cap has no impl" : `cap-id ${capId} not found`);
    const method = (entry.def.methods as Record<string, MethodDef>)[f.method];
    if (method === undefined || !Object.hasOwn(entry.def.methods, f.method)) {
      return rpcError("not_found", `method "${clipPeerText(f.method)}" on cap "${entry.def.name}"`);
    }
    const handler = Object.hasOwn(entry.impl, f.method) ? entry.impl[f.method] : undefined;
    if (typeof handler !== "function") return rpcError("not_found", `method "${clipPeerText(f.method)}" has no handler`);
    return { entry, method, handler };
  }

  /** Why a call to a known handler may not run now: the in-flight limit, then its `meta.context`'s size. */
  private admit(f: CallFrame): RpcError | undefined {
    const n = this.conn.limits.maxInFlightCalls;
    if (this.active.size >= n) return rpcError("resource_exhausted", `in-flight calls limit ${n}`, "max_concurrent_calls");
    const size = contextBytes(f.meta?.context ?? {});
    const maxContext = this.conn.limits.maxContextBytes;
    if (size > maxContext) {
      return rpcError("invalid_argument", `meta.context of ${size} bytes is over the limit of ${maxContext} bytes (max_context_bytes)`);
    }
    return undefined;
  }

  /** Registers the call as running and arms its deadline, if it has one that applies. */
  private begin(f: CallFrame, m: MethodDef): Active {
    const a: Active = { capId: f.target.id, targetRevoked: false, ctrl: new AbortController(), exported: [], timer: undefined, stream: undefined };
    this.active.set(f.id, a);
    const deadline = f.meta?.deadlineMs;
    // Only call methods that are not idempotent are signalled at the deadline (§11; a
    // stream method never is, as in 0.10.0).
    if (deadline !== undefined && m.kind === "call" && m.idempotent !== true) {
      a.timer = timeout(() => a.ctrl.abort("deadline_exceeded"), deadline);
    }
    return a;
  }

  /** The handler's context: its signal, deadline, `meta.context`, and `exportCap` recording into `a`. */
  private callContext(f: CallFrame, a: Active): CallContext {
    return {
      callId: f.id,
      signal: a.ctrl.signal,
      deadlineMs: f.meta?.deadlineMs,
      context: f.meta?.context ?? {},
      connection: this.connection,
      exportCap: (def, impl) => {
        const id = this.table.allocate({ def, impl, refs: 1, name: undefined });
        a.exported.push(id);
        return new CapRef(id);
      },
    };
  }

  onCredit(id: number, credit: unknown): void {
    const s = this.active.get(id)?.stream;
    const k = (credit as { messages?: unknown } | null)?.messages;
    if (s === undefined || typeof k !== "number" || !(k > 0)) return; // 0 or missing: ignored (§13.2)
    s.credit = Math.min(s.credit + Math.floor(k), MAX_WINDOW);
    const w = s.wake;
    s.wake = undefined;
    w?.();
  }

  /** The peer cancelled `id`: signal the handler, reply `cancelled` at once (§11). */
  onCancel(id: number, peerReason: string | undefined): void {
    const a = this.active.get(id);
    if (a === undefined) return;
    // Echoed in the result and sent on in every child's cancel: cut first (as the Rust peer).
    const reason = peerReason === undefined ? undefined : clipPeerText(peerReason);
    this.finish(id, a);
    a.ctrl.abort(reason ?? "cancelled");
    if (a.stream !== undefined) {
      a.stream.wake?.();
      this.conn.send(F.end(id));
    } else {
      // The message is the cancel's reason, none if it had none (§11, as 0.10.0).
      this.sendError(id, reason === undefined ? { code: "cancelled" } : { code: "cancelled", message: reason });
    }
    this.conn.cancelChildren(id, reason);
  }

  /** The calls running on the caps `revoked` were failed by the client on `cap_revoked`. */
  markRevoked(revoked: number[]): void {
    for (const a of this.active.values()) if (revoked.includes(a.capId)) a.targetRevoked = true;
  }

  /**
   * The peer ends its streams on the caps `revoked` without a cancel (§12): stop the sources,
   * each with its `end` (sent after the `cap_revoked`), so none waits for credit holding its slot.
   */
  endStreamsOn(revoked: number[]): void {
    for (const [sid, a] of [...this.active]) {
      if (!revoked.includes(a.capId) || a.stream === undefined) continue;
      this.finish(sid, a);
      a.ctrl.abort("cap revoked");
      a.stream.wake?.();
      this.conn.send(F.end(sid));
    }
  }

  /** Shutdown: every handler is signalled and every stream stopped. */
  stop(): void {
    for (const [id, a] of [...this.active]) {
      this.finish(id, a);
      a.ctrl.abort("connection closed");
      a.stream?.wake?.();
    }
  }

  private async bootstrap(id: number, args: unknown): Promise<void> {
    const a = args as { name?: unknown; version?: unknown } | null | undefined;
    if (a === null || typeof a !== "object" || typeof a.name !== "string") {
      return this.reply(id, rpcError("invalid_argument", "bootstrap requires {name: string}"));
    }
    const name = a.name;
    const version = a.version === undefined || a.version === null ? undefined : jsString(a.version);
    const refused = this.registry.checkBootstrap(name, version);
    if (refused !== undefined) return this.reply(id, refused);
    if (this.policy !== undefined) {
      let allowed: boolean;
      try {
        allowed = await this.policy(name);
      } catch {
        return this.reply(id, rpcError("internal", "policy threw"));
      }
      if (!allowed) return this.reply(id, rpcError("failed_precondition", "policy denied", "unauthorized"));
      // The registry may have changed while the policy ran (as the Rust peer, checked again).
      const now = this.registry.checkBootstrap(name, version);
      if (now !== undefined) return this.reply(id, now);
    }
    const served = this.registry.get(name)!;
    let capId: number;
    try {
      capId = this.table.bootstrap(name, served.def, served.impl);
    } catch (e) {
      return this.reply(id, e);
    }
    this.conn.send(F.ok(id, new CapRef(capId)));
  }

  private async runCall(id: number, a: Active, m: MethodDef, run: () => unknown): Promise<void> {
    let value: unknown;
    let failed: Status | undefined;
    try {
      value = await run();
      if (m.kind === "call" && m.returns !== undefined) checkCapReturn(value, m, a.exported, (c) => this.table.get(c)?.def);
    } catch (e) {
      failed = toStatus(e);
    }
    if (this.active.get(id) !== a) {
      // Cancelled (or shut down): the result is suppressed; caps it exported are freed.
      for (const c of a.exported) this.table.free(c);
      return;
    }
    this.finish(id, a);
    if (failed !== undefined) {
      for (const c of a.exported) this.table.free(c);
      return this.sendError(id, failed);
    }
    const sent = this.conn.sendBounded(F.ok(id, value), value);
    // Exports nobody will release: the client already failed the call on `cap_revoked` (as the
    // Rust peer's `target_revoked`).
    if (sent && a.targetRevoked) for (const c of a.exported) this.table.free(c);
    if (!sent) {
      for (const c of a.exported) this.table.free(c);
      const message = `result exceeds the peer's maxBytes ${this.conn.peerMaxBytes()}`;
      this.conn.send(F.fail(id, { code: "resource_exhausted", message, details: { reason: "max_frame_bytes" } }));
    }
  }

  private async runStream(id: number, a: Active, m: MethodDef, run: () => unknown): Promise<void> {
    const initial = m.kind === "stream" ? (m.initialCredit ?? DEFAULT_INITIAL_CREDIT) : DEFAULT_INITIAL_CREDIT;
    const s = (a.stream = { credit: Math.min(MAX_INITIAL_CREDIT, Math.max(MIN_INITIAL_CREDIT, initial)), wake: undefined as (() => void) | undefined, iter: undefined as AsyncIterator<unknown> | Iterator<unknown> | undefined });
    const live = () => this.active.get(id) === a && !a.ctrl.signal.aborted;
    try {
      const source = (await run()) as AsyncIterable<unknown> | Iterable<unknown>;
      const iter = (source as AsyncIterable<unknown>)[Symbol.asyncIterator]?.() ?? (source as Iterable<unknown>)[Symbol.iterator]();
      s.iter = iter;
      for (;;) {
        while (s.credit <= 0 && live()) await new Promise<void>((r) => (s.wake = r));
        if (!live()) break;
        const r = await iter.next();
        if (r.done || !live()) break;
        s.credit -= 1;
        if (!this.conn.sendBounded(F.next(id, r.value), r.value)) {
          throw rpcError("resource_exhausted", "stream value exceeds the peer's maxBytes", "max_frame_bytes");
        }
      }
      if (this.active.get(id) === a) this.conn.send(F.end(id));
    } catch (e) {
      if (this.active.get(id) === a) this.sendError(id, toStatus(e), true);
    } finally {
      void s.iter?.return?.();
      if (this.active.get(id) === a) this.finish(id, a);
    }
  }

  private finish(id: number, a: Active): void {
    this.active.delete(id);
    a.timer?.();
  }

  private reply(id: number, e: unknown): void {
    this.sendError(id, toStatus(e));
  }

  /**
   * Sends the failure of call `id` (a `result`, or a stream's `error`); one that would exceed
   * the peer's maxBytes (a handler's long message, a long name quoted back) is replaced by
   * `resource_exhausted` `{reason:"max_frame_bytes"}` (§13.6), as a value is.
   */
  private sendError(id: number, status: Status, stream = false): void {
    const frame = (s: Status) => (stream ? F.streamError(id, s) : F.fail(id, s));
    if (this.conn.sendBounded(frame(status), status)) return;
    const message = `error exceeds the peer's maxBytes ${this.conn.peerMaxBytes()}`;
    this.conn.send(frame({ code: "resource_exhausted", message, details: { reason: "max_frame_bytes" } }));
  }
}

/** The UTF-8 bytes of a call's `meta.context`: its keys and values, as the Rust peer counts them. */
function contextBytes(context: Record<string, string>): number {
  let n = 0;
  for (const [k, v] of Object.entries(context)) n += utf8Length(k) + utf8Length(v);
  return n;
}

/**
 * Checks a cap-returning method's result (PROTOCOL §13.4): the declared shape, each slot a
 * CapRef the handler exported through its context during this call, of the declared
 * definition. Throws `failed_precondition` `{reason:"unregistered_cap_return"}` otherwise,
 * with 0.10.0's messages, so the client gets an answer rather than a value it cannot adopt.
 */
function checkCapReturn(value: unknown, m: MethodDef, exported: number[], defOf: (id: number) => CapDef | undefined): void {
  if (m.kind !== "call") return;
  const fail = (message: string) => rpcError("failed_precondition", message, "unregistered_cap_return");
  const isRecord = value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof CapRef) && !(value instanceof Map) && !ArrayBuffer.isView(value);
  const slots = m.returns === "cap" ? [value] : m.returns === "array" ? (Array.isArray(value) ? value : undefined) : isRecord ? Object.values(value) : undefined;
  if (slots === undefined || !slots.every((v) => v instanceof CapRef && exported.includes(v.id))) {
    throw fail("expected ctx.exportCap return for cap method");
  }
  const want = m.cap?.().name;
  if (want !== undefined && slots.some((v) => defOf((v as CapRef).id)?.name !== want)) {
    throw fail("exported cap type mismatch with method returns");
  }
}

/**
 * A bootstrap `version` as the Rust peer compares it (`js_string`): a string as it is, a number
 * or boolean spelled out, anything else `[object Object]`.
 */
function jsString(v: unknown): string {
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") return String(v);
  return "[object Object]";
}
