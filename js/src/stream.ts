// The client side of a server stream (PROTOCOL §10): values buffered as they arrive, handed
// out by an async iterator, credit returned as the application consumes them, in batches of
// 8 and also whenever it waits on an empty buffer with consumed-but-unreturned values
// (§13.1, so a server with a small initial credit never stalls).

import { rpcError, type RpcError } from "./status.js";
import type { ValueStream } from "./types.js";

/** The client credit batch (PROTOCOL §5). */
export const CREDIT_BATCH = 8;
/**
 * The most values a stream buffers: the largest initial credit (1024) plus one batch. A
 * server that sends more ignored the credit window: the stream fails.
 */
export const MAX_BUFFERED = 1024 + CREDIT_BATCH;

export interface StreamHooks {
  credit(messages: number): void;
  cancel(): void;
  done(): void;
}

type Waiter<T> = { resolve(r: IteratorResult<T>): void; reject(e: RpcError): void };

export class ClientStream<T> implements ValueStream<T> {
  private readonly buffer: T[] = [];
  private unreturned = 0;
  private finished = false;
  private error: RpcError | undefined;
  private waiter: Waiter<T> | undefined;

  constructor(
    readonly id: number,
    readonly capId: number,
    private readonly hooks: StreamHooks,
    /** The peer's call whose handler opened this stream, if any (PROTOCOL §11). */
    readonly parentCallId?: number,
  ) {}

  /** A value arrived; false if it overflowed the window (the stream then failed). */
  push(value: T): boolean {
    if (this.finished) return true;
    if (this.waiter !== undefined) {
      const w = this.waiter;
      this.waiter = undefined;
      this.consumed();
      w.resolve({ value, done: false });
      return true;
    }
    if (this.buffer.length >= MAX_BUFFERED) {
      this.fail(rpcError("resource_exhausted", "the server sent beyond its credit window", "stream_credit_window"));
      return false;
    }
    this.buffer.push(value);
    return true;
  }

  end(): void {
    if (this.finished) return;
    this.finished = true;
    this.hooks.done();
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve({ value: undefined, done: true });
  }

  fail(error: RpcError): void {
    if (this.finished) return;
    this.finished = true;
    this.hooks.done();
    const w = this.waiter;
    this.waiter = undefined;
    if (w !== undefined) w.reject(error);
    else this.error = error;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.buffer.length > 0) {
      const value = this.buffer.shift() as T;
      this.consumed();
      return Promise.resolve({ value, done: false });
    }
    if (this.error !== undefined) {
      const e = this.error;
      this.error = undefined;
      return Promise.reject(e);
    }
    if (this.finished) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter !== undefined) return Promise.reject(rpcError("failed_precondition", "next() while another next() waits"));
    // Waiting on an empty buffer: return what was consumed so far (§13.1).
    this.returnCredit();
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  return(): Promise<IteratorResult<T>> {
    this.cancel();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Cancels the stream; a waiting `next()` ends (or rejects with `error`). */
  cancel(error?: RpcError): void {
    if (this.finished) return;
    this.finished = true;
    this.buffer.length = 0;
    this.hooks.cancel();
    const w = this.waiter;
    this.waiter = undefined;
    if (w !== undefined) {
      if (error !== undefined) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): this {
    return this;
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
