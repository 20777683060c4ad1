// The demo page's tour, the terminal demo's steps in the browser: bootstrap, a call, a
// sub-cap, a stream with a live progress bar and a cancel button, a cancelled call, a policy
// denial, a revocation. Each step writes its outcome into its <li> (data-status ok/error),
// which the Chromium test reads.

import { RpcError, capId, connect, dispose, type Connection } from "../src/index.js";
import { InteropCounter, InteropEphemeral, InteropSecret } from "../src/interop.gen.js";

const $ = <T extends HTMLElement>(sel: string) => document.querySelector<T>(sel)!;

function step(name: string, status: "running" | "ok" | "error", text: string): void {
  const li = $(`#step-${name}`);
  li.dataset["status"] = status;
  li.querySelector<HTMLElement>(".text")!.textContent = text;
}

const describe = (e: unknown) => (e instanceof RpcError ? `${e.code}: ${e.message}${e.reason ? ` (${e.reason})` : ""}` : String(e));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function tour(conn: Connection): Promise<void> {
  step("bootstrap", "running", "bootstrapping interop.counter…");
  const counter = await conn.bootstrap(InteropCounter);
  step("bootstrap", "ok", `interop.counter → cap-id ${capId(counter)}`);

  const { count } = await counter.increment({ delta: 5 });
  step("call", "ok", `increment({delta: 5}) → {count: ${count}}`);

  const kid = await counter.makeChild({ name: "ada" });
  const id = capId(kid);
  const name = await kid.name();
  await dispose(kid);
  step("subcap", "ok", `makeChild({name: "ada"}) → cap-id ${id} named "${name}"; disposed (close, then drop)`);

  // A stream consumed at a person's pace: the server sends only as credit comes back.
  const n = 200;
  const bar = $<HTMLProgressElement>("#stream-progress");
  const cancel = $<HTMLButtonElement>("#stream-cancel");
  bar.max = n;
  bar.value = 0;
  const ticks = counter.ticks({ n });
  cancel.disabled = false;
  cancel.onclick = () => ticks.cancel();
  step("stream", "running", `ticks({n: ${n}}): 0/${n}`);
  let got = 0;
  for await (const t of ticks) {
    got = t.i + 1;
    bar.value = got;
    step("stream", "running", `ticks({n: ${n}}): ${got}/${n}`);
    await sleep(25);
  }
  cancel.disabled = true;
  step("stream", "ok", got === n ? `ticks({n: ${n}}): all ${n} values (credit-based flow control)` : `ticks({n: ${n}}): cancelled at ${got}/${n}`);

  const ac = new AbortController();
  setTimeout(() => ac.abort(), 100);
  const t0 = performance.now();
  try {
    await counter.slow({ ms: 5000 }, { signal: ac.signal });
    step("cancel", "error", "slow was not cancelled");
  } catch (e) {
    step("cancel", "ok", `slow({ms: 5000}) cancelled after ${Math.round(performance.now() - t0)} ms → ${describe(e)}`);
  }

  try {
    await conn.bootstrap(InteropSecret);
    step("policy", "error", "the policy let interop.secret through");
  } catch (e) {
    step("policy", "ok", `bootstrap interop.secret → ${describe(e)}`);
  }

  const eph = await conn.bootstrap(InteropEphemeral);
  await eph.unserveMe();
  for (;;) {
    try {
      await eph.ping();
      await sleep(10);
    } catch (e) {
      step("revoke", "ok", `interop.ephemeral unserved by the server → ${describe(e)}`);
      break;
    }
  }
}

async function main(): Promise<void> {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/rpc`;
  const again = $<HTMLButtonElement>("#run-again");
  const run = async () => {
    again.disabled = true;
    const conn = await connect(url);
    $("#status").textContent = `connected to ${url}`;
    try {
      await tour(conn);
      $("#status").textContent = "tour complete";
      document.body.dataset["tour"] = "done";
    } catch (e) {
      $("#status").textContent = `tour failed: ${describe(e)}`;
      document.body.dataset["tour"] = "failed";
    } finally {
      conn.close();
      again.disabled = false;
    }
  };
  again.onclick = () => void run();
  await run();
}

void main();
