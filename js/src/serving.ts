// The caps this peer serves (PROTOCOL §7–11), as one part of its connection: serve, replace
// and unserve (with `cap_revoked`), the frames the peer sends to our caps, and disposal at
// shutdown. It ties three modules together: `registry.ts` (the served names and their
// checks), `cap_table.ts` (the exported caps and their refcounts) and `inbound.ts` (the
// handlers of the peer's calls and streams).

import { CapTable, runDisposal } from "./cap_table.js";
import type { CapRef } from "./codec.js";
import type { Connection } from "./connection.js";
import * as F from "./frames.js";
import type { Frame } from "./frames.js";
import { Inbound } from "./inbound.js";
import { Registry, type IfExists, type ServeHandle } from "./registry.js";
import type { Limits } from "./limits.js";
import { rpcError } from "./status.js";
import type { CapDef } from "./types.js";

export type { IfExists, ServeHandle, ServeOptions } from "./registry.js";

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
 * What serving does with its connection: the limits, sending, and cancelling a handler's
 * children. Narrower than `Connection` (as outbound.ts's `OutboundWire`): serving.ts and
 * inbound.ts name `Connection` only as the type of `CallContext.connection`, what a handler is
 * given to call the peer back with.
 */
export interface ServingWire {
  readonly limits: Limits;
  readonly isClosed: boolean;
  /** Sends a frame (nothing after shutdown). */
  send(frame: Frame): void;
  /** Sends `frame`, whose large part is `payload`, if it fits the peer's maxBytes; false if it does not. */
  sendBounded(frame: Frame, payload: unknown): boolean;
  peerMaxBytes(): number;
  /** Cancels our calls and streams made from inside the handler of the peer's call `parent`. */
  cancelChildren(parent: number, reason: string | undefined): void;
}

export class Serving {
  private readonly registry = new Registry();
  private readonly table: CapTable;
  private readonly inbound: Inbound;

  /** `connection` is what every handler's context gives as its connection. */
  constructor(
    private readonly conn: ServingWire,
    connection: Connection,
    policy: Policy | undefined,
  ) {
    this.table = new CapTable(conn.limits.maxCaps);
    this.inbound = new Inbound(conn, connection, this.registry, this.table, policy);
  }

  stats(): { servedCaps: number; activeHandlers: number } {
    return { servedCaps: this.table.size, activeHandlers: this.inbound.size };
  }

  /**
   * Serves caps, one or a batch atomically (PROTOCOL §8, the Rust peer's `serve_all`): every
   * check (reserved prefix, collision, version on replace, a name twice in the batch) passes for
   * all of them before anything is registered; throws the first failure's `RpcError`.
   */
  serveAll(caps: ReadonlyArray<{ def: CapDef; impl: Impl }>, ifExists: IfExists = "throw"): ServeHandle {
    const plans = this.registry.planServe(caps.map((c) => c.def), ifExists);
    const owned: Array<{ name: string; registration: object }> = [];
    caps.forEach(({ def, impl }, i) => {
      const plan = plans[i];
      if (plan === "skip") return;
      const registration = plan === "replace" ? this.registry.get(def.name)!.registration : {};
      if (plan === "replace") this.table.switchInstance(def, impl);
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
    if (this.registry.plan(def, "replace", false) !== "replace") throw rpcError("not_found", `cap "${def.name}" not served`);
    this.table.switchInstance(def, impl);
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
      const instance = this.table.instance(name);
      if (instance === undefined) continue;
      this.table.free(instance.id);
      if (instance.entry !== undefined) void runDisposal(instance.entry);
      revoked.push(instance.id);
    }
    if (revoked.length === 0 || this.conn.isClosed) return;
    this.inbound.markRevoked(revoked);
    this.conn.send(F.capRevoked(revoked));
    this.inbound.endStreamsOn(revoked);
  }

  onCall(f: Extract<Frame, { op: "call" }>): void {
    this.inbound.onCall(f);
  }

  onCredit(id: number, credit: unknown): void {
    this.inbound.onCredit(id, credit);
  }

  /** The peer cancelled `id`: signal the handler, reply `cancelled` at once (§11). */
  onCancel(id: number, peerReason: string | undefined): void {
    this.inbound.onCancel(id, peerReason);
  }

  onDrop(caps: Array<{ id: number; delta: number }>): void {
    this.table.drop(caps);
  }

  /** Shutdown: stop handlers and streams, run every live disposal, clear the table (§7, §11). */
  shutdown(): void {
    this.inbound.stop();
    for (const e of this.table.drain()) void runDisposal(e);
  }
}
