// Timers for deadlines (PROTOCOL §11): `setTimeout` fires at once for a delay past 2^31-1 ms
// (24.8 days), so a peer's long deadline would fail a call, or signal a handler, at once.

/** The longest delay `setTimeout` keeps. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * Runs `f` once after `ms` milliseconds, however long (a delay past `setTimeout`'s bound is
 * re-armed in steps); returns what stops it. A delay that is not finite and positive arms
 * nothing (as the Rust peer ignores a deadline that is not finite).
 */
export function timeout(f: () => void, ms: number): (() => void) | undefined {
  if (!Number.isFinite(ms) || !(ms > 0)) return undefined;
  let left = ms;
  let t: ReturnType<typeof setTimeout>;
  const step = (): void => {
    const d = Math.min(left, MAX_TIMEOUT_MS);
    left -= d;
    t = setTimeout(() => (left > 0 ? step() : f()), d);
  };
  step();
  return () => clearTimeout(t);
}
