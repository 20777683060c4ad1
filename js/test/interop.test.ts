// Every check of ../shared/spec/INTEROP.md, run from Node by the web client against
// `bunite-rpc interop-server` over WebSocket, plain and inside the sealed pipe: one
// `node:test` test per check of interop_checks.ts, which holds them (the browser suite,
// ../browser/interop.test.ts, runs the same checks inside Chromium).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import type { Connection } from "../src/index.js";
import { KEY, interopChecks, openInterop, type Sent } from "./interop_checks.js";
import { start, type Server } from "./server.js";

for (const mode of ["plain", "sealed"] as const) {
  describe(`interop checks against bunite-rpc interop-server (${mode})`, () => {
    let server: Server;
    let conn: Connection;
    const sent: Sent = [];

    before(async () => {
      server = await start(["interop-server", ...(mode === "sealed" ? ["--key", KEY] : [])]);
      conn = await openInterop(server.urls[0]!, mode, sent);
    });

    after(async () => {
      conn.close();
      await conn.closed;
      await server.stop();
    });

    for (const check of interopChecks(assert)) test(check.name, () => check.run({ conn, sent }));
  });
}
