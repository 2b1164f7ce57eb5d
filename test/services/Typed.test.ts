// Typed messages: Schema decoding of incoming JSON, encoding of outgoing values,
// and the decode-error policies (close 1007/1003/1008 or reply), over the test kit.
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Message from "../../src/services/Message.ts"
import * as Router from "../../src/services/Router.ts"
import * as Typed from "../../src/services/Typed.ts"
import * as Testing from "../../src/testing.ts"

const Incoming = Schema.Struct({ text: Schema.String, count: Schema.NumberFromString })
const Outgoing = Schema.Struct({ from: Schema.String, text: Schema.String, count: Schema.NumberFromString })
type Incoming = typeof Incoming.Type

// The handler reports what it received (typed) and answers each message.
const echoApp = (
  received: Array<Incoming>,
  onDecodeError?: Typed.DecodeErrorPolicy<typeof Outgoing.Type>
) =>
  Router.make([
    Router.ws("/", Typed.handler({ incoming: Incoming, outgoing: Outgoing, onDecodeError }, (conn) =>
      conn.messages.pipe(
        Stream.runForEach((m) =>
          Effect.andThen(
            Effect.sync(() => received.push(m)),
            conn.send({ from: "server", text: m.text.toUpperCase(), count: m.count + 1 })
          )
        )
      )))
  ])
const noHeartbeat = { heartbeatIntervalMs: 0 }

describe("decoding and encoding with the route's Schemas", () => {
  it.effect("valid JSON decodes to the typed value; send encodes with the outgoing Schema", () =>
    Effect.gen(function*() {
      const received: Array<Incoming> = []
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* client.sendText(JSON.stringify({ text: "hi", count: "41" }))
        // count went through NumberFromString both ways: a number in the handler, a string on the wire.
        expect(JSON.parse(yield* client.expectText())).toEqual({ from: "server", text: "HI", count: "42" })
        expect(received).toEqual([{ text: "hi", count: 41 }])
        expect(typeof received[0].count).toBe("number")
      }).pipe(Effect.provide(Testing.layer(echoApp(received), noHeartbeat)))
    }))

  it.effect("an invalid outgoing value fails send with CodecError (encode); nothing is sent", () =>
    Effect.gen(function*() {
      const outcome = yield* Deferred.make<unknown>()
      const app = Router.make([
        Router.ws("/", Typed.handler({ incoming: Incoming, outgoing: Outgoing }, (conn) =>
          Effect.gen(function*() {
            const bad = { from: "server", text: 42 } as unknown as typeof Outgoing.Type
            yield* Deferred.succeed(outcome, yield* Effect.flip(conn.send(bad)))
            yield* conn.send({ from: "server", text: "after", count: 1 })
          })))
      ])
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        const error = yield* Deferred.await(outcome)
        expect(error).toBeInstanceOf(Typed.CodecError)
        expect(error).toMatchObject({ _tag: "CodecError", direction: "encode" })
        // The first message on the wire is the valid one.
        expect(JSON.parse(yield* client.expectText())).toEqual({ from: "server", text: "after", count: "1" })
      }).pipe(Effect.provide(Testing.layer(app, noHeartbeat)))
    }))

  it.effect("Typed.json's encode and decode on their own", () =>
    Effect.gen(function*() {
      const codec = Typed.json(Incoming, Outgoing)
      expect(yield* codec.decode(Message.text("{\"text\":\"a\",\"count\":\"2\"}"))).toEqual({ text: "a", count: 2 })
      expect(yield* codec.encode({ from: "s", text: "b", count: 3 })).toBe("{\"from\":\"s\",\"text\":\"b\",\"count\":\"3\"}")
      const bad = yield* Effect.flip(codec.encode({ from: "s" } as unknown as typeof Outgoing.Type))
      expect(bad).toMatchObject({ _tag: "CodecError", direction: "encode" })
      const notJson = yield* Effect.flip(codec.decode(Message.text("{nope")))
      expect(notJson).toMatchObject({ _tag: "CodecError", direction: "decode" })
      const wrongShape = yield* Effect.flip(codec.decode(Message.text("{\"text\":1}")))
      expect(wrongShape).toMatchObject({ _tag: "CodecError", direction: "decode" })
      const binary = yield* Effect.flip(codec.decode(Message.binary(new Uint8Array([123, 125]))))
      expect(binary).toMatchObject({ _tag: "CodecError", direction: "decode" })
    }))
})

describe("decode-error policy", () => {
  it.effect("invalid JSON → close 1007 by default; the handler never sees it", () =>
    Effect.gen(function*() {
      const received: Array<Incoming> = []
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* client.sendText("{not json")
        yield* client.sendText(JSON.stringify({ text: "later", count: "1" }))
        yield* client.expectClose(1007)
        expect(received).toEqual([])
      }).pipe(Effect.provide(Testing.layer(echoApp(received), noHeartbeat)))
    }))

  it.effect("valid JSON of the wrong shape → close 1007, after earlier good messages were answered", () =>
    Effect.gen(function*() {
      const received: Array<Incoming> = []
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* client.sendText(JSON.stringify({ text: "ok", count: "1" }))
        yield* client.sendText(JSON.stringify({ text: "missing count" }))
        expect(JSON.parse(yield* client.expectText())).toMatchObject({ text: "OK" })
        yield* client.expectClose(1007)
        expect(received).toEqual([{ text: "ok", count: 1 }])
      }).pipe(Effect.provide(Testing.layer(echoApp(received), noHeartbeat)))
    }))

  it.effect("a binary message on a JSON route → close 1003 (unsupported data)", () =>
    Effect.gen(function*() {
      const received: Array<Incoming> = []
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* client.sendBinary(new TextEncoder().encode(JSON.stringify({ text: "x", count: "1" })))
        yield* client.expectClose(1003)
        expect(received).toEqual([])
      }).pipe(Effect.provide(Testing.layer(echoApp(received), noHeartbeat)))
    }))

  it.effect("closeOnDecodeError(1008) closes with 1008, binary included", () =>
    Effect.gen(function*() {
      const received: Array<Incoming> = []
      yield* Effect.gen(function*() {
        const server = yield* Testing.TestServer
        const text = yield* server.connect()
        yield* text.sendText("nope")
        yield* text.expectClose(1008)
        const binary = yield* server.connect()
        yield* binary.sendBinary(new Uint8Array([1]))
        yield* binary.expectClose(1008)
      }).pipe(Effect.provide(Testing.layer(echoApp(received, Typed.closeOnDecodeError(1008)), noHeartbeat)))
    }))

  it.effect("replyOnDecodeError → an error reply, and the connection stays open", () =>
    Effect.gen(function*() {
      const received: Array<Incoming> = []
      const policy = Typed.replyOnDecodeError((error) => ({ from: "error", text: error.direction, count: 0 }))
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* client.sendText("{broken")
        expect(JSON.parse(yield* client.expectText())).toEqual({ from: "error", text: "decode", count: "0" })
        yield* client.sendBinary(new Uint8Array([1, 2]))
        expect(JSON.parse(yield* client.expectText())).toEqual({ from: "error", text: "decode", count: "0" })
        yield* client.sendText(JSON.stringify({ text: "fine", count: "9" }))
        expect(JSON.parse(yield* client.expectText())).toEqual({ from: "server", text: "FINE", count: "10" })
        expect(received).toEqual([{ text: "fine", count: 9 }])
        yield* client.close(1000)
        yield* client.expectClose(1000)
      }).pipe(Effect.provide(Testing.layer(echoApp(received, policy), noHeartbeat)))
    }))
})

describe("a custom codec", () => {
  // "add:<n>" in, "sum=<n>" out; binary as a big-endian uint8 list also accepted.
  const Sum = Schema.Struct({ n: Schema.Number })
  const codec: Typed.Codec<{ readonly n: number }, { readonly n: number }> = {
    decode: (message) => {
      if (message._tag === "Binary") return Effect.succeed({ n: message.data.reduce((a, b) => a + b, 0) })
      const match = /^add:(-?\d+)$/.exec(message.text)
      return match === null
        ? Effect.fail(new Typed.CodecError({ direction: "decode", detail: `not add:<n>: ${message.text}` }))
        : Effect.succeed({ n: Number(match[1]) })
    },
    encode: (value) =>
      Number.isInteger(value.n)
        ? Effect.succeed(`sum=${value.n}`)
        : Effect.fail(new Typed.CodecError({ direction: "encode", detail: "not an integer" }))
  }
  const app = Router.make([
    Router.ws("/", Typed.handler({ incoming: Sum, outgoing: Sum, codec }, (conn) =>
      Effect.gen(function*() {
        let total = 0
        yield* conn.messages.pipe(Stream.runForEach((m) => {
          total += m.n
          return conn.send({ n: total })
        }))
      })))
  ])

  it.effect("decodes and encodes with the codec instead of JSON", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.sendText("add:5")
      yield* client.expectText("sum=5")
      yield* client.sendBinary(new Uint8Array([1, 2, 3]))
      yield* client.expectText("sum=11")
      yield* client.sendText("{\"n\":1}") // JSON means nothing to this codec
      yield* client.expectClose(1007)
    }).pipe(Effect.provide(Testing.layer(app, noHeartbeat))))
})
