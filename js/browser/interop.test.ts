// Every check of ../shared/spec/INTEROP.md inside headless Chromium: the page (served from
// disk by a small HTTP server on http://127.0.0.1, a secure context, so WebCrypto's
// `crypto.subtle` is there for the sealed pipe) loads the compiled web client as ES modules
// (msgpackr through an import map, as web/demo.html does) and runs the checks of
// ../test/interop_checks.ts, the same ones the Node suite runs, against
// `bunite-rpc interop-server` over a real WebSocket, plain and sealed. Each check is one
// page.evaluate and one test here, failing with the check's name and the browser's message;
// each mode ends by closing the connection and asserting the page logged no error.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, resolve, sep } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import type { Page } from "playwright-core";

import { KEY, interopChecks } from "../test/interop_checks.js";
import { portableAssert } from "../test/portable_assert.js";
import { start, type Server } from "../test/server.js";
import type { Outcome } from "./interop_page.js";
import { launch, pageErrors, type Browser } from "./chromium.js";

const PAGE_MODULE = "/dist/browser/interop_page.js";
const js = fileURLToPath(new URL("../../", import.meta.url));

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bunite-rpc interop checks</title>
<link rel="icon" href="data:,">
<script type="importmap">{ "imports": { "msgpackr": "/vendor/msgpackr/index.js" } }</script>
</head><body></body></html>`;

/** The file a page path names: `/dist/…` the compiled client and tests, `/vendor/msgpackr/…` msgpackr's ES modules. */
function fileOf(path: string): string | undefined {
  for (const [prefix, dir] of [["/dist/", "dist"], ["/vendor/msgpackr/", "node_modules/msgpackr"]] as const) {
    if (!path.startsWith(prefix)) continue;
    const base = resolve(js, dir);
    const file = resolve(base, decodeURIComponent(path.slice(prefix.length)));
    return file.startsWith(base + sep) ? file : undefined;
  }
  return undefined;
}

/**
 * Serves PAGE at `/` and the files of `fileOf` on a loopback port. A real server rather
 * than playwright's routing: Chromium's local network access checks block a WebSocket to
 * 127.0.0.1 from a page whose response came from no address (a routed one), and allow it
 * from a page served on loopback.
 */
async function servePage(): Promise<{ origin: string; server: HttpServer }> {
  const types: Record<string, string> = { ".js": "text/javascript; charset=utf-8", ".map": "application/json" };
  const server = createServer(async (req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    const file = fileOf(path);
    try {
      if (path === "/") res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(PAGE);
      else if (file === undefined) res.writeHead(404).end("not found");
      else res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" }).end(await readFile(file));
    } catch {
      res.writeHead(404).end("not found");
    }
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

/** The check names, in the order they must run; none is skipped in the browser. */
const names = interopChecks(portableAssert).map((c) => c.name);

describe("the interop checks inside headless Chromium", () => {
  let browser: Browser;
  let http: { origin: string; server: HttpServer };

  before(async () => {
    http = await servePage();
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    if (http !== undefined) {
      http.server.closeAllConnections();
      await new Promise((done) => http.server.close(done));
    }
  });

  for (const mode of ["plain", "sealed"] as const) {
    describe(`against bunite-rpc interop-server (${mode})`, () => {
      let server: Server;
      let page: Page;
      let errors: string[];

      before(async () => {
        server = await start(["interop-server", ...(mode === "sealed" ? ["--key", KEY] : [])]);
        page = await browser.context.newPage();
        errors = pageErrors(page);
        await page.goto(`${http.origin}/`);
        await page.evaluate(
          async ([module, url, mode]) => (await import(module)).open(url, mode),
          [PAGE_MODULE, server.urls[0]!, mode] as const,
        );
      });

      after(async () => {
        await page?.close();
        await server?.stop();
      });

      for (const name of names) {
        test(name, { timeout: 60_000 }, async () => {
          const outcome: Outcome = await page.evaluate(async ([module, name]) => (await import(module)).run(name), [PAGE_MODULE, name] as const);
          assert.ok(outcome.ok, `${name} (${mode}) failed in Chromium: ${outcome.message}`);
        });
      }

      test("the connection closes and the page logged no error", async () => {
        await page.evaluate(async (module) => (await import(module)).close(), PAGE_MODULE);
        assert.deepEqual(errors, []);
      });
    });
  }
});
