// The README's example: bootstrap a typed cap, call it, a sub-cap, a stream.
// Run with: node --experimental-websocket dist/examples/quickstart.js ws://127.0.0.1:PORT/rpc
// (against `bunite-rpc interop-server`).

import { connect, dispose } from "../src/index.js";
import { InteropCounter } from "../src/interop.gen.js"; // written by `bunite-rpc typegen`

export async function main(url: string): Promise<number[]> {
  const conn = await connect(url);
  const counter = await conn.bootstrap(InteropCounter);
  const { count } = await counter.increment({ delta: 5 }); // typed: { count: number }
  const child = await counter.makeChild({ name: "ada" }); // a typed sub-cap
  console.log(count, await child.ping({ x: 41 })); // 5 42
  await dispose(child); // its close(), then the drop
  const seen: number[] = [];
  for await (const { i } of counter.ticks({ n: 3 })) seen.push(i); // credit flows back as you read
  conn.close();
  return seen;
}

if (process.argv[1]?.endsWith("quickstart.js") && process.argv[2]) console.log(await main(process.argv[2]));
