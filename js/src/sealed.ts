// The encrypted pipe (PROTOCOL §2) through WebCrypto: each message becomes
// `0x01 ‖ IV (12 bytes) ‖ AES-256-GCM(ciphertext ‖ 16-byte tag)`, no associated data, with the
// Rust pipe's rules for IVs (sealed_ivs.ts): ours are `salt ‖ counter`; a message of another
// first byte, shorter than 29 bytes, failing authentication, reflected, replayed or out of
// sequence is refused. A refusal is final: nothing after it is delivered, the connection is
// told (`protocolError`, with the Rust `OpenError`'s text), sends its goaway through the pipe
// and closes it. WebCrypto is asynchronous, so both directions run through a promise chain
// that keeps the messages in order; each message's IV is drawn when it is sent, so counters
// follow the order of `send`.

import { SinkIvs, SourceIvs, badTag, badVersion, tooShort, type OurSalts } from "./sealed_ivs.js";
import type { Transport, TransportEvents } from "./transport.js";

export { REPLAY_WINDOW, SealedOpenError, type OpenErrorKind } from "./sealed_ivs.js";

/** Bytes the pipe adds to each message. */
export const SEALED_OVERHEAD = 1 + 12 + 16;

const subtle = (): SubtleCrypto => {
  const s = globalThis.crypto?.subtle;
  if (s === undefined) throw new Error("WebCrypto is not available (the page needs a secure context: https or localhost)");
  return s;
};

/** Imports a 32-byte key for the pipe. */
export async function importKey(raw: Uint8Array): Promise<CryptoKey> {
  if (raw.length !== 32) throw new RangeError(`the pipe key is 32 bytes, not ${raw.length}`);
  return subtle().importKey("raw", raw as BufferSource, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/** Parses a key written as 64 hex digits. */
export function keyFromHex(hex: string): Uint8Array {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new RangeError("the pipe key is 64 hex digits");
  return Uint8Array.from(hex.match(/../g)!.map((b) => parseInt(b, 16)));
}

/**
 * Seals one message with `iv` (12 random bytes if none: for one-off messages; `sealed` draws
 * its own). Never reuse an IV with the same key.
 */
export async function seal(key: CryptoKey, plaintext: Uint8Array, iv?: Uint8Array): Promise<Uint8Array> {
  const nonce = iv ?? globalThis.crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(await subtle().encrypt({ name: "AES-GCM", iv: nonce as BufferSource }, key, plaintext as BufferSource));
  const out = new Uint8Array(1 + 12 + ct.length);
  out[0] = 0x01;
  out.set(nonce, 1);
  out.set(ct, 13);
  return out;
}

/**
 * Opens one sealed message: checks its length, version and tag (a `SealedOpenError` otherwise).
 * The IV rules need a connection's state: `sealed` applies them.
 */
export async function open(key: CryptoKey, wire: Uint8Array): Promise<Uint8Array> {
  if (wire.length < SEALED_OVERHEAD) throw tooShort(wire.length, SEALED_OVERHEAD);
  if (wire[0] !== 0x01) throw badVersion(wire[0]!);
  const iv = wire.subarray(1, 13);
  try {
    return new Uint8Array(await subtle().decrypt({ name: "AES-GCM", iv: iv as BufferSource }, key, wire.subarray(13) as BufferSource));
  } catch {
    throw badTag();
  }
}

/** Wraps `inner` in the pipe with `key` (32 raw bytes or an imported key). */
export function sealed(inner: Transport, key: Uint8Array | CryptoKey): Transport {
  const keyP = key instanceof Uint8Array ? importKey(key) : Promise.resolve(key);
  const ours: OurSalts = new Set();
  const sinkIvs = new SinkIvs(ours);
  const sourceIvs = new SourceIvs(ours);
  // The chains never reject: a key that fails to import fails each message's `await keyP`.
  let sending: Promise<unknown> = keyP.catch(() => {});
  let receiving: Promise<unknown> = sending;
  /** A message was refused (or the key failed): nothing more is opened or delivered. */
  let refused = false;
  /** Sealing failed: nothing more is sent (a later message would leave a gap in our counters). */
  let sinkFailed = false;
  let events: TransportEvents | undefined;
  const fail = (message: string) => {
    if (refused) return;
    refused = true;
    // The connection sends its goaway (still sealed, as the Rust peer's) and closes; the
    // inner transport closes after what was queued, with or without a connection.
    events?.protocolError(message);
    sending = sending.then(() => inner.close());
  };
  return {
    start(e) {
      events = e;
      inner.start({
        message(data) {
          const copy = data.slice();
          receiving = receiving.then(async () => {
            if (refused) return;
            try {
              const plain = await open(await keyP, copy);
              if (refused) return;
              sourceIvs.admit(copy.subarray(1, 13));
              e.message(plain);
            } catch (err) {
              fail((err as Error).message);
            }
          });
        },
        protocolError: (m) => e.protocolError(m),
        closed(reason) {
          // Deliver what was already received first.
          receiving = receiving.then(() => e.closed(reason));
        },
      });
      keyP.catch((err: Error) => fail(err.message));
    },
    send(data) {
      const copy = data.slice();
      // Drawn now, not in the chain: the counters follow the order of the calls to `send`.
      const iv = sinkIvs.next();
      sending = sending.then(async () => {
        if (sinkFailed) return;
        try {
          inner.send(await seal(await keyP, copy, iv));
        } catch (err) {
          sinkFailed = true;
          fail((err as Error).message);
        }
      });
    },
    close() {
      // Close after the queued messages went out.
      sending = sending.then(() => inner.close());
    },
  };
}
