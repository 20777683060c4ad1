// Frames (PROTOCOL §4): their types, builders that emit the reference's key orders (an
// object literal's order is its wire order), and the validation of inbound frames.

import { CapRef } from "./codec.js";
import { utf8Length } from "./peer_text.js";
import { type Status } from "./status.js";

export const PROTOCOL_VERSION = 1;

export interface CallMeta {
  parentCallId?: number;
  deadlineMs?: number;
  context?: Record<string, string>;
}

export type Frame =
  | { op: "hello"; v: number; mode: string; features: string[]; maxBytes: number; origin: string }
  | { op: "goaway"; reason?: string; error?: Status }
  | { op: "call"; id: number; target: { kind: "cap"; id: number }; method: string; args: unknown; meta: CallMeta | undefined }
  | { op: "result"; id: number; ok: true; value: unknown }
  | { op: "result"; id: number; ok: false; error: unknown }
  | { op: "cancel"; id: number; reason: string | undefined }
  | { op: "stream"; id: number; ev: "next"; value: unknown }
  | { op: "stream"; id: number; ev: "credit"; credit: { messages: number } }
  | { op: "stream"; id: number; ev: "end" }
  | { op: "stream"; id: number; ev: "error"; error: unknown }
  | { op: "drop"; caps: Array<{ id: number; delta: number }> }
  | { op: "cap_revoked"; capIds: number[] };

export const hello = (mode: string, maxBytes: number, origin: string): Frame => ({
  op: "hello",
  v: PROTOCOL_VERSION,
  mode,
  features: [],
  maxBytes,
  origin,
});

export const call = (id: number, cap: number, method: string, args: unknown, meta: CallMeta | undefined): Frame => ({
  op: "call",
  id,
  target: { kind: "cap", id: cap },
  method,
  args,
  meta,
});

export const ok = (id: number, value: unknown): Frame => ({ op: "result", id, ok: true, value });
export const fail = (id: number, error: Status): Frame => ({ op: "result", id, ok: false, error: status(error) });
export const cancel = (id: number, reason: string | undefined): Frame => ({ op: "cancel", id, reason });
export const next = (id: number, value: unknown): Frame => ({ op: "stream", id, ev: "next", value });
export const credit = (id: number, messages: number): Frame => ({ op: "stream", id, ev: "credit", credit: { messages } });
export const end = (id: number): Frame => ({ op: "stream", id, ev: "end" });
export const streamError = (id: number, error: Status): Frame => ({ op: "stream", id, ev: "error", error: status(error) });
export const drop = (caps: Array<{ id: number; delta: number }>): Frame => ({ op: "drop", caps });
export const capRevoked = (capIds: number[]): Frame => ({ op: "cap_revoked", capIds });

export function goaway(reason: string | undefined, error: Status | undefined): Frame {
  const f: { op: "goaway"; reason?: string; error?: Status } = { op: "goaway" };
  if (reason !== undefined) f.reason = reason;
  if (error !== undefined) f.error = status(error);
  return f;
}

/** A Status in the wire's key order, absent keys left out. */
function status(s: Status): Status {
  const out: Status = { code: s.code };
  if (s.message !== undefined) out.message = s.message;
  if (s.details !== undefined) out.details = s.details;
  if (s.retry !== undefined) out.retry = s.retry;
  return out;
}

/** Why an inbound frame is not a frame: a protocol error (PROTOCOL §11). */
export class FrameError extends Error {}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Map) && !ArrayBuffer.isView(v) && !(v instanceof CapRef);

const isId = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER;
const isCapId = (v: unknown): v is number => isId(v) && v <= 0xffff_ffff;

/**
 * What a peer's `hello` may hold: it is kept for the connection's life (PROTOCOL §6). As the
 * Rust peer's `HelloBounds`, a hello past them is a protocol error, not cut.
 */
export interface HelloBounds {
  /** Most feature strings. */
  maxFeatures: number;
  /** Longest string (`mode`, `origin`, each feature), in bytes of UTF-8. */
  maxText: number;
}

/** The Rust peer's defaults (`DecodeLimits::DEFAULT_MAX_HELLO_FEATURES`, `…_TEXT`). */
export const DEFAULT_HELLO_BOUNDS: HelloBounds = { maxFeatures: 64, maxText: 4096 };

/** Checks a decoded value is a frame; returns it typed, or throws a FrameError. */
export function validate(v: unknown, hello: HelloBounds = DEFAULT_HELLO_BOUNDS): Frame {
  if (!isRecord(v)) throw new FrameError("a frame is a record");
  const need = (ok: boolean, what: string): void => {
    if (!ok) throw new FrameError(`${String(v["op"])} frame: ${what}`);
  };
  switch (v["op"]) {
    case "hello":
      return validHello(v, hello);
    case "goaway":
      need(v["reason"] === undefined || typeof v["reason"] === "string", "reason");
      break;
    case "call": {
      const t = v["target"];
      need(isId(v["id"]), "id");
      need(isRecord(t) && t["kind"] === "cap" && isCapId(t["id"]), "target");
      need(typeof v["method"] === "string", "method");
      const m = v["meta"];
      need(m === undefined || m === null || isRecord(m), "meta");
      if (isRecord(m)) {
        need(m["parentCallId"] === undefined || isId(m["parentCallId"]), "meta.parentCallId");
        need(m["deadlineMs"] === undefined || typeof m["deadlineMs"] === "number", "meta.deadlineMs");
        const ctx = m["context"];
        need(ctx === undefined || (isRecord(ctx) && Object.values(ctx).every((x) => typeof x === "string")), "meta.context");
      }
      break;
    }
    case "result":
      need(isId(v["id"]), "id");
      need(typeof v["ok"] === "boolean", "ok");
      break;
    case "cancel":
      need(isId(v["id"]), "id");
      need(v["reason"] === undefined || v["reason"] === null || typeof v["reason"] === "string", "reason");
      break;
    case "stream":
      need(isId(v["id"]), "id");
      need(["next", "credit", "end", "error"].includes(v["ev"] as string), "ev");
      break;
    case "drop": {
      const caps = v["caps"];
      need(Array.isArray(caps), "caps");
      for (const c of caps as unknown[]) {
        need(isRecord(c) && isCapId(c["id"]) && isId(c["delta"]), "caps entry");
      }
      break;
    }
    case "cap_revoked":
      need(Array.isArray(v["capIds"]) && (v["capIds"] as unknown[]).every(isCapId), "capIds");
      break;
    default:
      throw new FrameError(`unknown op ${JSON.stringify(String(v["op"]).slice(0, 40))}`);
  }
  return v as unknown as Frame;
}

/** The Rust decoder's default `hello.maxBytes` (`DecodeLimits::DEFAULT_MAX_BYTES`). */
const DEFAULT_PEER_MAX_BYTES = 64 * 1024 * 1024;

/**
 * A peer's `hello` as the Rust decoder reads it (`hello` in bunite-wire's frame_codec/validate.rs):
 * `v` must be the protocol version; a field that is missing (or `undefined`) takes its default
 * (`mode` "native", no features, `maxBytes` 64 MiB, `origin` ""); one of the wrong type, or past
 * `bounds`, is a protocol error `invalid hello frame: <field>`. `maxBytes` is any number from 0
 * up, cut down to an integer (or a BigInt).
 */
function validHello(v: Record<string, unknown>, bounds: HelloBounds): Frame {
  if (v["v"] !== PROTOCOL_VERSION) throw new FrameError(`unsupported protocol version ${describe(v["v"])}`);
  const invalid = (field: string) => new FrameError(`invalid hello frame: ${field}`);
  const short = (s: string): boolean => s.length <= bounds.maxText / 3 || utf8Length(s) <= bounds.maxText;
  const text = (field: string, fallback: string): string => {
    const s = v[field] === undefined ? fallback : v[field];
    if (typeof s !== "string" || !short(s)) throw invalid(field);
    return s;
  };
  const features = v["features"] === undefined ? [] : v["features"];
  if (!Array.isArray(features) || features.length > bounds.maxFeatures) throw invalid("features");
  if (!features.every((f): f is string => typeof f === "string" && short(f))) throw invalid("features");
  const max = v["maxBytes"] === undefined ? DEFAULT_PEER_MAX_BYTES : v["maxBytes"];
  const maxBytes = typeof max === "bigint" || typeof max === "number" ? Math.floor(Number(max)) : Number.NaN;
  if (!(maxBytes >= 0)) throw invalid("maxBytes");
  return { op: "hello", v: PROTOCOL_VERSION, mode: text("mode", "native"), features, maxBytes, origin: text("origin", "") };
}

/** A short description of a bad `hello.v` for the error, as the Rust peer's `describe`: a string's first 32 characters, no array or record spelled out. */
function describe(v: unknown): string {
  if (typeof v === "string") {
    let head = "";
    let n = 0;
    for (const c of v) {
      if (n++ === 32) break;
      head += c;
    }
    return JSON.stringify(head);
  }
  if (v === undefined || v === null || typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") return String(v);
  return "a non-number";
}
