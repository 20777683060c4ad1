// An upper bound of a value's encoded size, without encoding it: the stateful encoder must
// not encode a frame it will not send (its record table would run ahead of the peer's), so
// a frame that may exceed the peer's maxBytes is first measured with a throwaway encoder.

import { CapRef } from "./codec.js";

/** An upper bound of the msgpack size of `v` (records counted as full definitions). */
export function sizeBound(v: unknown, budget: number): number {
  let total = 0;
  const stack: unknown[] = [v];
  while (stack.length > 0 && total <= budget) {
    const x = stack.pop();
    if (x === null || x === undefined || typeof x === "boolean") total += 3;
    else if (typeof x === "number" || typeof x === "bigint") total += 9;
    else if (typeof x === "string") total += 5 + 3 * x.length;
    else if (ArrayBuffer.isView(x)) total += 7 + x.byteLength;
    else if (x instanceof ArrayBuffer) total += 7 + x.byteLength;
    else if (x instanceof CapRef) total += 8;
    else if (x instanceof Date) total += 15;
    else if (Array.isArray(x)) {
      total += 5;
      for (const c of x) stack.push(c);
    } else if (x instanceof Map) {
      total += 5;
      for (const [k, c] of x) stack.push(k, c);
    } else if (typeof x === "object") {
      const keys = Object.keys(x);
      total += 8 + keys.length * 5;
      for (const k of keys) {
        total += 3 * k.length;
        stack.push((x as Record<string, unknown>)[k]);
      }
    } else total += 9;
  }
  return total;
}
