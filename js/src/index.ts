// bunite-rpc: the web client of the bunite capability RPC protocol, for the browser, Node
// and Bun. `connect` a WebSocket (optionally inside the sealed pipe), `bootstrap` caps with
// the definitions `bunite-rpc typegen` writes, call them; see README.md.

import { refusedAsReleased } from "./client_proxy.js";
import { Connection, clientConnections, type ConnectionOptions } from "./connection.js";
import { sealed } from "./sealed.js";
import { failedStream } from "./stream.js";
import { openWebSocket, type WebSocketClass } from "./transport.js";
import { CLIENT, type CallOptions, type Client, type StreamOptions, type ValueStream } from "./types.js";

export { CapRef, FrameDecoder, FrameEncoder, MAX_DEPTH, decodeVarint, encodeVarint } from "./codec.js";
export { DEFAULT_DECODE_BUDGET, DecodeError, type DecodeBudget, type DecodeErrorKind } from "./decode_budget.js";
export { Connection, DEFAULT_LIMITS, type ConnectionOptions, type Limits } from "./connection.js";
export { PROTOCOL_VERSION, type Frame } from "./frames.js";
export { REPLAY_WINDOW, SEALED_OVERHEAD, SealedOpenError, importKey, keyFromHex, open, seal, sealed, type OpenErrorKind } from "./sealed.js";
export type { CallContext, IfExists, Impl, Policy, ServeHandle, ServeOptions } from "./serving.js";
export { RpcError, type Code, type Retry, type Status } from "./status.js";
export { memoryPair, openWebSocket, webSocketTransport, type Transport, type TransportEvents, type WebSocketClass } from "./transport.js";
export { CLIENT, type CallOptions, type CapDef, type Client, type ClientMeta, type MethodDef, type StreamOptions, type ValueStream } from "./types.js";

/** Options of `connect`: the connection's, plus the socket's. */
export interface ConnectOptions extends ConnectionOptions {
  /** Run the connection inside the AES-256-GCM pipe with this 32-byte key. */
  key?: Uint8Array | CryptoKey;
  /** The WebSocket class (default: the global one). */
  WebSocket?: WebSocketClass;
}

/** Opens a WebSocket to `url` (`ws://host:port/rpc`) and starts a connection over it. */
export async function connect(url: string | URL, options: ConnectOptions = {}): Promise<Connection> {
  const ws = await openWebSocket(url, options.WebSocket);
  const transport = options.key !== undefined ? sealed(ws, options.key) : ws;
  return new Connection(transport, options);
}

function meta(client: Client) {
  const m = client?.[CLIENT];
  if (m === undefined) throw new TypeError("not a bunite client");
  return m;
}

/** The connection that made `client`. */
export function connectionOf(client: Client): Connection {
  const c = clientConnections.get(meta(client));
  if (c === undefined) throw new TypeError("not a bunite client");
  return c;
}

/**
 * Releases the reference `client` holds (a `drop`); its calls and streams then fail locally,
 * `failed_precondition` `cap released`, sending nothing. Once only.
 */
export function release(client: Client): void {
  connectionOf(client).releaseMeta(meta(client));
}

/** Calls the cap's disposal method once (errors ignored), then releases it. */
export function dispose(client: Client): Promise<void> {
  return connectionOf(client).dispose(meta(client));
}

/** The cap-id a client refers to. */
export function capId(client: Client): number {
  return meta(client).capId;
}

/** Calls any method by name, untyped (for tools and tests). */
export function callMethod(client: Client, method: string, args?: unknown, options?: CallOptions): Promise<unknown> {
  const released = refusedAsReleased(meta(client));
  if (released !== undefined) return Promise.reject(released);
  return connectionOf(client).call(capId(client), method, args, options);
}

/** Opens any stream by name, untyped. */
export function streamMethod<T = unknown>(client: Client, method: string, args?: unknown, options?: StreamOptions): ValueStream<T> {
  const released = refusedAsReleased(meta(client));
  if (released !== undefined) return failedStream<T>(released);
  return connectionOf(client).stream<T>(capId(client), method, args, options);
}
