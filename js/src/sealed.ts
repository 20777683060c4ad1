// The encrypted pipe (PROTOCOL §2) through WebCrypto: each message becomes
// `0x01 ‖ IV (12 random bytes) ‖ AES-256-GCM(ciphertext ‖ 16-byte tag)`, no associated data.
// A message with another first byte, shorter than 29 bytes, or failing authentication
// closes the pipe. WebCrypto is asynchronous, so both directions run through a promise chain
// that keeps the messages in order.

import type { Transport, TransportEvents } from "./transport.js";

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

/** Seals one message with `iv` (fresh and random for every message, except in tests). */
export async function seal(key: CryptoKey, plaintext: Uint8Array, iv?: Uint8Array): Promise<Uint8Array> {
  const nonce = iv ?? globalThis.crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(await subtle().encrypt({ name: "AES-GCM", iv: nonce as BufferSource }, key, plaintext as BufferSource));
  const out = new Uint8Array(1 + 12 + ct.length);
  out[0] = 0x01;
  out.set(nonce, 1);
  out.set(ct, 13);
  return out;
}

/** Opens one sealed message; rejects on a wrong version byte, a short message or a bad tag. */
export async function open(key: CryptoKey, wire: Uint8Array): Promise<Uint8Array> {
  if (wire.length < SEALED_OVERHEAD) throw new Error(`sealed message of ${wire.length} bytes`);
  if (wire[0] !== 0x01) throw new Error(`sealed message version ${wire[0]}`);
  const iv = wire.subarray(1, 13);
  try {
    return new Uint8Array(await subtle().decrypt({ name: "AES-GCM", iv: iv as BufferSource }, key, wire.subarray(13) as BufferSource));
  } catch {
    throw new Error("sealed message failed authentication");
  }
}

/** Wraps `inner` in the pipe with `key` (32 raw bytes or an imported key). */
export function sealed(inner: Transport, key: Uint8Array | CryptoKey): Transport {
  const keyP = key instanceof Uint8Array ? importKey(key) : Promise.resolve(key);
  let sending: Promise<unknown> = keyP;
  let receiving: Promise<unknown> = keyP;
  let broken = false;
  let events: TransportEvents | undefined;
  const fail = (message: string) => {
    if (broken) return;
    broken = true;
    events?.protocolError(`encrypted pipe: ${message}`);
    inner.close();
  };
  return {
    start(e) {
      events = e;
      inner.start({
        message(data) {
          const copy = data.slice();
          receiving = receiving.then(async () => {
            if (broken) return;
            try {
              const plain = await open(await keyP, copy);
              if (!broken) e.message(plain);
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
      sending = sending.then(async () => {
        if (broken) return;
        try {
          inner.send(await seal(await keyP, copy));
        } catch (err) {
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
