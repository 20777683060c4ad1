// One case of the seeded man in the middle of the web client's sealed pipe
// (`random_sealed.test.ts`; docs/RELIABILITY.md, "The web client's sealed pipe against a man in
// the middle, seeded"). The web client's counterpart of the Rust side's
// `crates/bunite-rpc/tests/random_sealed.rs`, whose rules it follows.
//
// A case is one seed: a web client A against another web client B (in-process, in-memory
// transports, both serving `t.mitm` and calling each other) or against `bunite-rpc
// interop-server --key` (A calling its `interop.counter`), a relay in the middle
// (`sealed_relay.ts`) that opens and decodes every genuine message and, at random messages,
// flips a bit, truncates, appends junk, delivers a message twice at once or later (within the
// window, at its edge or beyond it, once a side reads a stream of 1,100 values), reflects one
// back to its sender, swaps two, drops one, or first injects a message recorded between two
// other connections with the same key. Calls meanwhile: echoes (up to 5 KB), streams of up to
// 40 values (some read at a pace), and one call per side that waits until its connection ends.
//
// What must hold: a model of the receiving pipe's rules (form; then our own salt, the window
// of the last 1,024 IVs, the next counter under the last salt; a refusal is final), run over
// what the relay delivered to each side, says which message is refused, and the relay's own
// expectation (a tampered message, a duplicate within the window, a reflection) must agree
// with it. The side that meets a refused message first closes with `protocol error: <the
// rule's text>`, its goaway `invalid_argument` with that text goes out through the pipe, and
// its waiting call fails with the same text; a side that meets the peer's goaway first closes
// on it. No call carried by the refused message or after it runs (B's handlers log the tags
// they ran; the Rust server sends nothing for them), and no call is answered by a message at
// or after it; every handler runs at most once; every answer is right; a call fails only
// `unavailable`, once its connection has closed; with no fault delivered, every call is
// answered and both sides are clean before they close. Every wait is bounded; at the end both
// sides are closed, their tables empty (`assertClean`'s fields), and no timer is left.
//
// What the docs do not promise is counted, not asserted (`reach`): a foreign message opens,
// and what the codec makes of it is not defined (the close reasons and answers after it are not
// checked); a message dropped (or held for a swap) with nothing after it is noticed by no one.

import { Connection, RpcError, callMethod, importKey, memoryPair, open, openWebSocket, sealed, streamMethod, SealedOpenError, type CapDef, type Client, type Impl } from "../src/index.js";
import { InteropCounter } from "../src/interop.gen.js";
import { Rng } from "./random_frames.js";
import { relay, type Direction, type Frame, type Seen } from "./sealed_relay.js";
import { Mismatch, bounded, check, sleep, timers, until } from "./settling.js";

export const REPLAYED = "sealed message replayed (its IV was already accepted on this connection)";
export const REFLECTED = "sealed message reflected (it is one of ours, sent back to us)";
const OUT_OF_SEQUENCE = "sealed message out of sequence";
const outOfSequence = (got: number, after: number) => `${OUT_OF_SEQUENCE} (counter ${got} after ${after}: a message was dropped, reordered or replayed)`;

/** The Rust pipe's `REPLAY_WINDOW` (the model's own copy, not the pipe's). */
const WINDOW = 1024;
/** How long one operation may wait for its answer: past it, the call is lost (allowed only after a fault the docs leave open). */
const OP_MS = 3000;
/** How long anything that must happen may take. */
const LIVE_MS = 20_000;
/** Values of a stream long enough to push a message out of the replay window. */
const BULK = 1100;

/** `BUNITE_FUZZ_TRACE=1` prints each case's draw and what the relay delivered besides the messages as sent. */
const trace = process.env["BUNITE_FUZZ_TRACE"] !== undefined;

/** What the cases of a run reached, summed (the summary and the reach checks). */
export const reach = new Map<string, number>();
const count = (what: string, n = 1) => reach.set(what, (reach.get(what) ?? 0) + n);

// ---- The cap the web clients serve ----

export const Mitm: CapDef = {
  name: "t.mitm",
  methods: { echo: { kind: "call" }, wait: { kind: "call" }, ticks: { kind: "stream", initialCredit: 8 } },
};

type Args = { tag?: unknown; n?: unknown };

/** `t.mitm`, logging the tag of every call it runs. */
function mitmImpl(ran: Map<string, number>): Impl {
  const log = (a: Args | undefined) => {
    const tag = String(a?.tag);
    ran.set(tag, (ran.get(tag) ?? 0) + 1);
  };
  return {
    echo: (a: Args) => (log(a), a),
    wait: (a: Args, ctx) => {
      log(a);
      return new Promise((resolve) => {
        if (ctx.signal.aborted) return resolve(undefined);
        ctx.signal.addEventListener("abort", () => resolve(undefined), { once: true });
      });
    },
    ticks: (a: Args) => {
      log(a);
      const n = typeof a?.n === "number" ? a.n : 0;
      return (async function* () {
        for (let i = 0; i < n; i++) yield { i };
      })();
    },
  };
}

// ---- What a case draws ----

type Op = { kind: "echo"; tag: string; pad: number } | { kind: "ticks"; tag: string; n: number; pace: number };
interface Step {
  pause: number;
  awaited: boolean;
  op: Op;
}

type Dir = "toA" | "toB";
const back = (d: Dir): Dir => (d === "toA" ? "toB" : "toA");

type Fault =
  | { f: "flip"; byte: number; bit: number }
  | { f: "truncate"; keep: number }
  | { f: "junk"; n: number }
  | { f: "dupNow" }
  | { f: "dupLater"; after: number }
  | { f: "reflect"; forward: boolean }
  | { f: "foreign"; which: number }
  | { f: "swap" }
  | { f: "drop" };

interface Setup {
  rust: boolean;
  /** A reads a stream of `BULK` values, and an early message towards it comes again after ~`WINDOW` more. */
  window: boolean;
  a: Step[];
  b: Step[];
  faults: Array<{ dir: Dir; at: number; fault: Fault }>;
  foreign: boolean;
}

function draw(r: Rng, rust: boolean): Setup {
  const plan = (side: string, bulk: boolean): Step[] => {
    const steps: Step[] = [];
    const n = 2 + r.int(8);
    for (let i = 0; i < n; i++) {
      const tag = `${side}${i}`;
      const op: Op = r.int(5) < 3 ? { kind: "echo", tag, pad: r.pick([0, 10, 300, 5000]) } : { kind: "ticks", tag, n: r.int(40), pace: r.pick([0, 0, 1, 3]) };
      steps.push({ pause: r.int(4), awaited: r.chance(0.5), op });
    }
    if (bulk) steps.push({ pause: 0, awaited: true, op: { kind: "ticks", tag: `${side}bulk`, n: BULK, pace: 0 } });
    return steps;
  };
  const window = r.chance(0.2);
  const a = plan("a", window);
  const b = rust ? [] : plan("b", false);
  const foreign = r.chance(0.3);
  const faults: Setup["faults"] = [];
  if (window) {
    // An early message towards A again after the long stream's values: at the window's edge
    // (still refused, replayed) or beyond it (out of sequence under the same salt).
    const after = r.pick([WINDOW - 1, WINDOW, WINDOW + 20]);
    faults.push({ dir: "toA", at: 1 + r.int(6), fault: { f: "dupLater", after } });
  } else if (!r.chance(0.1)) {
    // A foreign message early (where the codec still meets record definitions and answers), then
    // the other faults.
    if (foreign) faults.push({ dir: r.chance(0.5) ? "toA" : "toB", at: r.int(10), fault: { f: "foreign", which: r.int(1 << 30) } });
    for (let k = 1 + r.int(3); k > 0; k--) {
      const dir: Dir = r.chance(0.5) ? "toA" : "toB";
      const at = r.int(4) === 0 ? r.int(4) : r.int(40);
      const pick = r.int(foreign ? 11 : 10);
      const fault: Fault =
        pick === 0
          ? { f: "flip", byte: r.int(1 << 30), bit: r.int(8) }
          : pick === 1
            ? { f: "flip", byte: r.int(13), bit: r.int(8) }
            : pick === 2
              ? { f: "truncate", keep: r.int(1 << 30) }
              : pick === 3
                ? { f: "junk", n: 1 + r.int(64) }
                : pick === 4
                  ? { f: "dupNow" }
                  : pick === 5
                    ? { f: "dupLater", after: 1 + r.int(30) }
                    : pick === 6
                      ? { f: "reflect", forward: r.chance(0.5) }
                      : pick === 7
                        ? { f: "swap" }
                        : pick === 8
                          ? { f: "drop" }
                          : { f: "foreign", which: r.int(1 << 30) };
      faults.push({ dir, at, fault });
    }
  }
  return { rust, window, a, b, faults, foreign };
}

// ---- The relay's deliveries ----

/** What the relay delivered to one side: a genuine message as sent (`i`: its place in its direction), or one it expects refused, or one the docs promise nothing for. */
type Label =
  | { k: "original"; i: number }
  | { k: "expect"; rule: "form" | "replay" | "reflected"; of?: number }
  | { k: "unpromised"; what: "drop" | "held" | "swap" | "foreign" | "beyond"; of?: number };

/** One delivery: its bytes (none for a drop or a message held for a swap). */
interface Delivery {
  bytes: Uint8Array | undefined;
  label: Label;
}

/** The genuine message of its direction a delivery carries, as sent (not a tampered copy, a reflection or a foreign one). */
const genuine = (d: Delivery): number | undefined =>
  d.bytes === undefined
    ? undefined
    : d.label.k === "original"
      ? d.label.i
      : (d.label.k === "expect" && d.label.rule === "replay") || (d.label.k === "unpromised" && (d.label.what === "swap" || d.label.what === "beyond"))
        ? d.label.of
        : undefined;

class Relay {
  readonly delivered: Record<Dir, Delivery[]> = { toA: [], toB: [] };
  /** Once set (the case closes both sides): no more faults, every genuine message passed as sent. */
  closing = false;
  private readonly later: Array<{ dir: Dir; after: number; bytes: Uint8Array; of: number; inside: boolean }> = [];
  private swapped: { dir: Dir; bytes: Uint8Array; i: number } | undefined;

  constructor(
    private readonly dirs: Record<Dir, Direction>,
    private readonly faults: Setup["faults"],
    private readonly foreign: Uint8Array[],
    private readonly r: Rng,
  ) {
    for (const d of ["toA", "toB"] as const) {
      dirs[d].tamper = (m) => {
        this.act(d, m);
        return [];
      };
    }
  }

  /** Faults delivered so far (any kind). */
  faultCount(): number {
    return [...this.delivered.toA, ...this.delivered.toB].filter((x) => x.label.k !== "original").length;
  }

  private deliver(d: Dir, bytes: Uint8Array | undefined, label: Label): void {
    this.delivered[d].push({ bytes, label });
    if (bytes !== undefined) this.dirs[d].inject(bytes);
  }

  private act(d: Dir, m: Seen): void {
    const i = m.index;
    if (this.closing) return this.deliver(d, m.bytes, { k: "original", i });
    if (this.swapped?.dir === d) {
      const held = this.swapped;
      this.swapped = undefined;
      this.deliver(d, m.bytes, { k: "unpromised", what: "swap", of: i });
      this.deliver(d, held.bytes, { k: "unpromised", what: "swap", of: held.i });
      return this.due(d, i);
    }
    const at = this.faults.findIndex((x) => x.dir === d && x.at === i);
    const fault = at < 0 ? undefined : this.faults.splice(at, 1)[0]!.fault;
    const bytes = m.bytes;
    switch (fault?.f) {
      case undefined:
        this.deliver(d, bytes, { k: "original", i });
        break;
      case "flip": {
        const x = bytes.slice();
        x[fault.byte % x.length]! ^= 1 << fault.bit;
        this.deliver(d, x, { k: "expect", rule: "form" });
        break;
      }
      case "truncate":
        this.deliver(d, bytes.slice(0, fault.keep % bytes.length), { k: "expect", rule: "form" });
        break;
      case "junk": {
        const x = new Uint8Array(bytes.length + fault.n);
        x.set(bytes);
        for (let k = bytes.length; k < x.length; k++) x[k] = this.r.int(256);
        this.deliver(d, x, { k: "expect", rule: "form" });
        break;
      }
      case "dupNow":
        this.deliver(d, bytes, { k: "original", i });
        this.deliver(d, bytes, { k: "expect", rule: "replay", of: i });
        break;
      case "dupLater":
        this.deliver(d, bytes, { k: "original", i });
        this.later.push({ dir: d, after: i + fault.after, bytes, of: i, inside: fault.after < WINDOW });
        break;
      case "reflect":
        // Not forwarded: taken away from its receiver, a drop as well.
        if (fault.forward) this.deliver(d, bytes, { k: "original", i });
        else this.deliver(d, undefined, { k: "unpromised", what: "drop", of: i });
        this.deliver(back(d), bytes, { k: "expect", rule: "reflected" });
        break;
      case "foreign":
        if (this.foreign.length > 0) this.deliver(d, this.foreign[fault.which % this.foreign.length], { k: "unpromised", what: "foreign" });
        this.deliver(d, bytes, { k: "original", i });
        break;
      case "swap":
        this.swapped = { dir: d, bytes, i };
        this.deliver(d, undefined, { k: "unpromised", what: "held", of: i });
        break;
      case "drop":
        this.deliver(d, undefined, { k: "unpromised", what: "drop", of: i });
        break;
    }
    this.due(d, i);
  }

  /** Copies due after genuine message `i` of `d`. */
  private due(d: Dir, i: number): void {
    for (let k = 0; k < this.later.length; ) {
      const x = this.later[k]!;
      if (x.dir !== d || x.after > i) {
        k++;
        continue;
      }
      this.later.splice(k, 1);
      this.deliver(d, x.bytes, x.inside ? { k: "expect", rule: "replay", of: x.of } : { k: "unpromised", what: "beyond", of: x.of });
    }
  }
}

// ---- The model of the receiving pipe ----

type Verdict = { ok: true } | { ok: false; kind: string; text: string } | { skipped: true };

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/**
 * The receiving pipe's documented rules, written again from the docs (not `SourceIvs`): its
 * form (version, length, authentication: WebCrypto's `open`), then our own salt (reflected),
 * the window of the last `WINDOW` IVs by their last 8 bytes (replayed), the next counter under
 * the last salt (out of sequence); a refusal is final. One verdict per delivery.
 */
async function model(key: CryptoKey, list: Delivery[], own: string | undefined): Promise<Verdict[]> {
  const window: string[] = [];
  const inWindow = new Set<string>();
  let last: { salt: string; counter: number } | undefined;
  let failed = false;
  const out: Verdict[] = [];
  for (const x of list) {
    if (x.bytes === undefined || failed) {
      out.push({ skipped: true });
      continue;
    }
    const m = x.bytes;
    try {
      await open(key, m);
    } catch (e) {
      failed = true;
      out.push({ ok: false, kind: e instanceof SealedOpenError ? e.kind : "?", text: (e as Error).message });
      continue;
    }
    const salt = hex(m.subarray(1, 9));
    const low = hex(m.subarray(5, 13));
    const counter = new DataView(m.buffer, m.byteOffset).getUint32(9);
    let refusal: { kind: string; text: string } | undefined;
    if (salt === own) refusal = { kind: "reflected", text: REFLECTED };
    else if (inWindow.has(low)) refusal = { kind: "replay", text: REPLAYED };
    else if (last !== undefined && last.salt === salt && counter !== ((last.counter + 1) >>> 0)) refusal = { kind: "out_of_sequence", text: outOfSequence(counter, last.counter) };
    if (refusal !== undefined) {
      failed = true;
      out.push({ ok: false, ...refusal });
      continue;
    }
    window.push(low);
    inWindow.add(low);
    if (window.length > WINDOW) inWindow.delete(window.shift()!);
    last = { salt, counter };
    out.push({ ok: true });
  }
  return out;
}

/** A side's first event among its deliveries: the first refused message, or the first accepted one carrying a goaway. */
interface Event {
  at: number;
  refused?: string;
  goaway?: Frame;
}

interface Judged {
  verdicts: Verdict[];
  /** Where the first refusal is (-1: none), and its text. */
  refusedAt: number;
  text: string | undefined;
  event: Event | undefined;
  /** Where the first foreign message is (Infinity: none). */
  foreignAt: number;
}

async function judge(key: CryptoKey, relayed: Relay, dirs: Record<Dir, Direction>, d: Dir, problems: string[]): Promise<Judged> {
  const list = relayed.delivered[d];
  const ownFirst = dirs[back(d)].seen[0];
  const verdicts = await model(key, list, ownFirst === undefined ? undefined : hex(ownFirst.bytes.subarray(1, 9)));
  let refusedAt = -1;
  let text: string | undefined;
  let event: Event | undefined;
  list.forEach((x, j) => {
    const v = verdicts[j]!;
    // The relay's own expectation agrees with the model's (where the model still opens anything).
    if (x.label.k === "expect" && !("skipped" in v)) {
      const rule = x.label.rule;
      const kinds = rule === "form" ? ["too_short", "version", "auth"] : [rule];
      if (v.ok || !kinds.includes(v.kind)) problems.push(`${d}: delivery ${j} expected refused (${rule}), the model says ${JSON.stringify(v)}`);
    }
    if ("ok" in v && !v.ok && refusedAt < 0) {
      refusedAt = j;
      text = v.text;
    }
    if (event === undefined && "ok" in v) {
      if (!v.ok) event = { at: j, refused: v.text };
      else {
        const i = genuine(x);
        const f = i === undefined ? undefined : dirs[d].seen[i]?.frame;
        if (f?.["op"] === "goaway") event = { at: j, goaway: f };
      }
    }
  });
  const foreignAt = list.findIndex((x) => x.label.k === "unpromised" && x.label.what === "foreign");
  return { verdicts, refusedAt, text, event, foreignAt: foreignAt < 0 ? Infinity : foreignAt };
}

// ---- The calls ----

type Outcome = { k: "answered" } | { k: "failed"; error: unknown } | { k: "wrong"; what: string } | { k: "lost" };

async function runOp(cap: Client, op: Op): Promise<Outcome> {
  const work = async (): Promise<string | undefined> => {
    if (op.kind === "echo") {
      const args = { tag: op.tag, pad: "p".repeat(op.pad) };
      const got = (await callMethod(cap, "echo", args)) as Args & { pad?: unknown };
      if (got?.tag !== args.tag || got?.pad !== args.pad) return `echo ${op.tag}: ${JSON.stringify(got).slice(0, 100)}`;
      return undefined;
    }
    const s = streamMethod<{ i?: unknown }>(cap, "ticks", { tag: op.tag, n: op.n });
    let next = 0;
    for await (const v of s) {
      if (v?.i !== next) return `ticks ${op.tag}: value ${next} is ${JSON.stringify(v)}`;
      next++;
      if (op.pace > 0) await sleep(op.pace);
    }
    return next === op.n ? undefined : `ticks ${op.tag}: ended after ${next} of ${op.n}`;
  };
  try {
    const wrong = await bounded(op.tag, work(), op.kind === "ticks" && op.n === BULK ? LIVE_MS : OP_MS);
    return wrong === undefined ? { k: "answered" } : { k: "wrong", what: wrong };
  } catch (e) {
    return e instanceof Mismatch ? { k: "lost" } : { k: "failed", error: e };
  }
}

interface SideResult {
  ops: Array<{ op: Op; outcome: Outcome }>;
  /** The waiting call: what it ended with (an error, or "answered"), once its connection has closed. */
  waiting: Promise<unknown> | undefined;
  abort: AbortController;
}

/** One side's calls: bootstrap, the waiting call, then the plan. */
async function side(conn: Connection, def: CapDef, plan: Step[], sentinel: string, rust: boolean): Promise<SideResult> {
  const abort = new AbortController();
  let cap: Client;
  try {
    cap = await bounded("bootstrap", conn.bootstrap(def), OP_MS);
  } catch {
    // Cut off, or its answer lost: nothing of the plan runs.
    return { ops: [], waiting: undefined, abort };
  }
  const wait = rust ? callMethod(cap, "slow", { ms: 600_000, tag: sentinel }, { signal: abort.signal }) : callMethod(cap, "wait", { tag: sentinel }, { signal: abort.signal });
  const waiting = wait.then(
    () => "answered",
    (e: unknown) => e,
  );
  const ops: SideResult["ops"] = [];
  const running: Promise<void>[] = [];
  for (const step of plan) {
    await sleep(step.pause);
    const p = runOp(cap, step.op).then((outcome) => void ops.push({ op: step.op, outcome }));
    if (step.awaited) await p;
    else running.push(p);
  }
  await Promise.all(running);
  return { ops, waiting, abort };
}

// ---- The foreign pair ----

/** Two more connections with the same key exchange calls through a relay that records every sealed message either way. */
async function foreignMessages(key: Uint8Array, ck: CryptoKey, server: string | undefined): Promise<Uint8Array[]> {
  const [c, rc] = memoryPair();
  const C = new Connection(sealed(c, key), { origin: "foreign C" });
  let D: Connection | undefined;
  let other;
  if (server === undefined) {
    const [rd, d] = memoryPair();
    D = new Connection(sealed(d, key), { origin: "foreign D", serve: [{ def: Mitm, impl: mitmImpl(new Map()) }] });
    other = rd;
  } else {
    other = await openWebSocket(server);
  }
  const recorded: Uint8Array[] = [];
  const { toA, toB } = relay(ck, rc, other);
  for (const dir of [toA, toB]) dir.tamper = (m) => (recorded.push(m.bytes), [m.bytes]);
  const cap = await bounded("foreign bootstrap", C.bootstrap(server === undefined ? Mitm : InteropCounter), LIVE_MS);
  for (let i = 0; i < 4; i++) {
    const args = { tag: `f${i}` };
    check(JSON.stringify(await bounded("foreign echo", callMethod(cap, "echo", args), LIVE_MS)) === JSON.stringify(args), "the foreign echo");
  }
  let n = 0;
  for await (const _ of streamMethod(cap, "ticks", { tag: "f9", n: 5 })) n++;
  check(n === 5, "the foreign stream");
  C.close();
  await bounded("the foreign pair's close", Promise.all([C.closed, D?.closed, toA.settled(), toB.settled()]), LIVE_MS);
  return recorded;
}

// ---- A case ----

const CLEAN = { pendingCalls: 0, clientStreams: 0, abandonedCalls: 0, servedCaps: 0, activeHandlers: 0, bufferedStreamBytes: 0 };
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Runs the case of `seed` (against the Rust server at `server` if given); returns what went wrong. */
export async function runSeed(seed: number, server: string | undefined, keyHex: string | undefined): Promise<string[]> {
  const problems: string[] = [];
  const rust = server !== undefined;
  const r = new Rng(seed ^ 0x5ea1ed);
  const setup = draw(r, rust);
  if (trace) console.error(`seed ${seed}: ${JSON.stringify(setup)}`);
  const timersBefore = timers();
  const key = keyHex !== undefined && rust ? Uint8Array.from(Buffer.from(keyHex, "hex")) : Uint8Array.from({ length: 32 }, () => r.int(256));
  const ck = await importKey(key);
  const foreign = setup.foreign ? await foreignMessages(key, ck, server) : [];

  // A, and B or the server, through the relay.
  const [a, ra] = memoryPair();
  const aRan = new Map<string, number>();
  const bRan = new Map<string, number>();
  const A = new Connection(sealed(a, key), { origin: "A", ...(rust ? {} : { serve: [{ def: Mitm, impl: mitmImpl(aRan) }] }) });
  let B: Connection | undefined;
  let other;
  if (rust) other = await openWebSocket(server);
  else {
    const [rb, b] = memoryPair();
    B = new Connection(sealed(b, key), { origin: "B", serve: [{ def: Mitm, impl: mitmImpl(bRan) }] });
    other = rb;
  }
  const { toA, toB } = relay(ck, ra, other);
  const dirs = { toA, toB };
  const relayed = new Relay(dirs, setup.faults, foreign, new Rng(Math.imul(seed, 31)));
  const webs: Array<{ name: "A" | "B"; conn: Connection; dir: Dir; ran: Map<string, number> }> = [{ name: "A", conn: A, dir: "toA", ran: aRan }];
  if (B !== undefined) webs.push({ name: "B", conn: B, dir: "toB", ran: bRan });
  const reasons = new Map<Connection, string>();
  for (const w of webs) void w.conn.closed.then((x) => reasons.set(w.conn, x));
  const settled = () => bounded("the relay", Promise.all([toA.settled(), toB.settled()]), LIVE_MS);

  // Each side's calls, every operation bounded.
  const sides = await bounded(
    "the plans",
    Promise.all([side(A, rust ? InteropCounter : Mitm, setup.a, "aW", rust), B === undefined ? undefined : side(B, Mitm, setup.b, "bW", false)]),
    4 * LIVE_MS,
  );
  const results = { A: sides[0], B: sides[1] };
  await sleep(20);
  let aborted = false;
  if (relayed.faultCount() === 0) {
    // No fault: the waiting calls cancelled, both sides clean (unless a fault meets the cancels).
    aborted = true;
    for (const s of sides) s?.abort.abort();
    for (const w of webs) {
      const s = await until(
        async () => w.conn.stats(),
        (s) => relayed.faultCount() > 0 || same({ ...s, servedCaps: 0 }, CLEAN),
        LIVE_MS,
      );
      if (relayed.faultCount() === 0 && !same({ ...s, servedCaps: 0 }, CLEAN)) problems.push(`${w.name} not clean with no fault: ${JSON.stringify(s)}`);
    }
  }

  // No fault from here on. A message the model refuses (or a goaway) closes its receiver, and
  // the peer on its goaway, without the case's help.
  relayed.closing = true;
  await settled();
  const snapshot = { toA: relayed.delivered.toA.length, toB: relayed.delivered.toB.length };
  const early = await Promise.all((["toA", "toB"] as const).map((d) => judge(ck, relayed, dirs, d, [])));
  const closedAlone = early.some((j) => j.event !== undefined);
  if (closedAlone) {
    try {
      await bounded("a refused message or a goaway closes both sides", Promise.all(webs.map((w) => w.conn.closed)), LIVE_MS);
    } catch (e) {
      problems.push(`${(e as Error).message} (closed: ${webs.map((w) => `${w.name} ${reasons.get(w.conn) ?? "open"}`).join(", ")})`);
    }
  }
  // Then A closes (if still open), and B closes on its goaway.
  const closedLocally = new Set<Connection>();
  if (!reasons.has(A)) closedLocally.add(A);
  A.close();
  try {
    await bounded("both sides close", Promise.all(webs.map((w) => w.conn.closed)), LIVE_MS);
  } catch (e) {
    problems.push((e as Error).message);
    B?.close();
  }
  const waited = new Map<string, unknown>();
  for (const [name, s] of Object.entries(results)) {
    if (s?.waiting !== undefined) waited.set(name, await bounded("the waiting call", s.waiting, LIVE_MS).catch((e: unknown) => e));
  }
  await settled();

  // ---- The checks ----
  const judged = { toA: await judge(ck, relayed, dirs, "toA", problems), toB: await judge(ck, relayed, dirs, "toB", problems) };
  const faulted = relayed.faultCount() > 0;
  const all = [...relayed.delivered.toA, ...relayed.delivered.toB];
  const foreignAny = all.some((x) => x.label.k === "unpromised" && x.label.what === "foreign");
  const unpromisedAny = all.some((x) => x.label.k === "unpromised");
  if (trace) {
    for (const d of ["toA", "toB"] as const) {
      console.error(`  ${d}: ${dirs[d].seen.length} messages, goaway ${JSON.stringify(dirs[d].goaway())}, first refusal ${judged[d].refusedAt} ${judged[d].text ?? ""}`);
      relayed.delivered[d].forEach((x, j) => x.label.k !== "original" && console.error(`    ${j}: ${JSON.stringify(x.label)}`));
    }
    console.error(`  A ran ${JSON.stringify([...aRan])}; B ran ${JSON.stringify([...bRan])}; closes ${webs.map((w) => reasons.get(w.conn)).join(" | ")}`);
    console.error(`  ops ${JSON.stringify(Object.values(results).map((s) => s?.ops.map((o) => [o.op.tag, o.outcome.k])))}`);
  }

  const expectedGoaway = (text: string) => ({ op: "goaway", reason: "invalid_argument", error: { code: "invalid_argument", message: text } });
  /** The tags of the calls carried by genuine messages of `d` delivered from `from` on, not before. */
  const carriedFrom = (d: Dir, from: number) => {
    const tagsOf = (x: Delivery) => {
      const i = genuine(x);
      const f = i === undefined ? undefined : dirs[d].seen[i]?.frame;
      return f?.["op"] === "call" ? [{ tag: String(f["args"]?.["tag"]), id: f["id"] as number }] : [];
    };
    const list = relayed.delivered[d];
    const before = new Set(list.slice(0, from).flatMap(tagsOf).map((c) => c.tag));
    return list.slice(from).flatMap(tagsOf).filter((c) => !before.has(c.tag));
  };

  /**
   * The side receiving `dir` refused first with `text`: its goaway reached the peer (the first
   * thing the peer met, and right), unless the peer had closed first for a reason of its own
   * (its own refusal, a foreign message, our close).
   */
  const goawayReached = (name: string, dir: Dir, text: string, peer: Connection | undefined) => {
    const pj = judged[back(dir)];
    const pev = pj.event;
    if ((pev === undefined ? Infinity : pev.at) > pj.foreignAt) return;
    if (pev?.refused !== undefined) return;
    if (pev?.goaway !== undefined) {
      if (same(pev.goaway, expectedGoaway(text))) count("goaway with the rule's text reached the peer");
      else problems.push(`${name}'s goaway: ${JSON.stringify(pev.goaway)}, expected ${text}`);
      return;
    }
    if (peer !== undefined && closedLocally.has(peer)) return;
    // The man in the middle may take the goaway itself (a drop, a swap held, a tampered copy).
    const g = dirs[back(dir)].seen.findIndex((m) => m.frame?.["op"] === "goaway");
    const intact = relayed.delivered[back(dir)].some((x, j) => x.label.k === "original" && x.label.i === g && "ok" in pj.verdicts[j]! && pj.verdicts[j].ok);
    if (g >= 0 && !intact) return void count("goaway of the refusing side taken by the man in the middle");
    problems.push(`${name} refused (${text}), and its goaway never reached its peer`);
  };

  for (const { name, conn, dir, ran } of webs) {
    const j = judged[dir];
    const peerDir = back(dir);
    const reason = reasons.get(conn);
    const ev = j.event;
    if (ev !== undefined && ev.at < j.foreignAt) {
      const expected = ev.refused !== undefined ? `protocol error: ${ev.refused}` : String(ev.goaway!["reason"] ?? "goaway");
      const localFirst = closedLocally.has(conn) && ev.at >= snapshot[dir];
      if (reason !== expected && !(localFirst && reason === "closed locally")) problems.push(`${name} closed with ${JSON.stringify(reason)}, expected ${JSON.stringify(expected)} (delivery ${ev.at} towards it)`);
      if (ev.refused !== undefined && reason === expected) {
        count("closed by the pipe with its text");
        goawayReached(name, dir, ev.refused, webs.find((w) => w.conn !== conn)?.conn);
        const w = waited.get(name);
        if (!aborted && w instanceof RpcError && !(w.code === "unavailable" && w.message === expected)) problems.push(`${name}'s waiting call: ${w.code} ${w.message}`);
        // (A foreign message may cancel the handler it waits on, which then answers.)
        if (w === "answered" && !foreignAny) problems.push(`${name}'s waiting call answered`);
      }
    } else if (ev !== undefined) {
      count("close reason after a foreign message, not checked");
    }
    // Nothing carried by the refused message or after it ran, nor was answered by it or after.
    if (j.refusedAt >= 0) {
      for (const c of carriedFrom(dir, j.refusedAt)) {
        if ((ran.get(c.tag) ?? 0) > 0) problems.push(`${name} ran ${c.tag}, carried at or after the refused message (delivery ${j.refusedAt})`);
      }
      if (j.refusedAt < j.foreignAt) {
        for (const { op, outcome } of results[name]?.ops ?? []) {
          if (outcome.k !== "answered") continue;
          const call = dirs[peerDir].frames().find((f) => f["op"] === "call" && f["args"]?.["tag"] === op.tag);
          const id = call?.["id"];
          const final = relayed.delivered[dir].slice(0, j.refusedAt).some((x) => {
            const i = genuine(x);
            const f = i === undefined ? undefined : dirs[dir].seen[i]?.frame;
            return f?.["id"] === id && (f?.["op"] === "result" || (f?.["op"] === "stream" && f["ev"] === "end"));
          });
          if (!final) problems.push(`${name}'s ${op.tag} answered, with no answer delivered before the refused message`);
        }
      }
    }
    for (const [tag, n] of ran) {
      if (tag.startsWith("f")) count("foreign calls run", n);
      else if (n > 1) problems.push(`${name} ran ${tag} ${n} times`);
    }
  }

  // The Rust server: nothing it answered came from a call at or after the message it refused;
  // its goaway says why.
  if (rust) {
    const j = judged.toB;
    if (j.refusedAt >= 0) {
      count("refused by the Rust server");
      for (const c of carriedFrom("toB", j.refusedAt)) {
        if (toA.frames().some((f) => (f["op"] === "result" || f["op"] === "stream") && f["id"] === c.id)) problems.push(`the server answered ${c.tag}, carried at or after the refused message`);
      }
      const ev = j.event!;
      if (ev.refused !== undefined && ev.at < j.foreignAt && ev.at < snapshot.toB) {
        goawayReached("the server", "toB", ev.refused, A);
        if (same(toA.goaway(), expectedGoaway(ev.refused))) count("closed by the pipe with its text");
      } else if (ev.at >= snapshot.toB) count("refused by the Rust server at the close (its goaway not awaited)");
    }
  }

  // Every call answered was answered right; a call fails only with its connection's close, and
  // is lost only after a fault the docs leave open.
  for (const [name, s] of Object.entries(results)) {
    for (const { op, outcome } of s?.ops ?? []) {
      if (outcome.k === "failed") {
        const e = outcome.error;
        if (!faulted) problems.push(`${name}'s ${op.tag} failed with no fault: ${String(e)}`);
        else if (!foreignAny && !(e instanceof RpcError && e.code === "unavailable")) problems.push(`${name}'s ${op.tag} failed otherwise than by the close: ${String(e)}`);
      } else if (outcome.k === "wrong") {
        if (!foreignAny) problems.push(`${name}: a wrong answer, and no foreign message: ${outcome.what}`);
        count("wrong answers (after a foreign message)");
      } else if (outcome.k === "lost") {
        if (!unpromisedAny) problems.push(`${name}'s ${op.tag} got no answer, and no fault left it open`);
        count("lost operations (after a drop or a foreign message)");
      }
    }
  }
  if (!faulted) {
    for (const d of ["toA", "toB"] as const) {
      const g = dirs[d].goaway();
      if (g !== undefined && g["reason"] !== "peer_closing") problems.push(`no fault, goaway ${JSON.stringify(g)}`);
    }
    for (const [name, s] of Object.entries(results)) {
      for (const { op, outcome } of s?.ops ?? []) if (outcome.k !== "answered") problems.push(`no fault, ${name}'s ${op.tag}: ${outcome.k}`);
    }
    count("cases with no fault");
  }

  // What was reached.
  for (const d of ["toA", "toB"] as const) {
    const j = judged[d];
    if (j.refusedAt < 0) continue;
    count("refused");
    const t = j.text!;
    if (rust && d === "toA") count("refused by A, of the Rust server's messages");
    if (t === REPLAYED) count("refused replayed");
    if (t === REFLECTED) count("refused reflected");
    if (t.startsWith(OUT_OF_SEQUENCE)) count("refused out of sequence");
    if (setup.window && d === "toA") count(`window case refused ${t === REPLAYED ? "replayed" : "out of sequence"}`);
  }
  if (unpromisedAny) {
    count("cases with a message the docs promise nothing for");
    if (foreignAny) count("cases with a foreign message");
    const dropLast = (["toA", "toB"] as const).some((d) => {
      const list = relayed.delivered[d];
      const k = list.findIndex((x) => x.label.k === "unpromised" && (x.label.what === "drop" || x.label.what === "held"));
      return k >= 0 && judged[d].refusedAt < 0 && list.slice(k).every((x) => x.bytes === undefined);
    });
    if (dropLast) count("cases with the last message of a direction dropped, noticed by no one");
  }

  for (const w of webs) {
    if (!same(w.conn.stats(), CLEAN)) problems.push(`${w.name}'s tables not empty: ${JSON.stringify(w.conn.stats())}`);
  }
  // An operation given up as lost may still be between two values of its paced stream (a few ms).
  const left = await until(async () => timers() - timersBefore, (n) => n <= 0, 200);
  if (left > 0) problems.push(`${left} timer(s) left`);
  return problems;
}
