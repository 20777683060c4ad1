// Text a peer chose, kept or sent back by this connection: cut to a bound first, as the Rust
// peer cuts it (`PEER_TEXT`, `clip_peer_text`, `clip_peer_status` and `clipped` in
// crates/bunite-rpc/src/session/mod.rs).

import type { Status } from "./status.js";

/**
 * The most UTF-8 bytes of a peer's text kept or sent back: a cancel's reason (echoed in the
 * cancelled result and sent again in the cancel of every call its handler made), a goaway's
 * reason and its error's message (every pending call gets its own copy), and the cap names,
 * versions and method names quoted back in error messages. Beyond it the text is cut at a
 * character boundary and marked with `…`.
 */
export const PEER_TEXT = 1024;

/** The bytes `text` takes in UTF-8 (a lone surrogate is sent as U+FFFD, 3 bytes). */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
    bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : pair ? 4 : 3;
    if (pair) i++;
  }
  return bytes;
}

/** `text` cut to at most {@link PEER_TEXT} bytes of UTF-8 (plus the `…`), never inside a character. */
export function clipPeerText(text: string): string {
  // A UTF-16 unit takes at most 3 bytes of UTF-8 (a surrogate pair takes 4 for its two).
  if (text.length * 3 <= PEER_TEXT) return text;
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
    // A lone surrogate is sent as U+FFFD, 3 bytes.
    const n = c < 0x80 ? 1 : c < 0x800 ? 2 : pair ? 4 : 3;
    if (bytes + n > PEER_TEXT) return text.slice(0, i) + "…";
    bytes += n;
    if (pair) i++;
  }
  return text;
}

/**
 * A peer's status cut to what a goaway keeps, as the Rust peer's `clip_peer_status`: its
 * code and retry, its message clipped ({@link clipPeerText}), and of its details only a
 * `reason` of at most {@link PEER_TEXT} bytes (the rest of the details, which may be any
 * value, is dropped).
 */
export function clipPeerStatus(full: Status): Status {
  const kept: Status = { code: full.code };
  if (full.message !== undefined) kept.message = clipPeerText(full.message);
  const why = full.details?.reason;
  if (typeof why === "string" && utf8Length(why) <= PEER_TEXT) kept.details = { reason: why };
  if (full.retry !== undefined) kept.retry = full.retry;
  return kept;
}
