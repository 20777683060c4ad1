// What the seeded random tests against the Rust server (`random_ops.ts`,
// `random_goaways.test.ts`) share to bound and check their operations: a mismatch, waits
// with a bound, and the count of live timers (a test ends with none of its own left).

/** A mismatch between what happened and what should have. */
export class Mismatch extends Error {}

/** How long anything may take to settle. */
export const OP_MS = 5000;

export function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Mismatch(message);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The process's live timers. */
export const timers = () => process.getActiveResourcesInfo().filter((x) => x === "Timeout").length;

/** Rejects with "did not settle" if `p` takes longer than `ms`; clears its timer either way. */
export function bounded<T>(what: string, p: Promise<T>, ms = OP_MS): Promise<T> {
  let t: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Mismatch(`${what} did not settle within ${ms} ms`)), ms)));
  return Promise.race([p, limit]).finally(() => clearTimeout(t));
}

/** Polls `f` until it holds (at most `ms`); the last value it saw. */
export async function until<T>(f: () => Promise<T>, ok: (v: T) => boolean, ms = 2000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (ok(v) || Date.now() > end) return v;
    await sleep(10);
  }
}

/**
 * Runs `run` on the `fixed` seeds, then either for `BUNITE_FUZZ_SECONDS` seconds on seeds
 * from `BUNITE_FUZZ_SEED` (a random one by default), printing `name`'s count and each line of
 * `summary()`, or else on seeds 1 to `defaults`. True in the second case, in which the caller
 * then checks that the seeds reached what they aim at.
 */
export async function runSeeds(
  name: string,
  fixed: readonly number[],
  defaults: number,
  run: (seed: number) => Promise<void>,
  summary: () => string[],
): Promise<boolean> {
  for (const seed of fixed) await run(seed);
  const seconds = Number(process.env["BUNITE_FUZZ_SECONDS"] ?? 0);
  if (seconds <= 0) {
    for (let seed = 1; seed <= defaults; seed++) await run(seed);
    return true;
  }
  let seed = Number(process.env["BUNITE_FUZZ_SEED"] ?? Date.now() % 2 ** 31);
  const end = Date.now() + seconds * 1000;
  let n = 0;
  do {
    await run(seed++);
    n++;
  } while (Date.now() < end);
  console.log(`${name}: ${n} sequences, seeds up to ${seed - 1}`);
  for (const line of summary()) console.log(line);
  return false;
}
