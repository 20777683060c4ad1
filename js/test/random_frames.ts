// A seeded generator of what a hostile peer may send, for `random_frames.test.ts`: frames of
// every shape of PROTOCOL §4 (to the client's calls and streams, and calls to the caps it
// serves), structured mutations of them (wrong types, extreme ids and counts, unknown ops,
// deep nesting, Maps for records) and raw bytes (valid frames mutated, truncated msgpack,
// record definitions and references, bad UTF-8, oversize lengths, bad extensions). One
// seed gives one sequence, always the same.

import { CapRef } from "../src/index.js";

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** An integer in 0..n-1. */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
}

/** One thing the peer sends: a value for its (stateful) encoder, or raw bytes. */
export type Out = { value: unknown } | { bytes: Uint8Array };

/** Numbers a validator may get wrong. */
const EXTREME = [0, 1, -1, 2 ** 31, 2 ** 32, 2 ** 32 - 1, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 1e300, -0, 0.5, NaN, Infinity, -Infinity, 2 ** 64];
/** Values of the wrong type for any field. */
const WRONG = (r: Rng): unknown =>
  r.pick<() => unknown>([
    () => null,
    () => undefined,
    () => "7",
    () => r.pick(EXTREME),
    () => true,
    () => [],
    () => [1, "x"],
    () => ({}),
    () => ({ id: 2 }),
    () => new Map<unknown, unknown>([[1, 2]]),
    () => new CapRef(r.int(8)),
    () => new Uint8Array(3),
    () => "x".repeat(r.pick([0, 1, 5000])),
    () => BigInt(2) ** BigInt(63),
    () => new Date(0),
  ])();

export interface Known {
  /** Ids of the calls and streams the client sent. */
  clientIds: number[];
  /** Ids the peer used for its own calls. */
  peerIds: number[];
  /** Cap-ids the client has exported to the peer (from its results). */
  exported: number[];
}

export class FrameGen {
  private nextPeerId = 1;
  constructor(
    private readonly r: Rng,
    private readonly known: Known,
    /** The share of messages that are mutated or raw bytes (the rest are well-formed frames). */
    private readonly hostile: number,
  ) {}

  /** A random value, up to `depth` deep. */
  value(depth = 3): unknown {
    const r = this.r;
    const leaf = [
      () => undefined,
      () => null,
      () => r.chance(0.5),
      () => r.int(200) - 50,
      () => r.pick(EXTREME),
      () => "s".repeat(r.int(40)),
      () => "é\u{1f600}\ufeff",
      () => new Uint8Array(r.int(20)),
      () => new CapRef(r.pick([0, 1, 2, 3, 7, 2 ** 32 - 1])),
      () => new Date(r.int(1e12)),
    ];
    if (depth <= 0 || r.chance(0.5)) return r.pick(leaf)();
    return r.pick<() => unknown>([
      () => Array.from({ length: r.int(5) }, () => this.value(depth - 1)),
      () => Object.fromEntries(Array.from({ length: r.int(5) }, (_, i) => [r.pick(["a", "b", "count", "op", `k${i}`]), this.value(depth - 1)])),
      () => new Map([[this.value(0), this.value(depth - 1)]]),
      () => new Set([this.value(depth - 1)]),
    ])();
  }

  /** An id the client knows, one it never used, or an extreme one. */
  private clientId(): unknown {
    const r = this.r;
    if (this.known.clientIds.length > 0 && r.chance(0.8)) return r.pick(this.known.clientIds);
    return r.chance(0.97) ? r.int(40) : r.pick(EXTREME);
  }

  private capId(): unknown {
    const r = this.r;
    if (this.known.exported.length > 0 && r.chance(0.85)) return r.pick(this.known.exported);
    return r.chance(0.99) ? r.int(8) : r.pick(EXTREME);
  }

  private status(): unknown {
    const r = this.r;
    const codes = ["not_found", "failed_precondition", "invalid_argument", "cancelled", "unavailable", "internal", "bogus", ""];
    const s: Record<string, unknown> = { code: r.pick(codes) };
    if (r.chance(0.7)) s["message"] = r.chance(0.1) ? "m".repeat(3000) : "peer says no";
    if (r.chance(0.3)) s["details"] = { reason: r.pick(["revoked", "max_frame_bytes", "x".repeat(2000)]) };
    if (r.chance(0.2)) s["retry"] = r.pick([{ kind: "never" }, { kind: "after-cooldown", minMs: r.pick(EXTREME) }, { kind: 5 }]);
    return r.chance(0.03) ? WRONG(r) : s;
  }

  private meta(): unknown {
    const r = this.r;
    if (r.chance(0.5)) return undefined;
    const m: Record<string, unknown> = {};
    if (r.chance(0.4)) m["deadlineMs"] = r.pick([1, 5, 50, 1e12, -1, 0, NaN, Infinity]);
    if (r.chance(0.3)) m["parentCallId"] = r.chance(0.95) ? (this.known.peerIds.length > 0 ? r.pick(this.known.peerIds) : r.int(9)) : r.pick(EXTREME);
    if (r.chance(0.3)) m["context"] = r.chance(0.95) ? { a: "b" } : WRONG(r);
    return m;
  }

  /** A well-formed frame of a random op. */
  frame(): Record<string, unknown> {
    const r = this.r;
    const methods = ["echo", "slow", "make", "makeAll", "ticks", "close", "nope", "bootstrap"];
    const peerCall = (): Record<string, unknown> => {
      const id = r.chance(0.1) && this.known.peerIds.length > 0 ? r.pick(this.known.peerIds) : this.nextPeerId++;
      this.known.peerIds.push(id);
      const boot = this.known.exported.length === 0 ? r.chance(0.7) : r.chance(0.1);
      const target = r.chance(0.98) ? { kind: "cap", id: boot ? 0 : this.capId() } : WRONG(r);
      const args = boot ? (r.chance(0.9) ? { name: r.chance(0.8) ? "t.fuzz" : r.pick(["t.none", "bunite.Runtime"]) } : this.value()) : r.chance(0.5) ? { n: r.int(20) } : this.value();
      const method = boot ? "bootstrap" : r.chance(0.9) ? r.pick(methods.slice(0, 6)) : r.pick(methods);
      return { op: "call", id, target, method, args, meta: this.meta() };
    };
    // A goaway ends the sequence: rarely.
    if (r.chance(0.005)) return { op: "goaway", reason: r.pick([undefined, "peer_closing", "x".repeat(3000)]), error: r.chance(0.5) ? this.status() : undefined };
    return r.pick<() => Record<string, unknown>>([
      () => ({ op: "hello", v: 1, mode: "native", features: [], maxBytes: r.pick([1 << 20, 64, 0, 1 << 30]), origin: "raw" }),
      () => ({ op: "result", id: this.clientId(), ok: true, value: this.resultValue() }),
      () => ({ op: "result", id: this.clientId(), ok: true, value: this.resultValue() }),
      () => ({ op: "result", id: this.clientId(), ok: false, error: this.status() }),
      () => ({ op: "stream", id: this.clientId(), ev: "next", value: this.value() }),
      () => ({ op: "stream", id: this.clientId(), ev: "next", value: { count: r.int(9) } }),
      () => ({ op: "stream", id: this.clientId(), ev: "end" }),
      () => ({ op: "stream", id: this.clientId(), ev: "error", error: this.status() }),
      () => ({ op: "stream", id: this.peerId(), ev: "credit", credit: { messages: r.chance(0.8) ? r.int(40) : r.pick(EXTREME) } }),
      () => ({ op: "cancel", id: this.peerId(), reason: r.pick([undefined, "client_cancel", "deadline_exceeded", "r".repeat(2000)]) }),
      () => ({ op: "drop", caps: Array.from({ length: r.int(3) + 1 }, () => ({ id: this.capId(), delta: r.chance(0.97) ? 1 : r.pick(EXTREME) })) }),
      () => ({ op: "cap_revoked", capIds: Array.from({ length: r.int(3) + 1 }, () => this.capId()) }),
      peerCall,
      peerCall,
      peerCall,
    ])();
  }

  private peerId(): unknown {
    const r = this.r;
    if (this.known.peerIds.length > 0 && r.chance(0.8)) return r.pick(this.known.peerIds);
    return r.chance(0.97) ? r.int(40) : r.pick(EXTREME);
  }

  /** A result value: a cap, caps in containers, or anything. */
  private resultValue(): unknown {
    const r = this.r;
    const cap = () => new CapRef(r.chance(0.9) ? 2 + r.int(30) : r.pick([0, 1, 2 ** 32 - 1]));
    return r.pick<() => unknown>([
      cap,
      cap,
      () => [cap(), cap()],
      () => ({ a: cap(), b: [cap()] }),
      () => ({ count: r.int(100) }),
      () => this.value(),
    ])();
  }

  /** A frame with one structured mutation. */
  mutated(): unknown {
    const r = this.r;
    const f = this.frame();
    const keys = Object.keys(f);
    switch (r.int(9)) {
      case 0:
        f[r.pick(keys)] = WRONG(r);
        return f;
      case 1:
        delete f[r.pick(keys)];
        return f;
      case 2:
        f["op"] = r.pick(["bogus", "", "HELLO", "call ", 5]);
        return f;
      case 3:
        f[r.pick(["extra", "x".repeat(100), "__proto__", "constructor"])] = this.value();
        return f;
      case 4:
        return new Map(Object.entries(f));
      case 5: {
        // Deep nesting around the depth limit, in the frame's payload.
        let v: unknown = 1;
        const depth = r.pick([200, 254, 255, 256, 257, 400]);
        for (let i = 0; i < depth; i++) v = r.chance(0.5) ? [v] : { a: v };
        f[r.pick(["value", "args", "error", "caps"])] = v;
        return f;
      }
      case 6:
        return WRONG(r);
      case 7:
        if ("id" in f) f["id"] = r.pick(EXTREME);
        return f;
      default:
        if (f["op"] === "stream") f["ev"] = r.pick(["bogus", 1, undefined, "next"]);
        else f["value"] = Array.from({ length: r.pick([0, 100, 5000]) }, () => new CapRef(2 + r.int(4)));
        return f;
    }
  }

  /** Raw bytes: a valid encoding mutated (from `encode`), or a crafted message. */
  bytes(encode: (v: unknown) => Uint8Array): Uint8Array {
    const r = this.r;
    switch (r.int(6)) {
      case 0:
      case 1:
        return mutateBytes(r, encode(this.frame()));
      case 2: {
        const b = encode(this.frame());
        return b.subarray(0, r.int(b.length));
      }
      default:
        return crafted(r);
    }
  }

  /** The next thing to send. */
  out(encode: (v: unknown) => Uint8Array): Out {
    if (!this.r.chance(this.hostile)) return { value: this.frame() };
    if (this.r.chance(0.5)) return { value: this.mutated() };
    return { bytes: this.bytes(encode) };
  }
}

function mutateBytes(r: Rng, b: Uint8Array): Uint8Array {
  const out = Array.from(b);
  const n = 1 + r.int(3);
  for (let i = 0; i < n && out.length > 0; i++) {
    const at = r.int(out.length);
    switch (r.int(5)) {
      case 0:
        out[at] = out[at]! ^ (1 << r.int(8));
        break;
      case 1:
        out[at] = r.pick([0x00, 0x40, 0x5f, 0x7f, 0x80, 0xc0, 0xc1, 0xd4, 0xdb, 0xdd, 0xde, 0xff]);
        break;
      case 2:
        out.splice(at, 1);
        break;
      case 3:
        out.splice(at, 0, r.int(256));
        break;
      default:
        out.push(...out.slice(at, at + r.int(8)));
    }
  }
  return Uint8Array.from(out);
}

const utf8 = (s: string) => Array.from(new TextEncoder().encode(s));
const str = (s: number[]) => (s.length < 32 ? [0xa0 | s.length, ...s] : [0xd9, s.length, ...s]);

/** A crafted message: record definitions and references, bad strings, lengths and extensions. */
function crafted(r: Rng): Uint8Array {
  const slot = 0x40 + r.int(64);
  const keys = r.chance(0.5) ? ["op", "id", "ok", "value"] : Array.from({ length: r.int(20) }, (_, i) => `k${i}`);
  const def = [0xd4, 0x72, slot, 0x90 | Math.min(keys.length, 15), ...keys.slice(0, 15).flatMap((k) => str(utf8(k)))];
  const parts: Array<() => number[]> = [
    // A result by definition, then the same shape by reference.
    () => [...def, ...str(utf8("result")), 0x01, 0xc3, 0xc0],
    () => [slot, ...str(utf8("result")), 0x01, 0xc3, 0xc0],
    // A reference to a slot perhaps never defined, alone or in a frame.
    () => [0x40 + r.int(64)],
    () => [0x81, ...str(utf8("op")), 0x40 + r.int(64)],
    // Strings that are not UTF-8, as a value and as a definition key.
    () => [...def.slice(0, 3), 0x91, 0xa2, 0xff, 0xfe, 0x01],
    () => [0xa3, 0xed, 0xa0, 0x80],
    () => [0xa4, 0xf4, 0x90, 0x80, 0x80],
    // Lengths far past the message.
    () => [0xdb, 0xff, 0xff, 0xff, 0xff, 0x61],
    () => [0xdd, 0x7f, 0xff, 0xff, 0xff, 0x01],
    () => [0xdf, 0x7f, 0xff, 0xff, 0xff],
    () => [0xc6, 0xff, 0xff, 0xff, 0xf0],
    () => [0xc9, 0xff, 0xff, 0xff, 0xff, 0x50],
    // Deep nesting, by arrays and by maps.
    () => [...new Array(r.pick([255, 256, 257, 5000])).fill(0x91), 0x01],
    () => [...new Array(r.pick([255, 300])).fill([0x81, 0xa1, 0x61]).flat(), 0x01],
    // Extensions: a CapRef of a bad varint, typed arrays of odd lengths, a timestamp of 3 bytes (msgpackr's invalid Date), Set/Error/RegExp markers.
    () => [0xc7, 0x06, 0x50, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    () => [0xd5, 0x50, 0x80, 0x00],
    () => [0xc7, 0x04, 0x74, r.int(20), 1, 2, 3],
    () => [0xc7, 0x03, 0xff, 1, 2, 3],
    () => [0xd4, r.pick([0x73, 0x65, 0x78, 0x42, 0x62, 0x69, 0x70]), 0x00, 0x91, 0x01],
    () => [0xd5, 0x72, slot, 0x00],
    // Trailing bytes, and nothing at all.
    () => [0xc0, 0xc0],
    () => [],
  ];
  const bytes = r.pick(parts)();
  return Uint8Array.from(bytes);
}
