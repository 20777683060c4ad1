// The end-to-end test in a real browser: Debian's headless Chromium (driven by
// playwright-core) opens the page `bunite-rpc demo --web` serves, which loads the web client
// from the same Rust server; the page bootstraps a cap, calls it, opens a stream whose
// progress shows in the DOM, which this test cancels with the page's button, and sees a
// policy denial and a revocation. The test reads the DOM and saves a screenshot as
// target/web-demo.png (BUNITE_DOCS_SCREENSHOT=1 also writes docs/web-demo.png).

import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { start } from "../test/server.js";
import { launch, pageErrors } from "./chromium.js";

const repo = fileURLToPath(new URL("../../../", import.meta.url));

test("the demo page tours the protocol in headless Chromium", { timeout: 90_000 }, async () => {
  const server = await start(["demo", "--web"], "web ");
  const browser = await launch();
  try {
    const page = browser.context.pages()[0] ?? (await browser.context.newPage());
    const errors = pageErrors(page);
    await page.goto(server.urls[0]!);

    // The stream runs at a person's pace: wait for progress, then press Cancel.
    await page.waitForFunction(() => (document.querySelector("#stream-progress") as HTMLProgressElement).value >= 30, null, { timeout: 30_000 });
    await page.click("#stream-cancel");
    await page.waitForSelector("body[data-tour]", { timeout: 30_000 });
    assert.equal(await page.getAttribute("body", "data-tour"), "done", await page.textContent("#status") ?? "");

    const step = async (name: string) => ({
      status: await page.getAttribute(`#step-${name}`, "data-status"),
      text: (await page.textContent(`#step-${name} .text`))?.trim() ?? "",
    });
    const bootstrap = await step("bootstrap");
    assert.match(bootstrap.text, /^interop\.counter → cap-id \d+$/);
    assert.equal((await step("call")).text, "increment({delta: 5}) → {count: 5}");
    assert.match((await step("subcap")).text, /makeChild\({name: "ada"}\) → cap-id \d+ named "ada"; disposed/);
    const stream = await step("stream");
    const progress = await page.$eval("#stream-progress", (p) => (p as HTMLProgressElement).value);
    assert.match(stream.text, /cancelled at \d+\/200/);
    assert.ok(progress >= 30 && progress < 200, `progress ${progress}`);
    assert.match((await step("cancel")).text, /cancelled: cancelled by the client/);
    assert.match((await step("policy")).text, /failed_precondition: policy denied \(unauthorized\)/);
    assert.match((await step("revoke")).text, /failed_precondition: cap revoked \(revoked\)/);
    for (const name of ["bootstrap", "call", "subcap", "stream", "cancel", "policy", "revoke"]) {
      assert.equal((await step(name)).status, "ok", name);
    }
    assert.deepEqual(errors, []);

    mkdirSync(join(repo, "target"), { recursive: true });
    const shot = join(repo, "target", "web-demo.png");
    await page.screenshot({ path: shot, fullPage: true });
    if (process.env["BUNITE_DOCS_SCREENSHOT"] === "1") copyFileSync(shot, join(repo, "docs", "web-demo.png"));
  } finally {
    await browser.close();
    await server.stop();
  }
});
