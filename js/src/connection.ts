// One bunite connection: hello, goaway, protocol errors and shutdown (PROTOCOL §6, §11), and
// the routing of every frame to the part that owns it: our calls and streams on the peer's
// caps (`outbound.ts`) and their proxies (`client_proxy.ts`), the caps we serve
// (`serving.ts`). Every frame goes through `send`, every inbound message through `receive`;
// nothing a peer sends can throw out of `receive`. Its limits and options are in `limits.ts`.

export { DEFAULT_LIMITS, type ConnectionOptions, type Limits } from "./limits.js";

import { CapRef, FrameDecoder, FrameEncoder } from "./codec.js";
import * as F from "./frames.js";
import { type Frame, FrameError, type HelloBounds, validate } from "./frames.js";
import { DEFAULT_LIMITS, type ConnectionOptions, type Limits } from "./limits.js";
import { disposeClient, newClient, releaseClient } from "./client_proxy.js";
import { Outbound, passThrough, releaseRefs } from "./outbound.js";
import { Serving, type Impl, type ServeHandle, type ServeOptions } from "./serving.js";
import { clipPeerStatus, clipPeerText } from "./peer_text.js";
import { sizeBound } from "./size.js";
import { RpcError, rpcError, statusFrom, type Status } from "./status.js";
import type { Transport } from "./transport.js";
import { CLIENT, type CallOptions, type CapDef, type Client, type ClientMeta, type StreamOptions, type ValueStream } from "./types.js";

interface PeerHello {
  mode: string;
  features: string[];
  maxBytes: number;
  origin: string;
}

/** Which connection made each client (for `release(client)` and friends). */
export const clientConnections = new WeakMap<ClientMeta, Connection>();


export class Connection {
  readonly limits: Limits;
  /** The peer's hello, once received. */
  peer: PeerHello | undefined;
  private readonly encoder = new FrameEncoder();
  private readonly decoder: FrameDecoder;
  private readonly helloBounds: HelloBounds;
  /** The length of the message being dispatched: what a stream value or a peer's error is charged. */
  private messageLen = 0;
  private readonly outbound: Outbound;
  private readonly serving: Serving;
  private readonly helloWaiters: Array<{ resolve(): void; reject(e: RpcError): void }> = [];
  private readonly closeHandlers: Array<(reason: string) => void> = [];
  private goawayStatus: Status | undefined;
  /** What pending calls and streams failed with at shutdown (its message the reason); set once shut down. */
  private shutdownError: RpcError | undefined;
  /**
   * Resolves with the reason once the connection has shut down: the message every call and
   * stream pending then failed with (`unavailable`, `details.reason` `"goaway"` or
   * `"peer_closing"`, see `shutdown`).
   */
  readonly closed: Promise<string>;
  private resolveClosed!: (reason: string) => void;

  constructor(
    private readonly transport: Transport,
    options: ConnectionOptions = {},
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.decoder = new FrameDecoder(this.limits.maxDepth, this.limits.maxRecordTableBytes, {
      base: this.limits.decodeBudgetBase,
      factor: this.limits.decodeBudgetFactor,
    });
    this.outbound = new Outbound(this, this.limits);
    this.helloBounds = { maxFeatures: this.limits.maxHelloFeatures, maxText: this.limits.maxHelloText };
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.serving = new Serving(this, this, options.policy);
    if (options.serve !== undefined && options.serve.length > 0) this.serving.serveAll(options.serve);
    const origin = options.origin ?? (globalThis as { location?: { origin?: string } }).location?.origin ?? "";
    transport.start({
      message: (data) => this.receive(data),
      protocolError: (message) => this.protocolError(message),
      closed: (reason) => this.shutdown(`transport closed: ${reason}`, "peer_closing"),
    });
    this.send(F.hello(options.mode ?? "web", this.limits.maxBytes, origin));
  }

  /** Whether the connection has shut down. */
  get isClosed(): boolean {
    return this.shutdownError !== undefined;
  }

  /** Runs `f` once when the connection shuts down (at once if it has). */
  onClose(f: (reason: string) => void): void {
    if (this.shutdownError !== undefined) f(this.shutdownError.message);
    else this.closeHandlers.push(f);
  }

  /**
   * Closes the connection: tells the peer with `goaway {reason: "peer_closing"}` (PROTOCOL
   * §11, the goaway the Rust client sends on close), then shuts down: pending calls and
   * streams fail `unavailable` with `reason` as the message and `details.reason`
   * `"peer_closing"` (as the Rust client's on its own close), the transport closes after the
   * goaway went out.
   */
  close(reason = "closed locally"): void {
    if (this.shutdownError !== undefined) return;
    this.send(F.goaway("peer_closing", undefined));
    this.shutdown(reason, "peer_closing");
  }

  /**
   * Serves `impl` as the cap `def` (PROTOCOL §8); the handle unserves it. A name already served
   * is decided by `options.ifExists` (`"throw"`, the default: `already_exists`
   * `{reason:"name_collision"}`; `"skip"`; `"replace"`). Throws `RpcError`, `unavailable` once
   * the connection is closed.
   */
  serve(def: CapDef, impl: Impl, options: ServeOptions = {}): ServeHandle {
    return this.serveAll([{ def, impl }], options);
  }

  /**
   * Serves several caps atomically (PROTOCOL §8, the Rust `Connection::serve_all`): every check
   * passes for all of them before any is registered; the handle owns every name it served.
   */
  serveAll(caps: ReadonlyArray<{ def: CapDef; impl: Impl }>, options: ServeOptions = {}): ServeHandle {
    if (this.shutdownError !== undefined) throw rpcError("unavailable", "connection closed");
    return this.serving.serveAll(caps, options.ifExists);
  }

  /**
   * Switches the served name `def.name` to `impl` (PROTOCOL §8): `not_found` if it is not served,
   * `failed_precondition` `{reason:"version_mismatch"}` if its version differs. Its live
   * bootstrap instance keeps its cap-id and switches at once; nothing is revoked.
   */
  replace(def: CapDef, impl: Impl): void {
    if (this.shutdownError !== undefined) throw rpcError("unavailable", "connection closed");
    this.serving.replace(def, impl);
  }

  /**
   * Unserves a name (or a definition's name): its live bootstrap instance is disposed, freed and
   * revoked (`cap_revoked`), and the streams served on it end (PROTOCOL §8, §12). A name not
   * served is a silent no-op.
   */
  unserve(cap: string | CapDef): void {
    this.serving.unserve([typeof cap === "string" ? cap : cap.name]);
  }

  /** Counts of the tables, for leak checks: all zero once everything is released. */
  stats(): {
    pendingCalls: number;
    clientStreams: number;
    abandonedCalls: number;
    servedCaps: number;
    activeHandlers: number;
    bufferedStreamBytes: number;
  } {
    const { bufferedStreamBytes, ...open } = this.outbound.stats();
    return { ...open, ...this.serving.stats(), bufferedStreamBytes };
  }

  /**
   * Bootstraps the peer's cap `def` by name (and version, if it has one). It is sent once
   * the peer's hello has come (PROTOCOL §6); `options.signal` also ends the wait for the
   * hello (`AbortSignal.timeout(ms)` bounds the whole bootstrap), while `deadlineMs` runs
   * from the send.
   */
  async bootstrap<M>(def: CapDef<M>, options: CallOptions = {}): Promise<Client<M>> {
    await this.peerHello(options.signal);
    const args = def.version !== undefined ? { name: def.name, version: def.version } : { name: def.name };
    const ref = await this.call(0, "bootstrap", args, options, (v) => {
      if (!(v instanceof CapRef)) {
        releaseRefs(this, v);
        throw rpcError("invalid_argument", "bootstrap result is not a cap");
      }
      return v;
    });
    return this.client(def, (ref as CapRef).id, true);
  }

  /**
   * A client of the peer's cap `capId` that owns no reference (releasing it sends nothing):
   * for the runtime (id 1) and for tools.
   */
  clientFor<M>(capId: number, def: CapDef<M>): Client<M> {
    return this.client(def, capId, false);
  }

  /** Calls `method` on the peer's cap `capId`; `decode` turns the result value into the reply. */
  call(capId: number, method: string, args: unknown, options: CallOptions = {}, decode: (v: unknown) => unknown = passThrough): Promise<unknown> {
    return this.outbound.call(capId, method, args, options, decode);
  }

  /** Opens the server stream `method` on the peer's cap `capId`. */
  stream<T>(capId: number, method: string, args: unknown, options: StreamOptions = {}): ValueStream<T> {
    return this.outbound.stream<T>(capId, method, args, options);
  }

  // ---- client proxies (`client_proxy.ts`) ----

  /** A typed proxy of the peer's cap `capId`; `owned` proxies release one reference. */
  client<M>(def: CapDef<M>, capId: number, owned: boolean): Client<M> {
    const proxy = newClient(this, def, capId, owned);
    clientConnections.set(proxy[CLIENT], this);
    return proxy;
  }

  /** Releases the reference of `meta` once (PROTOCOL §7). */
  releaseMeta(meta: ClientMeta): void {
    releaseClient(this, meta);
  }

  /**
   * Calls the disposal method once (errors ignored), then releases (PROTOCOL §7, §13.8). The
   * drop goes out right behind the call, as 0.10.0 sends it, so a server that is slow to
   * answer the disposal, or never does, still gets it; the promise waits for the answer.
   */
  dispose(meta: ClientMeta): Promise<void> {
    return disposeClient(this, meta);
  }

  // ---- sending ----

  /** The peer's maxBytes (ours until its hello arrives). */
  peerMaxBytes(): number {
    return this.peer?.maxBytes ?? this.limits.maxBytes;
  }

  /** Sends a frame (nothing after shutdown). */
  send(frame: Frame): void {
    if (this.shutdownError !== undefined && frame.op !== "goaway") return;
    this.transport.send(this.encoder.encode(frame));
  }

  /**
   * Sends `frame`, whose large part is `payload`, if it fits the peer's maxBytes; false (and
   * nothing sent, the encoder untouched) if it does not (PROTOCOL §13.6).
   */
  sendBounded(frame: Frame, payload: unknown): boolean {
    const max = this.peerMaxBytes();
    if (sizeBound(payload, max) + 256 > max) {
      const measured = new FrameEncoder().encode(frame).length;
      if (measured > max) return false;
    }
    this.send(frame);
    return true;
  }

  // ---- receiving ----

  private receive(data: Uint8Array): void {
    if (this.shutdownError !== undefined) return;
    if (data.length > this.limits.maxBytes) {
      const message = `message of ${data.length} bytes exceeds maxBytes ${this.limits.maxBytes}`;
      this.send(F.goaway("resource_exhausted", { code: "resource_exhausted", message, details: { reason: "max_frame_bytes" } }));
      return this.shutdown(message, "peer_closing");
    }
    let frame: Frame;
    try {
      frame = validate(this.decoder.decode(data), this.helloBounds);
    } catch (e) {
      return this.protocolError(e instanceof FrameError ? e.message : `undecodable message: ${(e as Error)?.message ?? e}`);
    }
    this.messageLen = data.length;
    try {
      this.dispatch(frame);
    } catch (e) {
      this.protocolError(`bad ${frame.op} frame: ${(e as Error)?.message ?? e}`);
    }
  }

  private dispatch(f: Frame): void {
    switch (f.op) {
      case "hello":
        this.peer = { mode: f.mode, features: f.features, maxBytes: f.maxBytes, origin: f.origin };
        for (const w of this.helloWaiters.splice(0)) w.resolve();
        return;
      case "goaway": {
        // Kept for the connection's life and handed to every pending call, hello waiter and
        // close handler: cut first, as the Rust peer's `on_goaway` does.
        this.goawayStatus = f.error !== undefined ? clipPeerStatus(statusFrom(f.error)) : undefined;
        return this.shutdown(f.reason !== undefined ? clipPeerText(f.reason) : "goaway", "goaway");
      }
      case "result":
        return this.outbound.onResult(f.id, f.ok, f.ok ? f.value : f.error, this.messageLen);
      case "stream":
        if (f.ev === "credit") return this.serving.onCredit(f.id, f.credit);
        return this.outbound.onStreamFrame(f, this.messageLen);
      case "cap_revoked":
        return this.outbound.onRevoked(f.capIds);
      case "call":
        return this.serving.onCall(f);
      case "cancel":
        this.serving.onCancel(f.id, f.reason ?? undefined);
        return;
      case "drop":
        return this.serving.onDrop(f.caps);
    }
  }

  /**
   * Cancels our calls, bootstraps and streams made from inside the handler of the peer's call
   * `parent`, each with `cancel` carrying the same reason (§11; none if it had none).
   */
  cancelChildren(parent: number, reason: string | undefined): void {
    this.outbound.cancelChildren(parent, reason);
  }

  /**
   * Resolves once the peer's hello has come (PROTOCOL §6). Aborting `signal` meanwhile
   * rejects it `cancelled` at once and lets go of the wait (nothing was sent yet); it
   * waited for the hello before.
   */
  private peerHello(signal?: AbortSignal): Promise<void> {
    if (this.peer !== undefined) return Promise.resolve();
    if (this.shutdownError !== undefined) return Promise.reject(this.closeError());
    if (signal?.aborted) return Promise.reject(rpcError("cancelled", "cancelled before it was sent"));
    return new Promise((resolve, reject) => {
      if (signal === undefined) {
        this.helloWaiters.push({ resolve, reject });
        return;
      }
      const waiter = {
        resolve: () => {
          signal.removeEventListener("abort", abort);
          resolve();
        },
        reject: (e: RpcError) => {
          signal.removeEventListener("abort", abort);
          reject(e);
        },
      };
      const abort = () => {
        const at = this.helloWaiters.indexOf(waiter);
        if (at >= 0) this.helloWaiters.splice(at, 1);
        reject(rpcError("cancelled", "cancelled before it was sent"));
      };
      signal.addEventListener("abort", abort, { once: true });
      this.helloWaiters.push(waiter);
    });
  }

  /** What a bootstrap waiting for the hello fails with at shutdown: the goaway's error if it had one (as the Rust client). */
  private closeError(): RpcError {
    if (this.goawayStatus !== undefined) return new RpcError(this.goawayStatus);
    return this.shutdownError ?? rpcError("unavailable", "connection closed");
  }

  // ---- errors and shutdown ----

  /** A protocol error: goaway `invalid_argument`, then shutdown (PROTOCOL §11). */
  private protocolError(message: string): void {
    if (this.shutdownError !== undefined) return;
    this.send(F.goaway("invalid_argument", { code: "invalid_argument", message }));
    this.shutdown(`protocol error: ${message}`, "peer_closing");
  }

  /**
   * Shuts down once: fails everything pending, stops what we serve, closes the transport.
   * Pending calls and streams fail `unavailable` with `reason` as the message and `why` as
   * `details.reason`, as the Rust client's `Disconnect::status`: `"goaway"` when the peer sent
   * goaway (a graceful stop's `peer_closing` included), `"peer_closing"` when we closed, the
   * transport ended or the peer broke the protocol (PROTOCOL §12).
   */
  private shutdown(reason: string, why: "goaway" | "peer_closing"): void {
    if (this.shutdownError !== undefined) return;
    const err = rpcError("unavailable", reason, why);
    this.shutdownError = err;
    for (const w of this.helloWaiters.splice(0)) w.reject(this.closeError());
    this.outbound.shutdown(err);
    this.serving.shutdown();
    for (const f of this.closeHandlers.splice(0)) {
      try {
        f(reason);
      } catch {
        // A failing close handler never affects the connection.
      }
    }
    this.transport.close();
    this.resolveClosed(reason);
  }
}
