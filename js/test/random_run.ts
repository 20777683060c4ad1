// One sequence of the random-frames test (`random_frames.test.ts`, docs/RELIABILITY.md "The
// web client under random frames"): a raw peer sends a seeded random sequence
// (`random_frames.ts`) to a client that is making calls, opening streams, holding caps and
// serving a cap at the same time. After each sequence the peer closes, and: nothing threw
// out of the client or rejected unhandled, every call and stream settled (resolved, or
// rejected with an `RpcError`) within a bound, the connection's tables are empty
// (`assertClean`) and it left no timer.

import { inspect } from "node:util";

import { CapRef, Connection, FrameEncoder, RpcError, dispose, memoryPair, release, type CapDef, type Client, type Impl, type ValueStream } from "../src/index.js";
import { InteropCounter } from "../src/interop.gen.js";
import { FrameGen, Rng, type Known } from "./random_frames.js";
import { assertClean, rawPeer } from "./raw_peer.js";

/** `BUNITE_FUZZ_TRACE=1` prints what each step sends (to reproduce a seed). */
const trace = process.env["BUNITE_FUZZ_TRACE"] !== undefined;
/** How long a connection may take to settle everything once the peer closed. */
const SETTLE_MS = 2000;

let unexpected: unknown[] = [];
let installed = false;

const Child: CapDef = { name: "t.fchild", disposal: "close", methods: { ping: { kind: "call" }, close: { kind: "call" } } };
const Fuzz: CapDef = {
  name: "t.fuzz",
  disposal: "close",
  methods: {
    echo: { kind: "call", idempotent: true },
    slow: { kind: "call" },
    make: { kind: "call", returns: "cap", cap: () => Child },
    makeAll: { kind: "call", returns: "array", cap: () => Child },
    ticks: { kind: "stream", initialCredit: 8 },
    close: { kind: "call" },
  },
};

const childImpl: Impl = { ping: () => "pong", close: () => undefined };
const fuzzImpl: Impl = {
  echo: (a: unknown) => a,
  slow: (_a: unknown, ctx) =>
    new Promise((_, reject) => {
      if (ctx.signal.aborted) reject(new Error("stopped"));
      ctx.signal.addEventListener("abort", () => reject(new Error("stopped")), { once: true });
    }),
  make: (_a: unknown, ctx) => ctx.exportCap(Child, childImpl),
  makeAll: (_a: unknown, ctx) => [ctx.exportCap(Child, childImpl), ctx.exportCap(Child, childImpl)],
  ticks: async function* (a: { n?: unknown } | undefined) {
    const n = typeof a?.n === "number" ? a.n : Infinity;
    for (let i = 0; i < n; i++) yield { i };
  },
  close: () => undefined,
};

const timers = () => process.getActiveResourcesInfo().filter((x) => x === "Timeout").length;
const immediate = () => new Promise<void>((r) => setImmediate(r));

/** What the client did, to check that all of it settled. */
interface Tracked {
  settled: boolean;
  what: string;
}

/** When and why each sequence's connection closed (for tuning the generator). */
export const closes: Array<{ step: number; steps: number; reason: string }> = [];
/** What the client sent, over all sequences, by `op` (and `ev`, `ok`): that the sequences reach the paths they aim at. */
export const sent = new Map<string, number>();

/** Runs the sequence of `seed`; returns what went wrong (empty if nothing). */
export async function runSeed(seed: number): Promise<string[]> {
  if (!installed) {
    installed = true;
    process.on("unhandledRejection", (e) => unexpected.push(e));
    process.on("uncaughtException", (e) => unexpected.push(e));
  }
  const problems: string[] = [];
  const r = new Rng(seed);
  const timersBefore = timers();
  const [a, b] = memoryPair();
  const conn = new Connection(a, { origin: "fuzz", limits: r.chance(0.3) ? { maxInFlightCalls: 4, maxBufferedStreamBytes: 4096 } : {} });
  conn.serve(Fuzz, fuzzImpl);
  const peer = rawPeer(b);
  const enc = new FrameEncoder();
  const known: Known = { clientIds: [], peerIds: [], exported: [] };
  // Most sequences stay valid for long: a hostile message (or a frame that fails validation)
  // ends the connection, so each sequence draws how often it sends one.
  const gen = new FrameGen(r, known, r.pick([0, 0.01, 0.03, 0.1]));
  const tracked: Tracked[] = [];
  const clients: Client[] = [];
  const aborts: AbortController[] = [];
  const consumers: Promise<void>[] = [];
  let seen = 0;

  const track = (what: string, p: Promise<unknown>): void => {
    const t = { settled: false, what };
    tracked.push(t);
    p.then(
      () => {
        t.settled = true;
      },
      (e) => {
        t.settled = true;
        if (!(e instanceof RpcError)) problems.push(`${what} rejected with a non-RpcError: ${String(e)}`);
      },
    );
  };
  const keepClient = (what: string, p: Promise<Client>): void => {
    track(what, p);
    p.then((c) => clients.push(c), () => {});
  };
  const consume = (what: string, s: ValueStream<unknown>, rc: Rng): void => {
    const t = { settled: false, what };
    tracked.push(t);
    consumers.push(
      (async () => {
        try {
          for (;;) {
            const x = await s.next();
            if (x.done) break;
            if (rc.chance(0.03)) {
              s.cancel();
            }
          }
        } catch (e) {
          if (!(e instanceof RpcError)) problems.push(`${what} failed with a non-RpcError: ${String(e)}`);
        } finally {
          t.settled = true;
        }
      })(),
    );
  };

  const rc = new Rng(seed ^ 0x5bd1e995);
  const clientAction = (): void => {
    const cap = r.pick([2, 2, 3, 4, 7]);
    const counter = conn.clientFor(cap, InteropCounter);
    const opts = (): { deadlineMs?: number; signal?: AbortSignal } => {
      const o: { deadlineMs?: number; signal?: AbortSignal } = {};
      if (r.chance(0.2)) o.deadlineMs = r.pick([1, 10, 1e12]);
      if (r.chance(0.2)) {
        const ac = new AbortController();
        aborts.push(ac);
        o.signal = ac.signal;
      }
      return o;
    };
    try {
      switch (r.int(12)) {
        case 0:
          return keepClient("bootstrap", conn.bootstrap(InteropCounter, opts()));
        case 1:
          return track("get", counter.get(opts()));
        case 2:
          return track("echo", counter.echo(gen.value(), opts()));
        case 3:
          return keepClient("makeChild", counter.makeChild({ name: "c" }, opts()));
        case 4:
          return track("children", counter.children({ names: ["a", "b"] }, opts()));
        case 5:
          return track("childMap", counter.childMap({ names: ["a"] }, opts()));
        case 6:
        case 7:
          return consume("ticks", counter.ticks({ n: r.int(50) }, opts()), rc);
        case 8:
          return track("runtime", conn.call(1, "appName", undefined, opts()));
        case 9: {
          const ac = aborts.splice(r.int(aborts.length + 1), 1)[0];
          return ac?.abort();
        }
        case 10: {
          const c = clients.splice(r.int(clients.length + 1), 1)[0];
          if (c === undefined) return;
          if (r.chance(0.5)) return release(c);
          return track("dispose", dispose(c));
        }
        default:
          if (r.chance(0.5)) conn.unserve(Fuzz);
          else conn.serve(Fuzz, fuzzImpl, { ifExists: r.pick(["skip", "replace"] as const) });
          return;
      }
    } catch (e) {
      // Serving after close throws `unavailable`; nothing else may throw.
      if (!(e instanceof RpcError)) problems.push(`a client action threw ${String(e)}`);
    }
  };

  /** Learns the ids of the client's calls and the caps it exported, from what it sent. */
  const learn = (): void => {
    for (; seen < peer.got.length; seen++) {
      const f = peer.got[seen]!;
      const key = [f["op"], f["ev"] ?? f["ok"], f["error"]?.["code"]].filter((x) => x !== undefined).join(" ");
      sent.set(key, (sent.get(key) ?? 0) + 1);
      if (f["op"] === "call" && typeof f["id"] === "number") known.clientIds.push(f["id"]);
      if (f["op"] === "result" && f["ok"] === true) {
        const v = f["value"];
        for (const x of Array.isArray(v) ? v : [v]) if (x instanceof CapRef) known.exported.push(x.id);
      }
    }
  };

  if (r.chance(0.9)) peer.hello();
  const steps = 10 + r.int(70);
  let step = 0;
  void conn.closed.then((reason) => closes.push({ step, steps, reason: reason.slice(0, 80) }));
  for (; step < steps; step++) {
    learn();
    if (r.chance(0.3)) clientAction();
    else {
      const out = gen.out((v) => enc.encode(v));
      if (trace) console.error(step, "bytes" in out ? Buffer.from(out.bytes).toString("hex").slice(0, 200) : inspect(out.value, { depth: 4, maxStringLength: 40, breakLength: 200 }).slice(0, 400));
      try {
        if ("bytes" in out) peer.sendBytes(out.bytes);
        else peer.sendBytes(enc.encode(out.value));
      } catch {
        // A value msgpackr cannot encode: nothing sent.
      }
    }
    const pause = r.int(4);
    if (pause === 1) await Promise.resolve();
    else if (pause >= 2) await immediate();
  }

  // The peer goes away: its transport closes, or it says goaway first; or the client closes.
  const end = r.int(3);
  if (end === 0) b.close();
  else if (end === 1) {
    peer.send({ op: "goaway", reason: "peer_closing" });
    b.close();
  } else conn.close();

  let settleTimer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<"timeout">((res) => (settleTimer = setTimeout(() => res("timeout"), SETTLE_MS)));
  const closed = await Promise.race([conn.closed, deadline]);
  if (closed === "timeout") problems.push("the connection did not close");
  const all = Promise.all(consumers).then(async () => {
    while (tracked.some((t) => !t.settled)) await immediate();
  });
  if ((await Promise.race([all, deadline])) === "timeout") {
    problems.push(`not settled: ${tracked.filter((t) => !t.settled).map((t) => t.what).join(", ")}`);
  }
  clearTimeout(settleTimer);
  await immediate();
  try {
    assertClean(conn);
  } catch {
    problems.push(`tables not empty: ${JSON.stringify(conn.stats())}`);
  }
  const left = timers() - timersBefore;
  if (left > 0) problems.push(`${left} timer(s) left`);
  if (unexpected.length > 0) {
    problems.push(...unexpected.map((e) => `thrown or rejected unhandled: ${(e as Error)?.stack ?? String(e)}`));
    unexpected = [];
  }
  return problems;
}

