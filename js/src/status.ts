// The wire error model (PROTOCOL §12): a Status, and RpcError, the Error every failed call,
// stream or bootstrap rejects with.

/** The status codes of PROTOCOL §12. */
export type Code =
  | "not_found"
  | "failed_precondition"
  | "already_exists"
  | "invalid_argument"
  | "cancelled"
  | "deadline_exceeded"
  | "resource_exhausted"
  | "unavailable"
  | "internal";

const CODES: ReadonlySet<string> = new Set<Code>([
  "not_found",
  "failed_precondition",
  "already_exists",
  "invalid_argument",
  "cancelled",
  "deadline_exceeded",
  "resource_exhausted",
  "unavailable",
  "internal",
]);

/** When a failed call may be retried (set by handlers; the peer itself never sets it). */
export type Retry =
  | { kind: "never" }
  | { kind: "transparent" }
  | { kind: "after-cooldown"; minMs: number }
  | { kind: "after-resync" };

/** A Status as it travels: `{code, message?, details?, retry?}`. */
export interface Status {
  code: Code;
  message?: string;
  details?: { reason?: string; [key: string]: unknown };
  retry?: Retry;
}

/** A failed call, stream, bootstrap or connection. `code` says how to react. */
export class RpcError extends Error {
  readonly code: Code;
  readonly details: Status["details"];
  readonly retry: Retry | undefined;

  constructor(status: Status) {
    super(status.message ?? status.code);
    this.name = "RpcError";
    this.code = status.code;
    this.details = status.details;
    this.retry = status.retry;
  }

  /**
   * `details.reason`, if any (`"revoked"`, `"unauthorized"`, `"version_mismatch"`, …; a call
   * failed by the connection's shutdown has `"goaway"` or `"peer_closing"`, PROTOCOL §12).
   */
  get reason(): string | undefined {
    const r = this.details?.reason;
    return typeof r === "string" ? r : undefined;
  }

  /** The Status to send. */
  toStatus(): Status {
    const s: Status = { code: this.code, message: this.message };
    if (this.details !== undefined) s.details = this.details;
    if (this.retry !== undefined) s.retry = this.retry;
    return s;
  }
}

/** Shorthand: an RpcError with a code, a message and an optional reason. */
export function rpcError(code: Code, message: string, reason?: string): RpcError {
  return new RpcError(reason === undefined ? { code, message } : { code, message, details: { reason } });
}

/**
 * A Status read off the wire, leniently: an unknown code becomes `internal` with the
 * original text in the message (PROTOCOL §12); anything that is not a record becomes
 * `internal` too.
 */
export function statusFrom(raw: unknown): Status {
  if (raw === null || typeof raw !== "object") {
    return { code: "internal", message: "malformed status" };
  }
  const r = raw as Record<string, unknown>;
  const message = typeof r["message"] === "string" ? r["message"] : undefined;
  const code = typeof r["code"] === "string" ? r["code"] : "";
  const status: Status = CODES.has(code)
    ? { code: code as Code, ...(message !== undefined ? { message } : {}) }
    : { code: "internal", message: `${code}: ${message ?? ""}` };
  const details = r["details"];
  if (details !== null && typeof details === "object" && !Array.isArray(details)) {
    status.details = details as Status["details"];
  }
  const retry = retryFrom(r["retry"]);
  if (retry !== undefined) status.retry = retry;
  return status;
}

/**
 * A Retry read off the wire as the Rust peer reads it (`Retry::from_value`): one of the four
 * kinds, `minMs` a non-negative integer (0 otherwise); anything else is no retry. Only these
 * fields are kept, whatever else the peer put in the record.
 */
function retryFrom(raw: unknown): Retry | undefined {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return undefined;
  const r = raw as Record<string, unknown>;
  switch (r["kind"]) {
    case "never":
    case "transparent":
    case "after-resync":
      return { kind: r["kind"] };
    case "after-cooldown": {
      const m = r["minMs"];
      return { kind: "after-cooldown", minMs: typeof m === "number" && Number.isInteger(m) && m >= 0 ? m : 0 };
    }
    default:
      return undefined;
  }
}

/** Any thrown value as a Status: an RpcError keeps its fields; anything else is `internal`. */
export function toStatus(err: unknown): Status {
  if (err instanceof RpcError) return err.toStatus();
  if (err instanceof Error) return { code: "internal", message: err.message };
  return { code: "internal", message: String(err) };
}
