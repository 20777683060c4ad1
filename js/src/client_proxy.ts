// The typed proxies of the peer's caps (PROTOCOL §7): a proxy's methods are calls and streams
// on its connection; a proxy that owns a reference releases it once, on `release`, on
// `dispose` (after the cap's disposal method) or, failing both, once it is collected. A
// cap-returning method's result becomes proxies here.

import { CapRef } from "./codec.js";
import * as F from "./frames.js";
import type { Frame } from "./frames.js";
import { capSlots, isPlainRecord, passThrough, releaseRefs } from "./outbound.js";
import { RpcError, rpcError } from "./status.js";
import { failedStream } from "./stream.js";
import { CLIENT, type CallOptions, type CapDef, type Client, type ClientMeta, type MethodDef, type StreamOptions, type ValueStream } from "./types.js";

/** What a proxy needs of the connection that made it. */
export interface ProxyHost {
  readonly isClosed: boolean;
  call(capId: number, method: string, args: unknown, options?: CallOptions, decode?: (v: unknown) => unknown): Promise<unknown>;
  stream<T>(capId: number, method: string, args: unknown, options?: StreamOptions): ValueStream<T>;
  send(frame: Frame): void;
  /** Makes (and registers) the proxy of a cap a result carries. */
  client<M>(def: CapDef<M>, capId: number, owned: boolean): Client<M>;
}

interface OwnedMeta extends ClientMeta {
  owned: boolean;
  released: boolean;
  disposed: boolean;
}

const finalizers = new FinalizationRegistry<{ host: ProxyHost; meta: OwnedMeta }>(({ host, meta }) => {
  releaseClient(host, meta);
});

/** A typed proxy of the peer's cap `capId`; `owned` proxies release one reference. */
export function newClient<M>(host: ProxyHost, def: CapDef<M>, capId: number, owned: boolean): Client<M> {
  const meta: OwnedMeta = { capId, def: def as CapDef, owned, released: false, disposed: false };
  const proxy: Record<string | symbol, unknown> = {};
  for (const [name, m] of Object.entries(def.methods as Record<string, MethodDef>)) {
    const split = (a: unknown, b: unknown): [unknown, CallOptions] =>
      m.args === "none" ? [undefined, (a ?? {}) as CallOptions] : [a, (b ?? {}) as CallOptions];
    // A released (or disposed) proxy refuses at once, sending nothing, as the Rust client's.
    proxy[name] =
      m.kind === "stream"
        ? (a?: unknown, b?: unknown) => {
            const refused = refusedAsReleased(meta);
            return refused !== undefined ? failedStream(refused) : host.stream(capId, name, ...split(a, b));
          }
        : (a?: unknown, b?: unknown) => {
            const refused = refusedAsReleased(meta);
            return refused !== undefined ? Promise.reject(refused) : host.call(capId, name, ...split(a, b), returnDecoder(host, m));
          };
  }
  Object.defineProperty(proxy, CLIENT, { value: meta });
  Object.defineProperty(proxy, Symbol.asyncDispose, { value: () => disposeClient(host, meta) });
  if (owned && capId > 1) finalizers.register(proxy, { host, meta }, meta);
  return proxy as Client<M>;
}

/**
 * Why a call through the proxy of `meta` fails locally: its reference was released (or
 * disposed), as the Rust client's `LocalError::Released`, `failed_precondition` `cap released`.
 */
export function refusedAsReleased(meta: ClientMeta): RpcError | undefined {
  return (meta as OwnedMeta).released ? rpcError("failed_precondition", "cap released") : undefined;
}

/** Releases the reference of `meta` once (PROTOCOL §7). */
export function releaseClient(host: ProxyHost, meta: ClientMeta): void {
  const m = meta as OwnedMeta;
  if (!m.owned || m.released) return;
  m.released = true;
  finalizers.unregister(m);
  if (m.capId > 1 && !host.isClosed) host.send(F.drop([{ id: m.capId, delta: 1 }]));
}

/**
 * Calls the disposal method once (errors ignored), then releases (PROTOCOL §7, §13.8). The
 * drop goes out right behind the call, as 0.10.0 sends it, so a server that is slow to
 * answer the disposal, or never does, still gets it; the promise waits for the answer.
 */
export async function disposeClient(host: ProxyHost, meta: ClientMeta): Promise<void> {
  const m = meta as OwnedMeta;
  const disposal = m.def.disposal;
  let answered: Promise<unknown> | undefined;
  if (disposal !== undefined && !m.disposed && !m.released) {
    m.disposed = true;
    // The call is sent here, synchronously; disposal errors are ignored.
    answered = host.call(m.capId, disposal, undefined).catch(() => undefined);
  }
  releaseClient(host, m);
  await answered;
}

/** The `decode` of method `m`'s result: a cap-returning method's caps become proxies. */
function returnDecoder(host: ProxyHost, m: MethodDef): (v: unknown) => unknown {
  if (m.kind !== "call" || m.returns === undefined) return passThrough;
  const shape = m.returns;
  const def = () => m.cap?.() ?? { name: "?", methods: {} };
  return (v) => {
    const fits = shape === "cap" ? v instanceof CapRef : shape === "array" ? Array.isArray(v) : isPlainRecord(v);
    if (!fits || !capSlots(v).every((x) => x instanceof CapRef)) {
      // Release what did arrive, so the peer's table does not keep them (§13.4).
      releaseRefs(host, v);
      throw rpcError("invalid_argument", `expected ${shape === "cap" ? "a cap" : `a ${shape} of caps`} in the result`);
    }
    const d = def();
    if (shape === "cap") return host.client(d, (v as CapRef).id, true);
    if (shape === "array") return (v as CapRef[]).map((r) => host.client(d, r.id, true));
    return Object.fromEntries(Object.entries(v as Record<string, CapRef>).map(([k, r]) => [k, host.client(d, r.id, true)]));
  };
}
