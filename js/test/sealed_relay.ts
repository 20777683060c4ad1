// A man in the middle of the sealed pipe, for the tests of its rules (sealed_pipe.test.ts): it
// holds the other ends of two transports and passes the sealed messages whole, one direction
// at a time and in order. It has the key, so it opens every genuine message and decodes it
// with a decoder of its own per direction: a test finds the message that carries a call, and
// reads the goaway a side sends. A direction's `tamper` says what to deliver in place of each
// genuine message (none, it twice, another one, ...); `inject` delivers anything at once.

import { FrameDecoder, open, type Transport } from "../src/index.js";

export type Frame = Record<string, any>;

/** One genuine message of a direction: its bytes, and its frame (`undefined` if it did not open or decode). */
export interface Seen {
  bytes: Uint8Array;
  frame: Frame | undefined;
  /** Its place among the direction's genuine messages (from 0). */
  index: number;
}

export class Direction {
  readonly seen: Seen[] = [];
  /** What to deliver in place of each genuine message (by default the message itself). */
  tamper: ((m: Seen) => Uint8Array[]) | undefined;
  private readonly decoder = new FrameDecoder();
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly key: CryptoKey,
    private readonly to: Transport,
  ) {}

  /** A genuine message from the sender: opened, decoded, then passed through `tamper`, in order. */
  received(data: Uint8Array): void {
    const bytes = data.slice();
    this.chain = this.chain.then(async () => {
      let frame: Frame | undefined;
      try {
        frame = this.decoder.decode(await open(this.key, bytes)) as Frame;
      } catch {
        frame = undefined;
      }
      const m = { bytes, frame, index: this.seen.length };
      this.seen.push(m);
      for (const out of this.tamper ? this.tamper(m) : [bytes]) this.inject(out);
    });
  }

  /** Delivers `bytes` to the receiver now. */
  inject(bytes: Uint8Array): void {
    this.to.send(bytes);
  }

  /** The frames seen so far. */
  frames(): Frame[] {
    return this.seen.flatMap((m) => (m.frame === undefined ? [] : [m.frame]));
  }

  /** The goaway the sender sent, if any. */
  goaway(): Frame | undefined {
    return this.frames().find((f) => f["op"] === "goaway");
  }

  /** Waits until every message received so far has been passed on. */
  async settled(): Promise<void> {
    await this.chain;
  }
}

/**
 * A relay between `a` (the other end of A's transport) and `b` (of B's): `toB` carries A's
 * messages, `toA` B's. When either end closes, so does the other.
 */
export function relay(key: CryptoKey, a: Transport, b: Transport): { toA: Direction; toB: Direction } {
  const toA = new Direction(key, a);
  const toB = new Direction(key, b);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    // After what is still being passed on.
    void Promise.all([toA.settled(), toB.settled()]).then(() => {
      a.close();
      b.close();
    });
  };
  a.start({ message: (d) => toB.received(d), protocolError: () => {}, closed: close });
  b.start({ message: (d) => toA.received(d), protocolError: () => {}, closed: close });
  return { toA, toB };
}
