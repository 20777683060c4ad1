// Starts `bunite-rpc` subcommands for the tests: the binary built by cargo (set
// BUNITE_RPC_BIN to use another), its `listening URL` lines read off its stdout.

import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

export const BIN = process.env["BUNITE_RPC_BIN"] ?? fileURLToPath(new URL("../../../target/debug/bunite-rpc", import.meta.url));

export interface Server {
  child: ChildProcess;
  /** Every URL the command printed (`listening URL`, or `web URL` for the demo). */
  urls: string[];
  stop(): Promise<void>;
}

/** Spawns `bunite-rpc ...args` and waits for `count` lines starting with `prefix`. */
export function start(args: string[], prefix = "listening ", count = 1): Promise<Server> {
  const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "inherit"] });
  const urls: string[] = [];
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${BIN} ${args.join(" ")} printed no URL in 20 s: ${out}`)), 20_000);
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`${BIN} exited with ${code}: ${out}`)));
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (chunk: string) => {
      out += chunk;
      for (const line of out.split("\n")) {
        const i = line.indexOf(prefix);
        if (i >= 0) {
          const url = line.slice(i + prefix.length).trim().split(/\s/)[0]!;
          if (!urls.includes(url)) urls.push(url);
        }
      }
      if (urls.length >= count) {
        clearTimeout(timer);
        resolve({ child, urls, stop });
      }
    });
  });
}
