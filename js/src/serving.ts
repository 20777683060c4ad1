// The caps this peer serves (PROTOCOL §7–11): the registry, bootstrap, the cap table with
// its refcounts, dispatch of the peer's calls to handlers, server streams with credit,
// cancellation, deadlines, unserve with `cap_revoked`, and disposal at shutdown.

import { CapRef } from "./codec.js";
import type { Connection } from "./connection.js";
import * as F from "./frames.js";
import { clipPeerText, utf8Length } from "./peer_text.js";
import type { Frame } from "./frames.js";
import { type RpcError, rpcError, toStatus, type Status } from "./status.js";
import { timeout } from "./timer.js";
import type { CapDef, MethodDef } from "./types.js";

/** The server context of one call. */
export interface CallContext {
  /** The call id (pass it as `parentCallId` of calls made while handling this one). */
  readonly callId: number;
  /** Aborted when the peer cancels, the deadline of a non-idempotent method passes, or the connection shuts down. */
  readonly signal: AbortSignal;
  /** The call's relative deadline in ms, if any. */
  readonly deadlineMs: number | undefined;
  /** The call's `meta.context` map. */
  readonly context: Record<string, string>;
  readonly connection: Connection;
  /** Exports a new cap with refcount 1, to return from a cap-returning method. */
  exportCap(def: CapDef, impl: Impl): CapRef;
}

/** A cap's implementation: one handler per method, by wire name. A call handler returns the
 * value (or a promise); a stream handler returns an (async) iterable of values. */
export type Impl = Record<string, (args: any, ctx: CallContext) => unknown>;

/** Decides bootstraps: `(name)` → allowed (may be async; a throw is `internal`). */
export type Policy = (name: string) => boolean | Promise<boolean>;

/**
 * What serving a name that is already served does (PROTOCOL §8), as the Rust peer's
 * `IfExists`: `"throw"` (the default) fails `already_exists` `{reason:"name_collision"}`;
 * `"skip"` leaves the existing registration and the handle owns nothing; `"replace"` switches
 * the name to the new implementation as `replace` does (same version required).
 */
export type IfExists = "throw" | "skip" | "replace";

/** Options of `serve` and `serveAll`. */
export interface ServeOptions {
  ifExists?: IfExists;
}

/** Returned by `serve` and `serveAll`: owns the names it served. */
export interface ServeHandle {
  /** The names this handle owns (none for those `ifExists: "skip"` left alone). */
  readonly names: readonly string[];
  /**
   * Unserves the names it owns, as `Connection.unserve` does, with one `cap_revoked` for all of
   * them; once. A name since unserved (and perhaps served again by another `serve`) is left
   * alone; one since replaced is still this handle's.
   */
  unserve(): void;
}

interface Entry {
  def: CapDef;
  impl: Impl;
  refs: number;
  /** The registry name, for a bootstrap instance. */
  name: string | undefined;
}

/** A served name: its definition and implementation, and the registration they belong to. */
interface Served {
  def: CapDef;
  impl: Impl;
  /** Made by the `serve` that inserted the name, kept by its replacements: a handle unserves only its own. */
  registration: object;
}

/** What serving one cap will do, decided before anything changes (the Rust peer's `Plan`). */
type Plan = "insert" | "skip" | "replace";

const RESERVED_PREFIX = "bunite.";

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

const MAX_INITIAL_CREDIT = 1024;
const MIN_INITIAL_CREDIT = 8;
const DEFAULT_INITIAL_CREDIT = 32;

export class Serving {
  private readonly registry = new Map<string, Served>();
  private readonly table = new Map<number, Entry>();
  private readonly instances = new Map<string, number>();
  private readonly active = new Map<number, Active>();
  private nextCapId = 2;

  constructor(
    private readonly conn: Connection,
    private readonly policy: Policy | undefined,
  ) {}

  stats(): { servedCaps: number; activeHandlers: number } {
    return { servedCaps: this.table.size, activeHandlers: this.active.size };
  }

  /**
   * Serves caps, one or a batch atomically (PROTOCOL §8, the Rust peer's `serve_all`): every
   * check (reserved prefix, collision, version on replace, a name twice in the batch) passes for
   * all of them before anything is registered; throws the first failure's `RpcError`.
   */
  serveAll(caps: ReadonlyArray<{ def: CapDef; impl: Impl }>, ifExists: IfExists = "throw"): ServeHandle {
    const plans = caps.length === 1 ? [this.plan(caps[0]!.def, ifExists, false)] : this.planAll(caps.map((c) => c.def), ifExists);
    const owned: Array<{ name: string; registration: object }> = [];
    caps.forEach(({ def, impl }, i) => {
      const plan = plans[i];
      if (plan === "skip") return;
      const registration = plan === "replace" ? this.registry.get(def.name)!.registration : {};
      if (plan === "replace") this.switchInstance(def, impl);
      this.registry.set(def.name, { def, impl, registration });
      owned.push({ name: def.name, registration });
    });
    let done = false;
    return {
      names: owned.map((o) => o.name),
      unserve: () => {
        if (done) return;
        done = true;
        this.unserve(owned.filter((o) => this.registry.get(o.name)?.registration === o.registration).map((o) => o.name));
      },
    };
  }

  /**
   * `replace` (PROTOCOL §8): the name must be served (`not_found`) with the same version
   * (`failed_precondition` `{reason:"version_mismatch"}`); its live bootstrap instance switches
   * to `impl` at once, keeping its cap-id and refcount, with no `cap_revoked`. Calls already
   * running finish on the implementation they started on; the old one is not disposed.
   */
  replace(def: CapDef, impl: Impl): void {
    if (this.plan(def, "replace", false) !== "replace") throw rpcError("not_found", `cap "${def.name}" not served`);
    this.switchInstance(def, impl);
    this.registry.set(def.name, { def, impl, registration: this.registry.get(def.name)!.registration });
  }

  /**
   * Removes `names` (PROTOCOL §8): each live bootstrap instance is disposed and freed, and one
   * `cap_revoked` carries all their ids. A name not served is ignored.
   */
  unserve(names: readonly string[]): void {
    const revoked: number[] = [];
    for (const name of names) {
      if (!this.registry.delete(name)) continue;
      const id = this.instances.get(name);
      if (id === undefined) continue;
      const entry = this.table.get(id);
      this.free(id);
      if (entry !== undefined) void this.runDisposal(entry);
      revoked.push(id);
    }
    if (revoked.length === 0 || this.conn.isClosed) return;
    for (const a of this.active.values()) if (revoked.includes(a.capId)) a.targetRevoked = true;
    this.conn.send(F.capRevoked(revoked));
    // The peer ends its streams on the caps without a cancel (§12): stop the sources, each
    // with its `end` after the `cap_revoked`, so none waits for credit holding its slot.
    for (const [sid, a] of [...this.active]) {
      if (!revoked.includes(a.capId) || a.stream === undefined) continue;
      this.finish(sid, a);
      a.ctrl.abort("cap revoked");
      a.stream.wake?.();
      this.conn.send(F.end(sid));
    }
  }

  /** Checks one cap against the registry (the Rust peer's `Registry::plan`). */
  private plan(def: CapDef, ifExists: IfExists, batch: boolean): Plan {
    const name = def.name;
    if (name.startsWith(RESERVED_PREFIX)) {
      throw rpcError("already_exists", `cap name "${name}" uses reserved prefix "${RESERVED_PREFIX}"`, "reserved_namespace");
    }
    const existing = this.registry.get(name);
    if (existing === undefined) return "insert";
    if (ifExists === "throw") throw collision(name);
    if (ifExists === "skip") return "skip";
    if (existing.def.version !== def.version) {
      const [cur, next] = [String(existing.def.version), String(def.version)];
      const message = batch
        ? `version mismatch on replace for "${name}" (current "${cur}", new "${next}")`
        : `version mismatch (current "${cur}", new "${next}")`;
      throw rpcError("failed_precondition", message, "version_mismatch");
    }
    return "replace";
  }

  /** Checks a whole batch: each cap, and no name twice in it. */
  private planAll(defs: CapDef[], ifExists: IfExists): Plan[] {
    const seen = new Set<string>();
    return defs.map((def) => {
      const plan = this.plan(def, ifExists, true);
      if (seen.has(def.name)) throw collision(def.name);
      seen.add(def.name);
      return plan;
    });
  }

  /** The name's live bootstrap instance, if any, now runs `impl` (calls to it find the new handlers). */
  private switchInstance(def: CapDef, impl: Impl): void {
    const id = this.instances.get(def.name);
    const entry = id === undefined ? undefined : this.table.get(id);
    if (entry === undefined) return;
    entry.def = def;
    entry.impl = impl;
  }

  onCall(f: Extract<Frame, { op: "call" }>): void {
    if (this.active.has(f.id)) throw new Error(`call id ${f.id} is still running`);
    const capId = f.target.id;
    if (capId === 0) {
      if (f.method !== "bootstrap") return this.reply(f.id, rpcError("not_found", "cap has no impl"));
      return void this.bootstrap(f.id, f.args);
    }
    const entry = this.table.get(capId);
    if (entry === undefined) {
      return this.reply(f.id, rpcError("not_found", capId === 1 ? "cap has no impl" : `cap-id ${capId} not found`));
    }
    const m = (entry.def.methods as Record<string, MethodDef>)[f.method];
    if (m === undefined || !Object.hasOwn(entry.def.methods, f.method)) {
      return this.reply(f.id, rpcError("not_found", `method "${clipPeerText(f.method)}" on cap "${entry.def.name}"`));
    }
    const handler = Object.hasOwn(entry.impl, f.method) ? entry.impl[f.method] : undefined;
    if (typeof handler !== "function") return this.reply(f.id, rpcError("not_found", `method "${clipPeerText(f.method)}" has no handler`));
    if (this.active.size >= this.conn.limits.maxInFlightCalls) {
      const n = this.conn.limits.maxInFlightCalls;
      return this.reply(f.id, rpcError("resource_exhausted", `in-flight calls limit ${n}`, "max_concurrent_calls"));
    }
    const context = f.meta?.context ?? {};
    const size = contextBytes(context);
    const maxContext = this.conn.limits.maxContextBytes;
    if (size > maxContext) {
      const message = `meta.context of ${size} bytes is over the limit of ${maxContext} bytes (max_context_bytes)`;
      return this.reply(f.id, rpcError("invalid_argument", message));
    }
    const a: Active = { capId, targetRevoked: false, ctrl: new AbortController(), exported: [], timer: undefined, stream: undefined };
    this.active.set(f.id, a);
    const deadline = f.meta?.deadlineMs;
    // Only call methods that are not idempotent are signalled at the deadline (§11; a
    // stream method never is, as in 0.10.0).
    if (deadline !== undefined && m.kind === "call" && m.idempotent !== true) {
      a.timer = timeout(() => a.ctrl.abort("deadline_exceeded"), deadline);
    }
    const ctx: CallContext = {
      callId: f.id,
      signal: a.ctrl.signal,
      deadlineMs: deadline,
      context,
      connection: this.conn,
      exportCap: (def, impl) => {
        const id = this.allocate({ def, impl, refs: 1, name: undefined });
        a.exported.push(id);
        return new CapRef(id);
      },
    };
    if (m.kind === "stream") void this.runStream(f.id, a, m, () => handler.call(entry.impl, f.args, ctx));
    else void this.runCall(f.id, a, m, () => handler.call(entry.impl, f.args, ctx));
  }

  private async bootstrap(id: number, args: unknown): Promise<void> {
    const a = args as { name?: unknown; version?: unknown } | null | undefined;
    if (a === null || typeof a !== "object" || typeof a.name !== "string") {
      return this.reply(id, rpcError("invalid_argument", "bootstrap requires {name: string}"));
    }
    const name = a.name;
    const version = a.version === undefined || a.version === null ? undefined : jsString(a.version);
    const refused = this.checkBootstrap(name, version);
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
      const now = this.checkBootstrap(name, version);
      if (now !== undefined) return this.reply(id, now);
    }
    const served = this.registry.get(name)!;
    const existing = this.instances.get(name);
    let capId: number;
    if (existing !== undefined && this.table.has(existing)) {
      capId = existing;
      this.table.get(capId)!.refs += 1;
    } else {
      try {
        capId = this.allocate({ def: served.def, impl: served.impl, refs: 1, name });
      } catch (e) {
        return this.reply(id, e);
      }
      this.instances.set(name, capId);
    }
    this.conn.send(F.ok(id, new CapRef(capId)));
  }

  /** Why a bootstrap of `name` (with the client's `version`) is refused, if it is (PROTOCOL §8 steps 2–3). */
  private checkBootstrap(name: string, version: string | undefined): RpcError | undefined {
    // Names and versions the peer chose are quoted back cut (as the Rust peer's `clipped`),
    // and compared whole.
    const served = this.registry.get(name);
    if (served === undefined) return rpcError("not_found", `cap "${clipPeerText(name)}" not served`);
    const sv = served.def.version;
    if (sv !== undefined && version !== undefined && version !== sv) {
      const message = `version mismatch (server "${sv}", client "${clipPeerText(version)}")`;
      return rpcError("failed_precondition", message, "version_mismatch");
    }
    return undefined;
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
      for (const c of a.exported) this.free(c);
      return;
    }
    this.finish(id, a);
    if (failed !== undefined) {
      for (const c of a.exported) this.free(c);
      return this.sendError(id, failed);
    }
    const sent = this.conn.sendBounded(F.ok(id, value), value);
    // Exports nobody will release: the client already failed the call on `cap_revoked` (as the
    // Rust peer's `target_revoked`).
    if (sent && a.targetRevoked) for (const c of a.exported) this.free(c);
    if (!sent) {
      for (const c of a.exported) this.free(c);
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

  onCredit(id: number, credit: unknown): void {
    const s = this.active.get(id)?.stream;
    const k = (credit as { messages?: unknown } | null)?.messages;
    if (s === undefined || typeof k !== "number" || !(k > 0)) return; // 0 or missing: ignored (§13.2)
    s.credit = Math.min(s.credit + Math.floor(k), 1 << 30);
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

  onDrop(caps: Array<{ id: number; delta: number }>): void {
    for (const { id, delta } of caps) {
      if (id <= 1) continue;
      const e = this.table.get(id);
      if (e === undefined) continue;
      e.refs -= delta;
      if (e.refs <= 0) this.free(id);
    }
  }

  /** Shutdown: stop handlers and streams, run every live disposal, clear the table (§7, §11). */
  shutdown(): void {
    for (const [id, a] of [...this.active]) {
      this.finish(id, a);
      a.ctrl.abort("connection closed");
      a.stream?.wake?.();
    }
    const live = [...this.table.values()];
    this.table.clear();
    this.instances.clear();
    for (const e of live) void this.runDisposal(e);
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

  private allocate(e: Entry): number {
    if (this.table.size + 2 >= this.conn.limits.maxCaps) {
      throw rpcError("resource_exhausted", `cap-table limit ${this.conn.limits.maxCaps}`, "max_caps_per_connection");
    }
    const id = this.nextCapId++;
    this.table.set(id, e);
    return id;
  }

  private free(id: number): void {
    const e = this.table.get(id);
    if (e === undefined) return;
    this.table.delete(id);
    if (e.name !== undefined && this.instances.get(e.name) === id) this.instances.delete(e.name);
  }

  private async runDisposal(e: Entry): Promise<void> {
    const d = e.def.disposal;
    const h = d !== undefined && Object.hasOwn(e.impl, d) ? e.impl[d] : undefined;
    if (typeof h !== "function") return;
    try {
      await h.call(e.impl, undefined, undefined as unknown as CallContext);
    } catch {
      // Disposal errors are ignored.
    }
  }
}

function collision(name: string): RpcError {
  return rpcError("already_exists", `cap "${name}" already served`, "name_collision");
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
