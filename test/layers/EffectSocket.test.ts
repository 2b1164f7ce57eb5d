// EffectSocket: the reactor's Incoming over an effect/socket Socket built with
// Socket.make on two in-memory queues (one per direction).
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Latch from "effect/Latch"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import * as Socket from "effect/socket/Socket"
import * as FrameDecoder from "../../src/domain/FrameDecoder.ts"
import * as FrameEncoder from "../../src/domain/FrameEncoder.ts"
import * as Handshake from "../../src/domain/Handshake.ts"
import { Opcode } from "../../src/domain/Opcode.ts"
import * as EffectSocket from "../../src/layers/EffectSocket.ts"
import type { App } from "../../src/services/Reactor.ts"
import { serve } from "../../src/services/Server.ts"
import { Transport } from "../../src/services/Transport.ts"
import { clientFrame, settle } from "../../src/testing.ts"
import { concatBytes } from "../support/Bytes.ts"

const enc = (s: string) => new TextEncoder().encode(s)

/**
 * A Socket whose peer writes into `inbound` and reads `outbound`; closing the
 * writer's scope ends `outbound`. Writes wait while `gate` is closed.
 */
const memorySocket = Effect.gen(function*() {
  const gate = yield* Latch.make(true)
  const inbound = yield* Queue.unbounded<Uint8Array, Cause.Done>()
  const outbound = yield* Queue.unbounded<Uint8Array, Cause.Done>()
  const closed = new Socket.SocketError({ reason: new Socket.SocketCloseError({ code: 1000 }) })
  const socket = Socket.make({
    reader: Effect.succeed({
      pull: Effect.catchCause(Queue.takeAll(inbound), () => Effect.fail(closed)),
      upgrade: () => Effect.fail(closed)
    }),
    writer: Effect.as(Effect.addFinalizer(() => Queue.end(outbound)), {
      write: (chunk: Uint8Array | string | Socket.CloseEvent) =>
        Effect.asVoid(chunk instanceof Uint8Array ? Queue.offer(outbound, chunk) : Queue.end(outbound)),
      writeAll: (chunks: ReadonlyArray<Uint8Array | string>) =>
        Effect.andThen(gate.await, Queue.offerAll(outbound, chunks.filter((c): c is Uint8Array => c instanceof Uint8Array)))
    })
  })
  return { socket, inbound, outbound, gate }
})

describe("EffectSocket.fromSocket: the Incoming contract", () => {
  it.effect("chunks reach onData in order; writes go out in order; end() closes the write side after them", () =>
    Effect.gen(function*() {
      const { socket, inbound, outbound } = yield* memorySocket
      const incoming = yield* EffectSocket.fromSocket(socket, { remoteAddress: "10.0.0.1" })
      const seen: Array<string> = []
      let ends = 0
      incoming.listen((chunk) => seen.push(new TextDecoder().decode(chunk)), () => ends++)
      yield* Queue.offerAll(inbound, [enc("a"), enc("b")])
      yield* settle
      expect(seen).toEqual(["a", "b"])
      expect(incoming.write([enc("x"), enc("y")])).toBe(true)
      incoming.end()
      expect(yield* Stream.runCollect(Stream.fromQueue(outbound))).toEqual([enc("x"), enc("y")])
      expect(ends).toBe(0) // reading goes on after our half-close
      yield* Queue.end(inbound)
      yield* settle
      expect(ends).toBe(1)
      expect(incoming.remoteAddress).toBe("10.0.0.1")
    }))

  it.effect("pause stops onData until resume", () =>
    Effect.gen(function*() {
      const { socket, inbound } = yield* memorySocket
      const incoming = yield* EffectSocket.fromSocket(socket)
      const seen: Array<number> = []
      incoming.listen((chunk) => seen.push(chunk.length), () => {})
      yield* settle
      incoming.pause()
      yield* Queue.offer(inbound, new Uint8Array(3))
      yield* settle
      expect(seen).toEqual([])
      incoming.resume()
      yield* settle
      expect(seen).toEqual([3])
    }))

  it.effect("write returns false at the high-water mark; onDrain fires once the batch is written", () =>
    Effect.gen(function*() {
      const { socket, gate } = yield* memorySocket
      const incoming = yield* EffectSocket.fromSocket(socket, { highWaterMark: 4 })
      incoming.listen(() => {}, () => {})
      yield* Latch.close(gate) // the socket does not take writes for now
      expect(incoming.write([new Uint8Array(3)])).toBe(true)
      expect(incoming.write([new Uint8Array(2)])).toBe(false)
      let drained = 0
      incoming.onDrain(() => drained++)
      yield* settle
      expect(drained).toBe(0)
      yield* Latch.open(gate)
      yield* settle
      expect(drained).toBe(1)
    }))

  it.effect("destroy: onEnd exactly once, later writes ignored", () =>
    Effect.gen(function*() {
      const { socket, outbound } = yield* memorySocket
      const incoming = yield* EffectSocket.fromSocket(socket)
      let ends = 0
      incoming.listen(() => {}, () => ends++)
      yield* settle
      incoming.destroy()
      incoming.destroy()
      incoming.write([enc("lost")])
      yield* settle
      expect(ends).toBe(1)
      expect(yield* Stream.runCollect(Stream.fromQueue(outbound))).toEqual([])
    }))
})

const echo: App<never> = {
  http: () => Effect.succeed({ status: 404 }),
  upgrade: () =>
    Effect.succeed({
      _tag: "Accept",
      handler: (conn) => conn.messages.pipe(Stream.runForEach((m) => conn.send(m)))
    })
}

describe("the reactor over an Effect Socket", () => {
  it.effect("handshake, echo, close handshake, then the server ends the stream", () =>
    Effect.gen(function*() {
      const { socket, inbound, outbound } = yield* memorySocket
      const incoming = yield* EffectSocket.fromSocket(socket)
      const transport = Transport.of({
        address: { host: "socket", port: 0 },
        run: (handler) => Effect.andThen(Effect.ignoreCause(handler(incoming)), Effect.never)
      })
      yield* Effect.forkScoped(Effect.provideService(serve(echo), Transport, transport))
      const key = "dGhlIHNhbXBsZSBub25jZQ=="
      yield* Queue.offerAll(inbound, [
        Handshake.clientRequest({ host: "test", path: "/", key }),
        clientFrame({ opcode: Opcode.Text, payload: "over a Socket" }),
        clientFrame({ opcode: Opcode.Close, payload: FrameEncoder.closePayload(1000) })
      ])
      const out = concatBytes(yield* Stream.runCollect(Stream.fromQueue(outbound)))
      // Like a client after the server's FIN: end our side, so the connection is over before the server shuts down.
      yield* Queue.end(inbound)
      yield* settle
      const step = Handshake.stepResponse(Handshake.initialResponseParser(), out)
      if (step._tag !== "Response") return expect.unreachable()
      expect(Handshake.validateResponse(step.response, key)).toMatchObject({ _tag: "Ok" })
      const frames = FrameDecoder.make({ role: "client" }).feed(step.rest)
      expect(frames.events.map((e) => ("data" in e ? { ...e, data: new TextDecoder().decode(e.data) } : e))).toEqual([
        { _tag: "Message", binary: false, data: "over a Socket", compressed: false },
        { _tag: "Close", code: 1000, reason: "" }
      ])
    }))
})
