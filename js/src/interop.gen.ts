// TypeScript definitions of bunite caps, generated from their Rust #[cap] traits
// (bunite-rpc's `typescript` feature; types through ts-rs). Do not edit: change the
// traits and regenerate.
// Regenerate with `cargo run -p bunite-rpc-cli -- typegen --import ./index.js --out js/src/interop.gen.ts`.

import type { CallOptions, CapDef, Client, StreamOptions, ValueStream } from "./index.js";

/**
 * The binary of `bytes`: a `Uint8Array` in TypeScript.
 */
export type Binary = Uint8Array;

/**
 * `{count}`: `get`, `increment` and every `watch` value.
 */
export type Count = { 
/**
 * The counter.
 */
count: number, };

/**
 * `increment {delta?}`; the call may also carry no args (`None`): the default delta is 1.
 */
export type Delta = { 
/**
 * How much to add (default 1).
 */
delta?: number, };

/**
 * `fail {code, message?, reason?}`.
 */
export type FailParams = { 
/**
 * A status code string (`not_found`, …).
 */
code: string, 
/**
 * The message (default `requested failure`).
 */
message?: string, 
/**
 * `details.reason`, if any.
 */
reason?: string, };

/**
 * `ticks {n}` and `bytes {n}`.
 */
export type N = { 
/**
 * How many.
 */
n: number, };

/**
 * `makeChild {name}`.
 */
export type Named = { 
/**
 * The child's name.
 */
name: string, };

/**
 * `children {names}` and `childMap {names}`.
 */
export type Names = { 
/**
 * One child per name, in order.
 */
names: Array<string>, };

/**
 * `slow {ms, ignoreAbort?}`.
 */
export type SlowParams = { 
/**
 * How long to wait, in milliseconds.
 */
ms: number, 
/**
 * Keep waiting after a cancel or the deadline.
 */
ignoreAbort?: boolean, };

/**
 * A `ticks` value `{i}`.
 */
export type Tick = { 
/**
 * 0 … n-1.
 */
i: number, };

/**
 * `watch {everyMs?}`; the call may also carry no args (`None`): every 5 ms.
 */
export type WatchParams = { 
/**
 * The period in milliseconds (default 5).
 */
everyMs?: number, };

/**
 * `ping {x}` of `interop.child`.
 */
export type X = { 
/**
 * The number to add one to.
 */
x: number, };

/**
 * `interop.counter`: per connection, a count from 0, children, streams and errors.
 *
 * The cap `interop.counter`.
 */
export interface InteropCounter {
  /**
   * `get` → `{count}`.
   *
   * (idempotent)
   */
  get(options?: CallOptions): Promise<Count>;
  /**
   * `increment {delta?}` (or no args: 1) → `{count}` after adding.
   */
  increment(args?: Delta | null, options?: CallOptions): Promise<Count>;
  /**
   * `echo` any value → the same value.
   */
  echo(args: unknown, options?: CallOptions): Promise<unknown>;
  /**
   * `fail {code, message?, reason?}` → fails with that status.
   */
  fail(args: FailParams, options?: CallOptions): Promise<void>;
  /**
   * `boom` → fails as an unexpected handler error: `internal` `boom`.
   */
  boom(options?: CallOptions): Promise<void>;
  /**
   * `slow {ms, ignoreAbort?}` → `"done"` after `ms`, or `"aborted"` at once when
   * cancelled or past its deadline (unless `ignoreAbort`). Not idempotent, so the server
   * signals it at the deadline.
   */
  slow(args: SlowParams, options?: CallOptions): Promise<string>;
  /**
   * `makeChild {name}` → a new `interop.child`.
   */
  makeChild(args: Named, options?: CallOptions): Promise<Client<InteropChild>>;
  /**
   * `children {names}` → one new child per name, in order.
   */
  children(args: Names, options?: CallOptions): Promise<Client<InteropChild>[]>;
  /**
   * `childMap {names}` → `{name: child}`, in the order of `names`.
   */
  childMap(args: Names, options?: CallOptions): Promise<Record<string, Client<InteropChild>>>;
  /**
   * `closedCount` → how many `interop.child.close` calls ran on this connection.
   *
   * (idempotent)
   */
  closedCount(options?: CallOptions): Promise<number>;
  /**
   * `liveChildren` → how many child caps are still in this connection's cap table.
   *
   * (idempotent)
   */
  liveChildren(options?: CallOptions): Promise<number>;
  /**
   * `cancelledWatches` → how many `watch` streams ended by cancellation.
   *
   * (idempotent)
   */
  cancelledWatches(options?: CallOptions): Promise<number>;
  /**
   * `ticks {n}` → `{i}` for i = 0 … n-1, then the end.
   */
  ticks(args: N, options?: StreamOptions): ValueStream<Tick>;
  /**
   * `watch {everyMs?}` → `{count}` now and every `everyMs` until cancelled. A cancel drops
   * the producer (and signals `ctx`).
   */
  watch(args?: WatchParams | null, options?: StreamOptions): ValueStream<Count>;
  /**
   * `bytes {n}` → binary of n bytes, byte k = k mod 256.
   */
  bytes(args: N, options?: CallOptions): Promise<Binary>;
  /**
   * `askPeer` → bootstraps `interop.peer` from the calling peer (through
   * `ctx.connection()`), calls its `ping` and returns the answer.
   */
  askPeer(options?: CallOptions): Promise<string>;
}

export const InteropCounter: CapDef<InteropCounter> = {
  name: "interop.counter",
  methods: {
    get: { kind: "call", args: "none", idempotent: true },
    increment: { kind: "call" },
    echo: { kind: "call" },
    fail: { kind: "call" },
    boom: { kind: "call", args: "none" },
    slow: { kind: "call" },
    makeChild: { kind: "call", returns: "cap", cap: () => InteropChild },
    children: { kind: "call", returns: "array", cap: () => InteropChild },
    childMap: { kind: "call", returns: "record", cap: () => InteropChild },
    closedCount: { kind: "call", args: "none", idempotent: true },
    liveChildren: { kind: "call", args: "none", idempotent: true },
    cancelledWatches: { kind: "call", args: "none", idempotent: true },
    ticks: { kind: "stream" },
    watch: { kind: "stream" },
    bytes: { kind: "call" },
    askPeer: { kind: "call", args: "none" },
  },
};

/**
 * `interop.child`: made by `makeChild` / `children` / `childMap`; `close` is its disposal
 * method.
 *
 * The cap `interop.child`.
 */
export interface InteropChild {
  /**
   * `name` → its name.
   *
   * (idempotent)
   */
  name(options?: CallOptions): Promise<string>;
  /**
   * `ping {x}` → x + 1.
   */
  ping(args: X, options?: CallOptions): Promise<number>;
  /**
   * `close` → undefined; counts toward `closedCount`. The disposal method.
   *
   * (the disposal method: `dispose(client)` calls it, then releases)
   */
  close(options?: CallOptions): Promise<void>;
}

export const InteropChild: CapDef<InteropChild> = {
  name: "interop.child",
  disposal: "close",
  methods: {
    name: { kind: "call", args: "none", idempotent: true },
    ping: { kind: "call" },
    close: { kind: "call", args: "none" },
  },
};

/**
 * `interop.versioned`, version "2".
 *
 * The cap `interop.versioned` version `2`.
 */
export interface InteropVersioned {
  /**
   * `v` → `"2"`.
   */
  v(options?: CallOptions): Promise<string>;
}

export const InteropVersioned: CapDef<InteropVersioned> = {
  name: "interop.versioned",
  version: "2",
  methods: {
    v: { kind: "call", args: "none" },
  },
};

/**
 * `interop.ephemeral`: unserves itself on request.
 *
 * The cap `interop.ephemeral`.
 */
export interface InteropEphemeral {
  /**
   * `ping` → `"pong"`.
   */
  ping(options?: CallOptions): Promise<string>;
  /**
   * `unserveMe` → replies, then the server unserves `interop.ephemeral` on this
   * connection (sending `cap_revoked`).
   */
  unserveMe(options?: CallOptions): Promise<void>;
}

export const InteropEphemeral: CapDef<InteropEphemeral> = {
  name: "interop.ephemeral",
  methods: {
    ping: { kind: "call", args: "none" },
    unserveMe: { kind: "call", args: "none" },
  },
};

/**
 * `interop.secret`: the interop server's policy denies it on every connection.
 *
 * The cap `interop.secret`.
 */
export interface InteropSecret {
  /**
   * `ping` → `"secret"`.
   */
  ping(options?: CallOptions): Promise<string>;
}

export const InteropSecret: CapDef<InteropSecret> = {
  name: "interop.secret",
  methods: {
    ping: { kind: "call", args: "none" },
  },
};

/**
 * `interop.peer`: served by the interop client, for `askPeer`.
 *
 * The cap `interop.peer`.
 */
export interface InteropPeer {
  /**
   * `ping` → `"pong from client"`.
   */
  ping(options?: CallOptions): Promise<string>;
}

export const InteropPeer: CapDef<InteropPeer> = {
  name: "interop.peer",
  methods: {
    ping: { kind: "call", args: "none" },
  },
};
