// A connection's limits (PROTOCOL §5) with their defaults, each as the Rust peer's, and the
// options a connection starts with.

import { MAX_DEPTH, MAX_RECORD_TABLE_BYTES } from "./codec.js";
import { DEFAULT_DECODE_BUDGET } from "./decode_budget.js";
import { DEFAULT_HELLO_BOUNDS } from "./frames.js";
import type { Impl, Policy } from "./serving.js";
import type { CapDef } from "./types.js";

/** Per-connection limits (PROTOCOL §5). */
export interface Limits {
  /** Our maxBytes: inbound messages above it are refused (goaway). Default 64 MiB. */
  maxBytes: number;
  /**
   * Pending outbound calls and streams, and cap-returning calls given up on whose result has not
   * arrived yet (its caps are ours to release); beyond it a call fails locally. Default 1024.
   */
  maxInFlightCalls: number;
  /** Entries of our cap table, ids 0 and 1 included. Default 1024. */
  maxCaps: number;
  /** Nesting depth of decoded values. Default 256. */
  maxDepth: number;
  /**
   * What the record definitions a peer sends (PROTOCOL §3.3) may keep together for the
   * connection's life, counted per key as its UTF-16 bytes plus 32; a definition past it is
   * a protocol error (goaway). Default 1 MiB, as the Rust peer's
   * `Limits::max_record_table_bytes`.
   */
  maxRecordTableBytes: number;
  /**
   * Heap every inbound message may take once decoded, whatever its size (PROTOCOL §13.11):
   * the budget of a message of `n` bytes is `decodeBudgetBase + decodeBudgetFactor × n`,
   * checked by a walk over its bytes before anything is decoded; a message over it is a
   * protocol error (goaway). Default 4 MiB (small messages are never refused), as the Rust
   * peer's `DecodeLimits::decode_budget_base`.
   */
  decodeBudgetBase: number;
  /**
   * Heap a decoded message may take per byte on the wire, besides `decodeBudgetBase`. Default
   * 3, as the Rust peer's `decode_budget_factor`: a message and what it decodes into stay
   * within about 4× its size. Dense messages (a large array of small numbers takes 8 bytes an
   * element) need more; README "Limits".
   */
  decodeBudgetFactor: number;
  /**
   * Most feature strings a peer's `hello` may carry; more is a protocol error (goaway). Default
   * 64, as the Rust peer's `Limits::max_hello_features`: the hello is kept for the connection's
   * life (`peer`).
   */
  maxHelloFeatures: number;
  /**
   * Longest string of a peer's `hello` (`mode`, `origin`, each feature), in bytes of UTF-8;
   * longer is a protocol error (goaway). Default 4 KiB, as the Rust peer's `max_hello_text`.
   */
  maxHelloText: number;
  /**
   * Bytes of UTF-8 (its keys and values) a peer's call may carry in `meta.context`, which its
   * handler's `CallContext` keeps for as long as it runs; beyond it the call fails
   * `invalid_argument` and no handler runs. Default 64 KiB, as the Rust peer's
   * `Limits::max_context_bytes`.
   */
  maxContextBytes: number;
  /**
   * Bytes the values this end's client streams have received and their consumers not read yet
   * may keep, across all the connection's streams, as the Rust client's
   * `Limits::max_buffered_stream_bytes`: each value is charged the length of the message it
   * came in plus 80 bytes (`VALUE_KEPT` in stream.ts: what it takes in V8 beside its bytes, and
   * its queue slot) until it is read or its stream let go (cancelled, or collected unread); a
   * stream that ended still counts the values it has not read, and a peer's error that ended it
   * at the length of its message (cut as a goaway's if it does not fit). The stream whose value
   * would go past it fails `resource_exhausted` and the server is sent `cancel {reason:
   * "client_cancel"}`. Default 64 MiB: the credit window bounds how many values a server may
   * send ahead (PROTOCOL §10, up to 1,024 a stream), not how large they are.
   */
  maxBufferedStreamBytes: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxBytes: 64 * 1024 * 1024,
  maxInFlightCalls: 1024,
  maxCaps: 1024,
  maxDepth: MAX_DEPTH,
  maxRecordTableBytes: MAX_RECORD_TABLE_BYTES,
  decodeBudgetBase: DEFAULT_DECODE_BUDGET.base,
  decodeBudgetFactor: DEFAULT_DECODE_BUDGET.factor,
  maxHelloFeatures: DEFAULT_HELLO_BOUNDS.maxFeatures,
  maxHelloText: DEFAULT_HELLO_BOUNDS.maxText,
  maxContextBytes: 64 * 1024,
  maxBufferedStreamBytes: 64 * 1024 * 1024,
};

/** How this peer presents itself and what it serves from the start. */
export interface ConnectionOptions {
  /** `hello.origin` (a claim; the host's attestation decides). Default the page's origin. */
  origin?: string;
  /** `hello.mode`. Default `"web"`. */
  mode?: "web" | "native";
  limits?: Partial<Limits>;
  /** Decides the peer's bootstraps of our caps (PROTOCOL §8). */
  policy?: Policy;
  /** Caps served before any frame is read. */
  serve?: Array<{ def: CapDef; impl: Impl }>;
}
