// ProtocolStream: a WebSocket over an in-memory byte stream, both roles, the
// input split at arbitrary points; and the opening handshake as a stream step.
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import fc from "fast-check"
import * as FrameDecoder from "../../src/domain/FrameDecoder.ts"
import * as FrameEncoder from "../../src/domain/FrameEncoder.ts"
import * as Handshake from "../../src/domain/Handshake.ts"
import { Opcode } from "../../src/domain/Opcode.ts"
import type { Role } from "../../src/domain/Protocol.ts"
import * as ProtocolStream from "../../src/services/ProtocolStream.ts"
import { clientFrame } from "../../src/testing.ts"
import { concatBytes, splitAt } from "../support/Bytes.ts"

const enc = (s: string) => new TextEncoder().encode(s)
const KEY = new Uint8Array([9, 8, 7, 6])
const plain = (e: FrameDecoder.DecoderEvent) => ("data" in e ? { ...e, data: Array.from(e.data) } : e)
const msg = (data: string) => ({ _tag: "Message", binary: false, data: Array.from(enc(data)), compressed: false })
const ping = (data: string) => ({ _tag: "Ping", data: Array.from(enc(data)) })
const pong = (data: string) => ({ _tag: "Pong", data: Array.from(enc(data)) })
const close = (code: number | undefined, reason = "") => ({ _tag: "Close", code, reason })

/** A frame from the peer of `role`: the test kit's masked client frame to a server, a plain one to a client. */
const fromPeer = (role: Role, opcode: number, payload: Uint8Array | string = "", fin = true) =>
  role === "server"
    ? clientFrame({ opcode, payload, fin })
    : FrameEncoder.encodeFrameConcat({ opcode, fin }, typeof payload === "string" ? enc(payload) : payload)

/** Decode what `role` wrote, as its peer would (client frames must be masked, server frames must not). */
const decodeSent = (role: Role, bytes: ReadonlyArray<Uint8Array>) => {
  const result = FrameDecoder.make({ role: role === "server" ? "client" : "server" }).feed(concatBytes(bytes))
  expect(result.error).toBeUndefined()
  return result.events.map(plain)
}

const options = (role: Role) => ({ role, maskKey: role === "client" ? () => KEY : undefined })

/** Run a socket over the chunks: collect the events (echoing messages when asked), then the outgoing bytes. */
const exchange = (role: Role, chunks: ReadonlyArray<Uint8Array>, echo = false) =>
  Effect.gen(function*() {
    // One chunk per pull, as reads from a socket come.
    const ws = yield* ProtocolStream.make(Stream.fromIterable(chunks.map((c) => c.slice()), { chunkSize: 1 }), options(role))
    const events: Array<ReturnType<typeof plain>> = []
    yield* Stream.runForEach(ws.events, (e) => {
      events.push(plain(e))
      return echo && e._tag === "Message" ? ws.send(e.binary, e.data) : Effect.void
    })
    const sent = yield* Stream.runCollect(ws.outgoing)
    return { events, sent: decodeSent(role, sent), info: ws.protocol.closeInfo() }
  })

const conversation = (role: Role) =>
  concatBytes([
    fromPeer(role, Opcode.Text, "hel", false),
    fromPeer(role, Opcode.Continuation, "lo"),
    fromPeer(role, Opcode.Ping, "p"),
    fromPeer(role, Opcode.Close, FrameEncoder.closePayload(1000, "bye")),
    fromPeer(role, Opcode.Text, "never read")
  ])

describe("ProtocolStream.make: a WebSocket over a byte stream", () => {
  for (const role of ["server", "client"] as const) {
    describe(role, () => {
      it.effect("events in order; the pong and the close echo come out on `outgoing`, which then ends", () =>
        Effect.gen(function*() {
          const result = yield* exchange(role, [conversation(role)])
          expect(result.events).toEqual([msg("hello"), ping("p"), close(1000, "bye")])
          expect(result.sent).toEqual([pong("p"), close(1000)])
          expect(result.info).toEqual({ code: 1000, reason: "bye", wasClean: true, initiatedBy: "peer" })
        }))

      it.effect("the close echo waits until the messages before it were handled (same chunk)", () =>
        Effect.gen(function*() {
          const result = yield* exchange(role, [conversation(role)], true)
          expect(result.sent).toEqual([pong("p"), msg("hello"), close(1000)])
        }))

      it.effect("our close: `outgoing` ends after it; the events go on until the peer's answer", () =>
        Effect.gen(function*() {
          const input = concatBytes([fromPeer(role, Opcode.Pong, "late"), fromPeer(role, Opcode.Close, FrameEncoder.closePayload(1000))])
          const ws = yield* ProtocolStream.make(Stream.make(input), options(role))
          expect(yield* ws.close(4000, "done")).toBe(true)
          expect(yield* ws.sendText("too late")).toBe(false)
          expect(decodeSent(role, yield* Stream.runCollect(ws.outgoing))).toEqual([close(4000, "done")])
          expect((yield* Stream.runCollect(ws.events)).map(plain)).toEqual([pong("late"), close(1000)])
          expect(ws.protocol.closeInfo()).toEqual({ code: 4000, reason: "done", wasClean: true, initiatedBy: "local" })
        }))

      it.effect("a bad frame: the events before it, then close 1002 out and the events end", () =>
        Effect.gen(function*() {
          const result = yield* exchange(role, [concatBytes([fromPeer(role, Opcode.Text, "ok"), fromPeer(role, 0x3), fromPeer(role, Opcode.Text, "no")])])
          expect(result.events).toEqual([msg("ok")])
          expect(result.sent).toMatchObject([{ _tag: "Close", code: 1002 }])
        }))

      it.effect("the input ends without a close: both streams end, 1006 by the transport", () =>
        Effect.gen(function*() {
          const result = yield* exchange(role, [fromPeer(role, Opcode.Text, "a")])
          expect(result.events).toEqual([msg("a")])
          expect(result.sent).toEqual([])
          expect(result.info).toEqual({ code: 1006, reason: "", wasClean: false, initiatedBy: "transport" })
        }))

      it.effect("the input fails: the events fail with its error, `outgoing` ends, 1006", () =>
        Effect.gen(function*() {
          const input = Stream.concat(Stream.make(fromPeer(role, Opcode.Text, "a")), Stream.fail("reset" as const))
          const ws = yield* ProtocolStream.make(input, options(role))
          const outgoing = yield* Effect.forkChild(Stream.runCollect(ws.outgoing))
          const seen: Array<unknown> = []
          const error = yield* Effect.flip(Stream.runForEach(ws.events, (e) => Effect.sync(() => seen.push(plain(e)))))
          expect(error).toBe("reset")
          expect(seen).toEqual([msg("a")])
          expect(yield* Fiber.join(outgoing)).toEqual([])
          expect(ws.protocol.closeInfo()).toMatchObject({ code: 1006, initiatedBy: "local" })
        }))

      it.effect("holdClose: the echo waits for `update(releaseClose)`; answers can go first", () =>
        Effect.gen(function*() {
          const ws = yield* ProtocolStream.make(Stream.make(conversation(role)), { ...options(role), holdClose: true })
          const outgoing = yield* Effect.forkChild(Stream.runCollect(ws.outgoing))
          yield* Stream.runDrain(ws.events)
          yield* ws.sendText("answer")
          yield* ws.update((p) => p.releaseClose())
          expect(decodeSent(role, yield* Fiber.join(outgoing))).toEqual([pong("p"), msg("answer"), close(1000)])
        }))

      it("property: any split of the input gives the same events and the same output", () =>
        fc.assert(
          fc.asyncProperty(fc.array(fc.nat(), { maxLength: 10 }), async (cuts) => {
            const bytes = conversation(role)
            const whole = await Effect.runPromise(exchange(role, [bytes]))
            expect(await Effect.runPromise(exchange(role, splitAt(bytes, cuts)))).toEqual(whole)
          }),
          { numRuns: 100 }
        ))
    })
  }
})

// ---- the opening handshake as a stream step ----

const request = Handshake.clientRequest({ host: "test", path: "/chat", key: "dGhlIHNhbXBsZSBub25jZQ==", protocols: ["v2", "v1"] })

describe("ProtocolStream.readRequest", () => {
  it.effect("the request head, then the rest of the bytes (frames sent with the request)", () =>
    Effect.gen(function*() {
      const frames = concatBytes([clientFrame({ opcode: Opcode.Text, payload: "early" }), clientFrame({ opcode: Opcode.Ping })])
      const { request: head, rest } = yield* ProtocolStream.readRequest(Stream.make(concatBytes([request, frames])))
      expect(head.path).toBe("/chat")
      expect(Handshake.header(head, "sec-websocket-protocol")).toBe("v2, v1")
      expect(Array.from(concatBytes(yield* Stream.runCollect(rest)))).toEqual(Array.from(frames))
    }))

  it.effect("the input ends inside the head: 400", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ProtocolStream.readRequest(Stream.make(request.subarray(0, 20))))
      expect(error).toMatchObject({ _tag: "HandshakeError", status: 400 })
    }))

  it.effect("a head over the limit: 431 without reading on", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ProtocolStream.readRequest(Stream.make(request), { maxHeaderBytes: 32 }))
      expect(error).toMatchObject({ _tag: "HandshakeError", status: 431 })
    }))

  it("property: any split gives the same head and the same rest", () =>
    fc.assert(
      fc.asyncProperty(fc.array(fc.nat(), { maxLength: 12 }), async (cuts) => {
        const bytes = concatBytes([request, clientFrame({ opcode: Opcode.Binary, payload: new Uint8Array([1, 2, 3]) })])
        const read = (chunks: ReadonlyArray<Uint8Array>) =>
          Effect.runPromise(Effect.scoped(Effect.gen(function*() {
            const { request: head, rest } = yield* ProtocolStream.readRequest(Stream.fromIterable(chunks))
            return { head, rest: Array.from(concatBytes(yield* Stream.runCollect(rest))) }
          })))
        expect(await read(splitAt(bytes, cuts))).toEqual(await read([bytes]))
      }),
      { numRuns: 100 }
    ))
})

describe("ProtocolStream.accept: a server over a byte stream", () => {
  it.effect("101 with the chosen subprotocol, then the WebSocket: echo, pong, close", () =>
    Effect.gen(function*() {
      // The head split, a frame in the same chunk as its end; the ping comes after the echo went out.
      const input = [
        request.subarray(0, 5),
        concatBytes([request.subarray(5), clientFrame({ opcode: Opcode.Text, payload: "hi" })]),
        clientFrame({ opcode: Opcode.Ping, payload: "p" }),
        clientFrame({ opcode: Opcode.Close, payload: FrameEncoder.closePayload(1000) })
      ]
      const result = yield* ProtocolStream.accept(Stream.fromIterable(input, { chunkSize: 1 }), {
        protocol: (offered) => offered.find((p) => p === "v1")
      })
      if (result._tag !== "Accepted") return expect.unreachable()
      const ws = result.socket
      yield* Stream.runForEach(ws.events, (e) => (e._tag === "Message" ? ws.send(e.binary, e.data) : Effect.void))
      const out = concatBytes(yield* Stream.runCollect(ws.outgoing))
      const step = Handshake.stepResponse(Handshake.initialResponseParser(), out)
      if (step._tag !== "Response") return expect.unreachable()
      expect(step.response.status).toBe(101)
      expect(Handshake.validateResponse(step.response, "dGhlIHNhbXBsZSBub25jZQ==", { protocols: ["v2", "v1"] }))
        .toMatchObject({ _tag: "Ok", protocol: "v1" })
      expect(decodeSent("server", [step.rest])).toEqual([msg("hi"), pong("p"), close(1000)])
    }))

  it.effect("not an upgrade: Rejected with the HTTP error response", () =>
    Effect.gen(function*() {
      const result = yield* ProtocolStream.accept(Stream.make(enc("POST / HTTP/1.1\r\nHost: a\r\n\r\n")))
      expect(result).toMatchObject({ _tag: "Rejected", error: { status: 405 } })
      if (result._tag === "Rejected") expect(new TextDecoder().decode(result.response)).toMatch(/^HTTP\/1\.1 405 /)
    }))
})
