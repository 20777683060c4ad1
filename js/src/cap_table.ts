// The caps this peer exports (PROTOCOL §7): the cap table with its refcounts, the live
// bootstrap instance of each served name, the `maxCaps` bound, and running a cap's disposal
// method once it is gone. Plain data but for the disposal, which runs the application's code.

import type { CallContext, Impl } from "./serving.js";
import { rpcError } from "./status.js";
import type { CapDef } from "./types.js";

export interface Entry {
  def: CapDef;
  impl: Impl;
  refs: number;
  /** The registry name, for a bootstrap instance. */
  name: string | undefined;
}

export class CapTable {
  private readonly table = new Map<number, Entry>();
  private readonly instances = new Map<string, number>();
  private nextCapId = 2;

  constructor(private readonly maxCaps: number) {}

  get size(): number {
    return this.table.size;
  }

  get(id: number): Entry | undefined {
    return this.table.get(id);
  }

  /** Exports `e` under a new cap-id; `resource_exhausted` past `maxCaps`. */
  allocate(e: Entry): number {
    if (this.table.size + 2 >= this.maxCaps) {
      throw rpcError("resource_exhausted", `cap-table limit ${this.maxCaps}`, "max_caps_per_connection");
    }
    const id = this.nextCapId++;
    this.table.set(id, e);
    return id;
  }

  free(id: number): void {
    const e = this.table.get(id);
    if (e === undefined) return;
    this.table.delete(id);
    if (e.name !== undefined && this.instances.get(e.name) === id) this.instances.delete(e.name);
  }

  /**
   * The cap-id a bootstrap of the served name `name` gets: its live instance, one more
   * reference, or a new instance of `def` and `impl` (throws past `maxCaps`).
   */
  bootstrap(name: string, def: CapDef, impl: Impl): number {
    const existing = this.instances.get(name);
    if (existing !== undefined && this.table.has(existing)) {
      this.table.get(existing)!.refs += 1;
      return existing;
    }
    const capId = this.allocate({ def, impl, refs: 1, name });
    this.instances.set(name, capId);
    return capId;
  }

  /** The live bootstrap instance of `name`, if any: its cap-id and entry. */
  instance(name: string): { id: number; entry: Entry | undefined } | undefined {
    const id = this.instances.get(name);
    return id === undefined ? undefined : { id, entry: this.table.get(id) };
  }

  /** The name's live bootstrap instance, if any, now runs `impl` (calls to it find the new handlers). */
  switchInstance(def: CapDef, impl: Impl): void {
    const entry = this.instance(def.name)?.entry;
    if (entry === undefined) return;
    entry.def = def;
    entry.impl = impl;
  }

  /** The peer's `drop`: each cap loses `delta` references and is freed at none (ids 0 and 1 are not ours). */
  drop(caps: Array<{ id: number; delta: number }>): void {
    for (const { id, delta } of caps) {
      if (id <= 1) continue;
      const e = this.table.get(id);
      if (e === undefined) continue;
      e.refs -= delta;
      if (e.refs <= 0) this.free(id);
    }
  }

  /** Empties the table (at shutdown); returns what was live, for their disposal. */
  drain(): Entry[] {
    const live = [...this.table.values()];
    this.table.clear();
    this.instances.clear();
    return live;
  }
}

/** Runs the disposal method of a cap that is gone, if it has one; its errors are ignored. */
export async function runDisposal(e: Entry): Promise<void> {
  const d = e.def.disposal;
  const h = d !== undefined && Object.hasOwn(e.impl, d) ? e.impl[d] : undefined;
  if (typeof h !== "function") return;
  try {
    await h.call(e.impl, undefined, undefined as unknown as CallContext);
  } catch {
    // Disposal errors are ignored.
  }
}
