// The client side of a server stream (PROTOCOL §10): values buffered as they arrive, handed
// out by an async iterator, credit returned as the application consumes them, in batches of
// 8 and also whenever it waits on an empty buffer with consumed-but-unreturned values
// (§13.1, so a server with a small initial credit never stalls).
//
// A stream's buffer is bounded in values (`MAX_BUFFERED`) and, with every other client stream
// of its connection, in bytes (`StreamBytes`, `Limits.maxBufferedStreamBytes`), as the Rust
// client's (`client_stream_push` in crates/bunite-rpc/src/session/streams.rs): the credit
// window bounds how many values a server may send ahead, not how large they are.

import { clipPeerStatus } from "./peer_text.js";
import { RpcError, rpcError } from "./status.js";
import type { ValueStream } from "./types.js";

/** The client credit batch (PROTOCOL §5). */
export const CREDIT_BATCH = 8;
/**
 * The most values a stream buffers: the largest initial credit (1024) plus one batch. A
 * server that sends more ignored the credit window: the stream fails.
 */
export const MAX_BUFFERED = 1024 + CREDIT_BATCH;

/**
 * What every buffered value keeps beside its message's bytes, charged with them to
 * `maxBufferedStreamBytes` (the Rust client's `VALUE_KEPT`): an estimate of the smallest object
 * a value decodes into, a record with room for 4 fields (24 + 4 × 8 = 56 bytes in Node's 64-bit
 * layout, `RECORD` and `MIN_FIELDS` in decode_budget.ts), and its slots in the stream's
 * `buffer` and `sizes` (8 each), rounded up. Without it a server sending values of a few bytes
 * each would keep several times what is counted.
 */
export const VALUE_KEPT = 80;

/**
 * The bytes the unread values of a connection's client streams keep together, bounded by
 * `max` (`Limits.maxBufferedStreamBytes`). Each stream adds and takes off its own.
 */
export class StreamBytes {
  used = 0;
  constructor(readonly max: number) {}
}

/** What one stream has charged to its connection's {@link StreamBytes}. */
interface Account {
  readonly bytes: StreamBytes;
  kept: number;
}

/**
 * A stream whose consumer drops its handle is let go once the handle is collected, as the Rust
 * client's `ClientStream` is on drop: one still open is cancelled (`cancel {reason:
 * "client_cancel"}`, its in-flight slot freed), and one that ended or failed gives back what
 * its unread values and error were charged. The connection holds the `ClientStream`, never
 * the handle, so a dropped handle can be collected while the stream is open.
 */
const dropped = new FinalizationRegistry<ClientStream<unknown>>((s) => s.cancel());

/** What the application holds of a stream: the `ClientStream` it reads, let go once collected. */
export class StreamHandle<T> implements ValueStream<T> {
  constructor(private readonly stream: ClientStream<T>) {
    dropped.register(this, stream as ClientStream<unknown>);
  }

  get id(): number {
    return this.stream.id;
  }

  next(): Promise<IteratorResult<T>> {
    return this.stream.next(this);
  }

  return(): Promise<IteratorResult<T>> {
    return this.stream.return();
  }

  cancel(): void {
    this.stream.cancel();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** A stream that failed before anything was sent: it reads `error`, then ends. */
export function failedStream<T>(error: RpcError): ValueStream<T> {
  const s = new ClientStream<T>(0, 0, { credit() {}, cancel() {}, done() {} }, new StreamBytes(0));
  s.fail(error);
  return new StreamHandle(s);
}

export interface StreamHooks {
  credit(messages: number): void;
  cancel(): void;
  done(): void;
  /**
   * The consumer is through with the stream: it read its end or its error, or cancelled it
   * (called at least once, maybe more). What watched the stream for the consumer, an abort
   * signal's listener, can go.
   */
  settled?(): void;
}

/** The reason of the `cancel` sent to a server whose value overflowed a stream (`push`). */
export type OverflowReason = "stream_credit_window" | "client_cancel";

/**
 * A `next()` waiting for a value. It holds the `StreamHandle` it was called on, so that a
 * handle whose only use left is the awaited `next()` (`await conn.stream(...).next()`) is not
 * collected, and the stream cancelled, before that value comes: in Rust the stream cannot be
 * dropped while its `next()` is awaited either.
 */
type Waiter<T> = { resolve(r: IteratorResult<T>): void; reject(e: RpcError): void; owner?: object };

/**
 * One client stream's state: what the connection pushes into and the application's
 * `StreamHandle` reads from.
 */
export class ClientStream<T> {
  private readonly buffer: T[] = [];
  /** What each value of `buffer` is charged (see {@link VALUE_KEPT}). */
  private readonly sizes: number[] = [];
  /** What the error waiting to be read is charged: the length of the peer's message it came in. */
  private errorSize = 0;
  private readonly account: Account;
  private unreturned = 0;
  private finished = false;
  private error: RpcError | undefined;
  private waiter: Waiter<T> | undefined;

  constructor(
    readonly id: number,
    readonly capId: number,
    private readonly hooks: StreamHooks,
    /** The bytes of the connection's client streams, this one's charged to it. */
    bytes: StreamBytes,
    /** The peer's call whose handler opened this stream, if any (PROTOCOL §11). */
    readonly parentCallId?: number,
  ) {
    this.account = { bytes, kept: 0 };
  }

  /**
   * A value arrived in a message of `size` bytes. If it overflowed the credit window or the
   * connection's bound in bytes, the stream failed and this returns the reason of the `cancel`
   * the server is sent, as the Rust client's `overflow`: `stream_credit_window` for the window,
   * `client_cancel` for the bytes. A value handed straight to a waiting `next()` is not
   * buffered, so not charged.
   */
  push(value: T, size = 0): OverflowReason | undefined {
    if (this.finished) return undefined;
    if (this.waiter !== undefined) {
      const w = this.waiter;
      this.waiter = undefined;
      this.consumed();
      w.resolve({ value, done: false });
      return undefined;
    }
    if (this.buffer.length >= MAX_BUFFERED) {
      this.fail(rpcError("resource_exhausted", "the server sent beyond its credit window", "stream_credit_window"));
      return "stream_credit_window";
    }
    const charge = size + VALUE_KEPT;
    const { bytes } = this.account;
    if (bytes.used + charge > bytes.max) {
      const would = bytes.used + charge;
      this.fail(
        rpcError(
          "resource_exhausted",
          `stream values not yet read would take ${would} bytes, more than the connection's limit of ${bytes.max} bytes (maxBufferedStreamBytes)`,
        ),
      );
      return "client_cancel";
    }
    this.buffer.push(value);
    this.sizes.push(charge);
    this.charge(charge);
    return undefined;
  }

  end(): void {
    if (this.finished) return;
    this.finished = true;
    this.hooks.done();
    const w = this.waiter;
    this.waiter = undefined;
    if (w === undefined) return;
    this.hooks.settled?.();
    w.resolve({ value: undefined, done: true });
  }

  /**
   * Fails the stream with `error`, read after the values still buffered. A peer's error (`size`,
   * the length of its message, above 0) that waits to be read is charged that size while it
   * fits the connection's bound, and is kept cut as a goaway's is (`clipPeerStatus`) when it
   * does not, as the Rust client's `end_client_stream`.
   */
  fail(error: RpcError, size = 0): void {
    if (this.finished) return;
    this.finished = true;
    this.hooks.done();
    const w = this.waiter;
    this.waiter = undefined;
    if (w !== undefined) {
      this.hooks.settled?.();
      return w.reject(error);
    }
    const { bytes } = this.account;
    if (size > 0 && bytes.used + size <= bytes.max) {
      this.errorSize = size;
      this.charge(size);
    } else if (size > 0) {
      error = new RpcError(clipPeerStatus(error.toStatus()));
    }
    this.error = error;
  }

  /** The next value; `owner`, the handle it was asked through, is kept while it waits. */
  next(owner?: object): Promise<IteratorResult<T>> {
    if (this.buffer.length > 0) {
      const value = this.buffer.shift() as T;
      this.charge(-(this.sizes.shift() as number));
      this.consumed();
      return Promise.resolve({ value, done: false });
    }
    if (this.error !== undefined) {
      const e = this.error;
      this.error = undefined;
      this.charge(-this.errorSize);
      this.errorSize = 0;
      this.hooks.settled?.();
      return Promise.reject(e);
    }
    if (this.finished) {
      this.hooks.settled?.();
      return Promise.resolve({ value: undefined, done: true });
    }
    if (this.waiter !== undefined) return Promise.reject(rpcError("failed_precondition", "next() while another next() waits"));
    // Waiting on an empty buffer: return what was consumed so far (§13.1).
    this.returnCredit();
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject, owner }));
  }

  return(): Promise<IteratorResult<T>> {
    this.cancel();
    return Promise.resolve({ value: undefined, done: true });
  }

  /**
   * Cancels the stream; a waiting `next()` ends (or rejects with `error`). One that ended or
   * failed lets go of what it has not read.
   */
  cancel(error?: RpcError): void {
    this.letGo();
    this.hooks.settled?.();
    if (this.finished) return;
    this.finished = true;
    this.hooks.cancel();
    const w = this.waiter;
    this.waiter = undefined;
    if (w !== undefined) {
      if (error !== undefined) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** Drops the values and the error not yet read, and takes what they were charged off. */
  private letGo(): void {
    this.buffer.length = 0;
    this.sizes.length = 0;
    this.error = undefined;
    this.errorSize = 0;
    this.charge(-this.account.kept);
  }

  private charge(n: number): void {
    this.account.kept += n;
    this.account.bytes.used += n;
  }

  private consumed(): void {
    this.unreturned += 1;
    if (this.unreturned >= CREDIT_BATCH) this.returnCredit();
  }

  private returnCredit(): void {
    if (this.unreturned > 0 && !this.finished) this.hooks.credit(this.unreturned);
    this.unreturned = 0;
  }
}
