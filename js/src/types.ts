// The types the generated definitions (`bunite-rpc typegen`) import: a cap's definition, the
// typed client of a cap, call and stream options, and a stream of values.

/** One method of a cap definition. */
export type MethodDef =
  | {
      readonly kind: "call";
      /** `"none"`: the method takes no params, so its one argument is the options. */
      readonly args?: "none";
      readonly idempotent?: boolean;
      /** A call returning caps: one, an array, or a string-keyed record of them. */
      readonly returns?: "cap" | "array" | "record";
      /** The definition of the returned caps (a thunk: definitions may refer to each other). */
      readonly cap?: () => CapDef<any>;
    }
  | { readonly kind: "stream"; readonly args?: "none"; readonly initialCredit?: number };

/**
 * A cap's definition: its wire name, version, disposal method and methods. `M` is the
 * interface of its client's methods (generated beside it); the definition lists exactly its
 * methods.
 */
export interface CapDef<M = any> {
  readonly name: string;
  readonly version?: string;
  /** The wire name of the disposal method, if the cap has one. */
  readonly disposal?: string;
  readonly methods: unknown extends M ? { readonly [name: string]: MethodDef } : { readonly [K in keyof M]-?: MethodDef };
}

/** Options of one call. */
export interface CallOptions {
  /** Aborting it cancels the call: the peer is sent `cancel`, the call fails `cancelled`. */
  signal?: AbortSignal;
  /** A relative deadline (PROTOCOL §11): the call fails `deadline_exceeded` 500 ms after it. */
  deadlineMs?: number;
  /** The `meta.context` string map. */
  context?: Record<string, string>;
  /** The id of the call being handled, when calling from inside a handler (`ctx.callId`). */
  parentCallId?: number;
}

/** Options of one stream. */
export interface StreamOptions {
  /** Aborting it cancels the stream (`cancel {reason: "client_cancel"}`). */
  signal?: AbortSignal;
  /** The `meta.context` string map. */
  context?: Record<string, string>;
  parentCallId?: number;
}

/**
 * The values of a server stream: an async iterator that returns credit to the server as the
 * values are consumed (per 8, and whenever it waits on an empty buffer). Breaking out of
 * `for await` cancels it.
 */
export interface ValueStream<T> extends AsyncIterableIterator<T> {
  /** Cancels the stream: the server stops its source; the iterator ends. */
  cancel(): void;
  /** The call id of the stream. */
  readonly id: number;
}

/** The private handle every client proxy carries. */
export const CLIENT: unique symbol = Symbol("bunite.client");

/** What `release`, `dispose` and `capId` see of a proxy. */
export interface ClientMeta {
  readonly capId: number;
  readonly def: CapDef;
}

/** A typed client of a peer's cap: the methods of `M`, plus the handle. */
export type Client<M = any> = M & {
  readonly [CLIENT]: ClientMeta;
  [Symbol.asyncDispose](): Promise<void>;
};
