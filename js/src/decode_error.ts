// Why a message was refused before msgpackr read it (`decode_budget.ts`): the error the
// connection answers with goaway `invalid_argument`, and the shorthands the walk throws.

/** Why a message was refused before it was decoded. */
export type DecodeErrorKind =
  /** It would take more heap once decoded than its budget (PROTOCOL §13.11). */
  | "over_budget"
  /** Values nest deeper than the depth limit (PROTOCOL §4). */
  | "too_deep"
  /** The record definitions would keep more than the record table's bound. */
  | "record_table_full"
  /** Not one value msgpackr with the connection's options reads: a bad or unknown token, a cut-off, trailing bytes. */
  | "malformed";

/** A message refused by the decoder: a protocol error (the connection answers with goaway). */
export class DecodeError extends Error {
  constructor(
    readonly kind: DecodeErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "DecodeError";
  }
}

export function malformed(message: string): DecodeError {
  return new DecodeError("malformed", message);
}

export function cutOff(): DecodeError {
  return malformed("the message ends inside a value");
}

export function tooDeep(limit: number): DecodeError {
  return new DecodeError("too_deep", `value nested deeper than ${limit}`);
}

/** A string that is not UTF-8: the Rust decoder's `InvalidUtf8`, with its message. */
export function notUtf8(): DecodeError {
  return malformed("string is not valid UTF-8");
}
