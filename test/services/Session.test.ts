/**
 * The server's session over a transport that lends its reads: every chunk is a
 * view of one reused buffer, scribbled over after each call (as a transport
 * reading through Node's `onread` would hand them). The server's own TCP
 * transport hands chunks over; this checks the contract for one that does not.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { Opcode } from "../../src/domain/FrameDecoder.ts"
import * as FrameDecoder from "../../src/domain/FrameDecoder.ts"
import * as FrameEncoder from "../../src/domain/FrameEncoder.ts"
import * as Deadlines from "../../src/services/Deadlines.ts"
import { decodeOptions } from "../../src/services/Options.ts"
import * as Reactor from "../../src/services/Reactor.ts"
import type { Incoming } from "../../src/services/Transport.ts"
import { concatBytes, splitAt } from "../support/Bytes.ts"

const upgrade = new TextEncoder().encode(
  "GET /echo HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

const echoApp: Reactor.App<never> = {
  http: () => Effect.succeed({ status: 404 }),
  upgrade: () =>
    Effect.succeed({
      _tag: "Accept",
      handler: (c) => c.messages.pipe(Stream.runForEachArray((messages) => c.sendAll(messages)))
    })
}

/** Binary messages of these sizes as masked client frames, the large ones fragmented. */
const framesFor = (sizes: ReadonlyArray<number>) => {
  const payloads = sizes.map((n, i) => new Uint8Array(n).map((_, k) => (k * 31 + i * 7) & 0xff))
  const mask = new Uint8Array([0x37, 0xfa, 0x21, 0x3d])
  const frames = payloads.flatMap((payload) => {
    if (payload.length < 20_000) return [FrameEncoder.encodeFrameConcat({ opcode: Opcode.Binary, mask }, payload)]
    const half = payload.length >> 1
    return [
      FrameEncoder.encodeFrameConcat({ opcode: Opcode.Binary, fin: false, mask }, payload.subarray(0, half)),
      FrameEncoder.encodeFrameConcat({ opcode: Opcode.Continuation, mask }, payload.subarray(half))
    ]
  })
  return { payloads, bytes: concatBytes(frames) }
}

describe("Session over a transport that lends its reads", () => {
  for (const cuts of [[], [3, 100, 5000, 5001, 70_000], Array.from({ length: 60 }, (_, i) => i * 4099 + 17)]) {
    it.live(`the handshake and every message survive the buffer's reuse (${cuts.length} cuts)`, () =>
      Effect.scoped(Effect.gen(function*() {
        const sizes = [5, 70_000, 0, 4096, 125, 126, 65_536, 9000, 1]
        const { payloads, bytes } = framesFor(sizes)
        let onData: (chunk: Uint8Array, borrowed?: boolean) => void = () => {}
        const written: Array<Uint8Array> = []
        const incoming: Incoming = {
          remoteAddress: "127.0.0.1",
          remotePort: 1,
          listen: (data) => {
            onData = data
          },
          pause: () => {},
          resume: () => {},
          write: (chunks) => {
            for (const c of chunks) written.push(c.slice())
            return true
          },
          onDrain: (callback) => queueMicrotask(callback),
          end: () => {},
          destroy: () => {}
        }
        const run = Reactor.make(echoApp, {
          options: decodeOptions({}),
          hooks: {},
          deadlines: yield* Deadlines.make,
          clock: yield* Clock.Clock,
          log: () => {}
        })
        yield* Effect.forkScoped(run(incoming))
        yield* Effect.yieldNow
        const scratch = new Uint8Array(upgrade.length + bytes.length)
        const lend = (piece: Uint8Array) => {
          scratch.set(piece)
          onData(scratch.subarray(0, piece.length), true)
          scratch.fill(0xee)
        }
        // The request head and the frames that follow it, cut anywhere.
        for (const piece of splitAt(concatBytes([upgrade, bytes]), cuts)) lend(piece)
        // Read the 101, then decode the echoes (server frames: unmasked).
        const decoder = FrameDecoder.make({ role: "client", maxMessageSize: 1 << 20 })
        const echoed: Array<Uint8Array> = []
        let head = true
        yield* Effect.gen(function*() {
          while (echoed.length < sizes.length) {
            yield* Effect.sleep("5 millis")
            const out = concatBytes(written.splice(0))
            let body = out
            if (head && out.length > 0) {
              const text = Buffer.from(out).toString("latin1")
              const end = text.indexOf("\r\n\r\n")
              expect(text.startsWith("HTTP/1.1 101")).toBe(true)
              body = out.subarray(end + 4)
              head = false
            }
            for (const e of decoder.feed(body).events) if (e._tag === "Message") echoed.push(e.data)
          }
        }).pipe(Effect.timeout("5 seconds"))
        expect(echoed.map((e) => e.length)).toEqual(sizes)
        echoed.forEach((e, i) => expect(Buffer.from(e).equals(Buffer.from(payloads[i]!))).toBe(true))
      })))
  }
})
