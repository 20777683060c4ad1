// The names this peer serves (PROTOCOL §8): what serve, replace and bootstrap check against
// them, decided before anything changes (the Rust peer's `Registry`). Plain data: it sends
// nothing, and the cap table's bootstrap instances are `cap_table.ts`'s.

import { clipPeerText } from "./peer_text.js";
import type { Impl } from "./serving.js";
import { type RpcError, rpcError } from "./status.js";
import type { CapDef } from "./types.js";

/**
 * What serving a name that is already served does (PROTOCOL §8), as the Rust peer's
 * `IfExists`: `"throw"` (the default) fails `already_exists` `{reason:"name_collision"}`;
 * `"skip"` leaves the existing registration and the handle owns nothing; `"replace"` switches
 * the name to the new implementation as `replace` does (same version required).
 */
export type IfExists = "throw" | "skip" | "replace";

/** Options of `serve` and `serveAll`. */
export interface ServeOptions {
  ifExists?: IfExists;
}

/** Returned by `serve` and `serveAll`: owns the names it served. */
export interface ServeHandle {
  /** The names this handle owns (none for those `ifExists: "skip"` left alone). */
  readonly names: readonly string[];
  /**
   * Unserves the names it owns, as `Connection.unserve` does, with one `cap_revoked` for all of
   * them; once. A name since unserved (and perhaps served again by another `serve`) is left
   * alone; one since replaced is still this handle's.
   */
  unserve(): void;
}

/** A served name: its definition and implementation, and the registration they belong to. */
export interface Served {
  def: CapDef;
  impl: Impl;
  /** Made by the `serve` that inserted the name, kept by its replacements: a handle unserves only its own. */
  registration: object;
}

/** What serving one cap will do, decided before anything changes (the Rust peer's `Plan`). */
export type Plan = "insert" | "skip" | "replace";

const RESERVED_PREFIX = "bunite.";

export class Registry {
  private readonly served = new Map<string, Served>();

  get(name: string): Served | undefined {
    return this.served.get(name);
  }

  set(name: string, served: Served): void {
    this.served.set(name, served);
  }

  /** Removes `name`; whether it was served. */
  delete(name: string): boolean {
    return this.served.delete(name);
  }

  /**
   * Checks the caps of one `serve` or `serveAll` (PROTOCOL §8, the Rust peer's `serve_all`):
   * reserved prefix, collision, version on replace, and for a batch a name twice in it. Throws
   * the first failure's `RpcError`.
   */
  planServe(defs: CapDef[], ifExists: IfExists): Plan[] {
    return defs.length === 1 ? [this.plan(defs[0]!, ifExists, false)] : this.planAll(defs, ifExists);
  }

  /** Checks one cap against the registry (the Rust peer's `Registry::plan`). */
  plan(def: CapDef, ifExists: IfExists, batch: boolean): Plan {
    const name = def.name;
    if (name.startsWith(RESERVED_PREFIX)) {
      throw rpcError("already_exists", `cap name "${name}" uses reserved prefix "${RESERVED_PREFIX}"`, "reserved_namespace");
    }
    const existing = this.served.get(name);
    if (existing === undefined) return "insert";
    if (ifExists === "throw") throw collision(name);
    if (ifExists === "skip") return "skip";
    if (existing.def.version !== def.version) {
      const [cur, next] = [String(existing.def.version), String(def.version)];
      const message = batch
        ? `version mismatch on replace for "${name}" (current "${cur}", new "${next}")`
        : `version mismatch (current "${cur}", new "${next}")`;
      throw rpcError("failed_precondition", message, "version_mismatch");
    }
    return "replace";
  }

  /** Why a bootstrap of `name` (with the client's `version`) is refused, if it is (PROTOCOL §8 steps 2–3). */
  checkBootstrap(name: string, version: string | undefined): RpcError | undefined {
    // Names and versions the peer chose are quoted back cut (as the Rust peer's `clipped`),
    // and compared whole.
    const served = this.served.get(name);
    if (served === undefined) return rpcError("not_found", `cap "${clipPeerText(name)}" not served`);
    const sv = served.def.version;
    if (sv !== undefined && version !== undefined && version !== sv) {
      const message = `version mismatch (server "${sv}", client "${clipPeerText(version)}")`;
      return rpcError("failed_precondition", message, "version_mismatch");
    }
    return undefined;
  }

  /** Checks a whole batch: each cap, and no name twice in it. */
  private planAll(defs: CapDef[], ifExists: IfExists): Plan[] {
    const seen = new Set<string>();
    return defs.map((def) => {
      const plan = this.plan(def, ifExists, true);
      if (seen.has(def.name)) throw collision(def.name);
      seen.add(def.name);
      return plan;
    });
  }
}

function collision(name: string): RpcError {
  return rpcError("already_exists", `cap "${name}" already served`, "name_collision");
}
