// The sealed pipe's IVs (PROTOCOL §2 says only that they are 12 bytes; how we draw and check
// them is ours), with the rules of the Rust pipe (`crates/bunite-rpc/src/transport/sealed.rs`):
// no I/O, nothing awaited, so that `sealed.ts` decides nothing but when to call these.
//
// Our sink sends `salt (8 random bytes) ‖ counter (4 bytes, big-endian, from 0)`, a fresh salt
// before the first message and after every 2^32, so its IVs never repeat. Our source refuses,
// after authentication and in this order: a message whose IV carries one of our own salts (our
// message sent back to us), an IV among the last 1,024 it accepted (their last 8 bytes, as the
// Rust source keeps them), and an IV with the salt of the last one accepted but not the next
// counter (a message of a peer that numbers its IVs as we do dropped, reordered or replayed
// from beyond the window). A peer with random IVs never repeats a salt, and has the window only.

/** How many accepted IVs a source remembers to refuse replays (the Rust pipe's `REPLAY_WINDOW`). */
export const REPLAY_WINDOW = 1024;

/** Which rule refused an inbound sealed message (the Rust pipe's `OpenError` variants). */
export type OpenErrorKind = "too_short" | "version" | "auth" | "replay" | "reflected" | "out_of_sequence";

/** An inbound sealed message refused; the message is the Rust pipe's `OpenError` text for the same rule. */
export class SealedOpenError extends Error {
  constructor(
    readonly kind: OpenErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "SealedOpenError";
  }
}

export const tooShort = (len: number, min: number) => new SealedOpenError("too_short", `sealed message of ${len} bytes is shorter than ${min}`);

export const badVersion = (v: number) =>
  new SealedOpenError(
    "version",
    `sealed message starts with 0x${v.toString(16).padStart(2, "0")}, not 0x01: the peer is probably not using the encrypted pipe (check that both sides have the same key setting)`,
  );

export const badTag = () => new SealedOpenError("auth", "sealed message failed authentication (a different key, or an altered message)");

const view = (iv: Uint8Array) => new DataView(iv.buffer, iv.byteOffset, iv.byteLength);

/** The salts of one pipe's own IVs: its sink adds them, its source refuses IVs that carry one. */
export type OurSalts = Set<bigint>;

/** The IVs of one sink: `salt ‖ counter`, drawn in the order the messages are sent. */
export class SinkIvs {
  private readonly salt = new Uint8Array(8);
  private counter = 0xffff_ffff;

  constructor(private readonly ours: OurSalts) {}

  /** The next IV: a fresh salt before the first message and after counter 2^32 - 1. */
  next(): Uint8Array {
    if (this.counter === 0xffff_ffff) {
      globalThis.crypto.getRandomValues(this.salt);
      this.ours.add(view(this.salt).getBigUint64(0));
      this.counter = 0;
    } else {
      this.counter += 1;
    }
    const iv = new Uint8Array(12);
    iv.set(this.salt);
    view(iv).setUint32(8, this.counter);
    return iv;
  }
}

/** What one source has accepted: the replay window and the last salt and counter. */
export class SourceIvs {
  /** The last `REPLAY_WINDOW` accepted IVs (their last 8 bytes), as a set and in arrival order. */
  private readonly seen = new Set<bigint>();
  private readonly ring: bigint[] = [];
  private nextSlot = 0;
  /** The salt and counter of the last IV accepted (none yet: `lastSalt` undefined). */
  private lastSalt: bigint | undefined;
  private lastCounter = 0;

  constructor(private readonly ours: OurSalts) {}

  /** Refuses (throws) an IV of ours, one already accepted, or one out of sequence; else remembers it. */
  admit(iv: Uint8Array): void {
    const v = view(iv);
    const salt = v.getBigUint64(0);
    if (this.ours.has(salt)) throw new SealedOpenError("reflected", "sealed message reflected (it is one of ours, sent back to us)");
    const key = v.getBigUint64(4);
    if (this.seen.has(key)) throw new SealedOpenError("replay", "sealed message replayed (its IV was already accepted on this connection)");
    const counter = v.getUint32(8);
    if (this.lastSalt === salt && counter !== ((this.lastCounter + 1) >>> 0)) {
      throw new SealedOpenError(
        "out_of_sequence",
        `sealed message out of sequence (counter ${counter} after ${this.lastCounter}: a message was dropped, reordered or replayed)`,
      );
    }
    this.lastSalt = salt;
    this.lastCounter = counter;
    if (this.ring.length < REPLAY_WINDOW) {
      this.ring.push(key);
    } else {
      this.seen.delete(this.ring[this.nextSlot]!);
      this.ring[this.nextSlot] = key;
    }
    this.seen.add(key);
    this.nextSlot = (this.nextSlot + 1) % REPLAY_WINDOW;
  }
}
