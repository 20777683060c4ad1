// Compile-time checks, never run: `npm run build` (tsc --strict) fails if a line under an
// expect-error directive compiles, so a wrong method name or argument type on a generated cap
// is a tsc error, and the right ones are not.

import { dispose, type Connection } from "../src/index.js";
import { InteropChild, InteropCounter } from "../src/interop.gen.js";

export async function typed(conn: Connection): Promise<void> {
  const counter = await conn.bootstrap(InteropCounter);
  const n: number = (await counter.increment({ delta: 2 })).count;
  await counter.increment();
  const kid = await counter.makeChild({ name: "ada" });
  const kidName: string = await kid.name();
  for await (const t of counter.ticks({ n })) void t.i;
  await dispose(kid);
  void kidName;

  // @ts-expect-error: no such method on interop.counter
  await counter.noSuchMethod();
  // @ts-expect-error: delta is a number
  await counter.increment({ delta: "2" });
  // @ts-expect-error: makeChild takes {name}
  await counter.makeChild({ nom: "ada" });
  // @ts-expect-error: makeChild's params are required
  await counter.makeChild();
  // @ts-expect-error: the result is a Count, not a number
  const wrong: number = await counter.get();
  // @ts-expect-error: a child has no increment
  await kid.increment();
  // @ts-expect-error: stream values are Ticks
  for await (const t of counter.ticks({ n: 1 })) void t.count;
  // @ts-expect-error: a definition lists exactly the interface's methods
  const bad: typeof InteropChild = { name: "interop.child", methods: { name: { kind: "call" } } };
  void wrong;
  void bad;
}
