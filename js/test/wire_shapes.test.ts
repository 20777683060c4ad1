// The TypeScript that `typegen` writes against what the wire carries, both ways: each call
// sends a value its generated type allows to `test.wireShapes` on `bunite-rpc
// interop-server --wire-shapes`, which decodes it as the Rust type and sends it back encoded from it. Each
// expected result is a literal of the generated type (tsc checks it fits) that the received
// value must equal; where the type cannot say what arrives, the module docs of bunite-rpc's
// `typescript.rs` give the rule and the test pins the runtime value it is about.
// docs/RELIABILITY.md, "TypeScript bindings against the wire (2026-12-07)".

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Connection, openWebSocket, type Client } from "../src/index.js";
import { start, type Server } from "./server.js";
import * as gen from "./wire_shapes.gen.js";

describe("generated types against test.wireShapes", () => {
  let server: Server;
  let conn: Connection;
  let s: Client<gen.WireShapes>;

  before(async () => {
    server = await start(["interop-server", "--wire-shapes"]);
    conn = new Connection(await openWebSocket(server.urls[0]!), { origin: "wire shapes test" });
    s = await conn.bootstrap(gen.WireShapes);
  });

  after(async () => {
    conn.close();
    await conn.closed;
    await server.stop();
  });

  test("structs: rename_all, skipped and optional Options, char, f32, integers up to 2^53", async () => {
    const sent: gen.Fields = {
      firstName: "a", plainOpt: 1, skippedOpt: 2, optionalOnly: 3, doubleOpt: 4,
      letter: "é", single: 1.5, big: 2 ** 53, neg: -(2 ** 53),
    };
    const want: gen.Fields = { ...sent };
    assert.deepStrictEqual(await s.fields(sent), want);
    // `skippedOpt` left out (the type allows it) and left out again; `optionalOnly`
    // (#[ts(optional)] without skip_serializing_if) comes back as an undefined property,
    // which `optionalOnly?: number` allows (no exactOptionalPropertyTypes).
    const few: gen.Fields = { firstName: "a", plainOpt: null, doubleOpt: null, letter: "x", single: 0.1, big: 0, neg: -1 };
    const got = await s.fields(few);
    assert.ok(!("skippedOpt" in got));
    assert.ok("optionalOnly" in got && got.optionalOnly === undefined);
    // An f32 comes back widened, still a number.
    assert.equal(got.single, Math.fround(0.1));
    // The rule of the docs: `plainOpt: number | null` (no attributes) gets undefined for
    // None, and so does Option<Option<T>> for both None and Some(None).
    assert.equal(got.plainOpt, undefined);
    assert.equal(got.doubleOpt, undefined);
  });

  test("integers beyond 2^53 arrive as bigint (the docs' rule: #[ts(type = \"number | bigint\")])", async () => {
    const edge: number = await s.wide(String(2 ** 53));
    assert.equal(edge, 2 ** 53);
    assert.equal(await s.wide("9007199254740993"), 9007199254740993n as unknown);
    assert.equal(await s.wideNeg("-9007199254740993"), -9007199254740993n as unknown);
    // A number the type allows, sent above 2^53, comes back a bigint.
    const got = await s.fields({ firstName: "a", plainOpt: null, doubleOpt: null, letter: "x", single: 0, big: 2 ** 53 + 2, neg: 0 });
    assert.equal(got.big, 9007199254740994n as unknown);
  });

  test("externally, internally and adjacently tagged enums", async () => {
    const ext: gen.External[] = ["Unit", { New: 1 }, { Pair: [1, "a"] }, { Named: { x: 2 } }];
    assert.deepStrictEqual(await s.external(ext), ext);
    const int: gen.Internal[] = [{ type: "Unit" }, { type: "Named", x: 2 }];
    assert.deepStrictEqual(await s.internal(int), int);
    const adj: gen.Adjacent[] = [{ t: "Unit" }, { t: "New", c: 3 }];
    assert.deepStrictEqual(await s.adjacent(adj), adj);
  });

  test("untagged enums; the unit variant, sent as null, arrives as undefined (the docs' rule)", async () => {
    const sent: gen.Untagged[] = [1, "a", null];
    assert.deepStrictEqual(await s.untagged(sent), [1, "a", undefined]);
  });

  test("tuples, newtype and tuple structs; unit values inside a type arrive as undefined", async () => {
    const sent: gen.Nested = { pair: [1, "a"], meters: 2.5, point: [1, 2], marker: null, unit: null, holes: [1, null] };
    const got = await s.nested(sent);
    const agreed: Pick<gen.Nested, "pair" | "meters" | "point"> = { pair: [1, "a"], meters: 2.5, point: [1, 2] };
    assert.deepStrictEqual({ pair: got.pair, meters: got.meters, point: got.point }, agreed);
    // ts-rs writes `null` for a unit struct, `()` and None in a Vec: undefined arrives.
    assert.deepStrictEqual([got.marker, got.unit, got.holes], [undefined, undefined, [1, undefined]]);
  });

  test("maps: string keys are objects; integer keys arrive as a Map (the docs' rule), sent either way", async () => {
    const sent: gen.Maps = { by_name: { a: 1 }, by_id: { 1: "one", 4000000000: "big" } };
    const got = await s.maps(sent);
    const names: gen.Maps["by_name"] = { a: 1 };
    assert.deepStrictEqual(got.by_name, names);
    assert.deepStrictEqual(got.by_id as unknown, new Map([[1, "one"], [4000000000, "big"]]));
    const asMap = await s.maps({ by_name: {}, by_id: new Map([[2, "two"]]) as unknown as gen.Maps["by_id"] });
    assert.deepStrictEqual(asMap.by_id as unknown, new Map([[2, "two"]]));
  });

  test("bytes: Vec<u8> is a number array, serde_bytes with its ts type and Blob are Uint8Arrays", async () => {
    const sent: gen.Bytes = { list: [1, 255], typed_buf: Uint8Array.of(3), blob: Uint8Array.of(4) };
    assert.deepStrictEqual(await s.bytes(sent), sent);
  });

  test("flatten, with the flattened optional field left out and sent", async () => {
    const without: gen.Flat = { a: 1, b: 2 };
    assert.deepStrictEqual(await s.flat(without), without);
    const withC: gen.Flat = { a: 1, b: 2, c: 3 };
    assert.deepStrictEqual(await s.flat(withC), withC);
  });

  test("#[serde(default)]: the type asks for every field; Rust also takes them left out", async () => {
    const full: gen.Defaults = { n: 1, s: "x" };
    assert.deepStrictEqual(await s.defaults(full), full);
    const none = await s.defaults({} as gen.Defaults);
    const filled: gen.Defaults = { n: 0, s: "" };
    assert.deepStrictEqual(none, filled);
  });

  test("an Option result is `T | undefined`: None arrives as undefined", async () => {
    // The value pinned from the run, typed with the generated result type (with ts-rs's
    // `number | null` this does not compile).
    const none: Awaited<ReturnType<gen.WireShapes["maybe"]>> = undefined;
    assert.equal(await s.maybe(-1), none);
    assert.equal(await s.maybe(1), 1);
  });
});
