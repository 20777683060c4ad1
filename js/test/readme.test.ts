// The README's example (examples/quickstart.ts) runs against the interop server.

import assert from "node:assert/strict";
import { test } from "node:test";

import { main } from "../examples/quickstart.js";
import { start } from "./server.js";

test("the README example runs", async () => {
  const server = await start(["interop-server"]);
  try {
    assert.deepEqual(await main(server.urls[0]!), [0, 1, 2]);
  } finally {
    await server.stop();
  }
});
