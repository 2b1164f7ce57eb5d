// The reactor over the in-memory transport, driven by wsreactor/testing under
// TestClock: deadlines are checked at exactly their millisecond, never by waiting.
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { TestClock } from "effect/testing"
import { Opcode } from "../../src/domain/FrameDecoder.ts"
import * as Handshake from "../../src/domain/Handshake.ts"
import type { ProtocolError } from "../../src/domain/ProtocolError.ts"
import type * as Memory from "../../src/layers/Memory.ts"
import type { Connection } from "../../src/services/Connection.ts"
import type { App, ConnectionHandle, Hooks } from "../../src/services/Reactor.ts"
import type * as Server from "../../src/services/Server.ts"
import * as Testing from "../../src/testing.ts"

const utf8 = (s: string) => new TextEncoder().encode(s)

const accepting = <R>(handler: (connection: Connection) => Effect.Effect<void, unknown, R>): App<R> => ({
  http: () => Effect.succeed({ status: 404 }),
  upgrade: () => Effect.succeed({ _tag: "Accept", handler })
})

// Local rather than Demo's echo, so these tests do not move with the demo app.
const echo = (connection: Connection) =>
  connection.messages.pipe(Stream.runForEachArray((messages) => connection.sendAll(messages)))
const echoApp = accepting(echo)

/** Hooks that record every opened connection and every protocol error. */
const recorder = () => {
  const handles: Array<ConnectionHandle> = []
  const errors: Array<ProtocolError> = []
  const hooks: Hooks = {
    onOpen: (handle) => {
      handles.push(handle)
    },
    onProtocolError: (_, error) => {
      errors.push(error)
    }
  }
  return { handles, errors, hooks }
}

/** What a raw client sees right now, without waiting. */
const rawState = (end: Memory.ClientEnd) =>
  Effect.map(Effect.exit(end.poll), (exit) =>
    Exit.isFailure(exit) ? "disconnected" : Option.isNone(exit.value) ? "open" : "data")

describe("handshake deadline", () => {
  const options = { handshakeTimeoutMs: 1000 }

  it.effect("a client that sends nothing is dropped at handshakeTimeoutMs, not before", () =>
    Effect.gen(function*() {
      const end = yield* (yield* Testing.TestServer).open()
      yield* Testing.settle
      yield* TestClock.adjust(999)
      expect(yield* rawState(end)).toBe("open")
      yield* TestClock.adjust(1)
      expect(yield* rawState(end)).toBe("disconnected")
    }).pipe(Effect.provide(Testing.layer(echoApp, options))))

  it.effect("half a request does not extend the deadline (counted from accept)", () =>
    Effect.gen(function*() {
      const end = yield* (yield* Testing.TestServer).open()
      yield* end.write(utf8("GET / HTTP/1.1\r\n"))
      yield* Testing.settle
      yield* TestClock.adjust(600)
      yield* end.write(utf8("Host: test\r\n"))
      yield* Testing.settle
      yield* TestClock.adjust(399)
      expect(yield* rawState(end)).toBe("open")
      yield* TestClock.adjust(1)
      expect(yield* rawState(end)).toBe("disconnected")
    }).pipe(Effect.provide(Testing.layer(echoApp, options))))

  it.effect("a complete upgrade is not subject to the deadline afterwards", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* TestClock.adjust(5000)
      yield* client.sendText("still here")
      yield* client.expectText("still here")
    }).pipe(Effect.provide(Testing.layer(echoApp, options))))
})

describe("close deadline (server-initiated close)", () => {
  const options = { closeTimeoutMs: 2000 }
  const closingApp = (captured: Deferred.Deferred<Connection>) =>
    accepting((conn) =>
      Deferred.succeed(captured, conn).pipe(
        Effect.andThen(conn.close(4000, "go away")),
        Effect.andThen(Effect.never)
      )
    )

  it.effect("a client that never answers loses TCP at closeTimeoutMs, not before", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        expect(yield* client.next).toEqual({ _tag: "Close", code: 4000, reason: "go away" })
        yield* Testing.settle
        yield* TestClock.adjust(1999)
        expect(yield* client.poll).toBeUndefined()
        yield* TestClock.adjust(1)
        expect(yield* client.poll).toEqual({ _tag: "Disconnected" })
        const info = yield* (yield* Deferred.await(captured)).closed
        // RFC 6455 §7.1.5: no close frame received → 1006.
        expect(info).toMatchObject({ code: 1006, wasClean: false, initiatedBy: "local" })
      }).pipe(Effect.provide(Testing.layer(closingApp(captured), options)))
    }))

  it.effect("a client that answers ends the connection at once, cleanly", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        expect(yield* client.expectClose(4000)).toEqual({ code: 4000, reason: "go away" })
        yield* client.expectDisconnected
        const info = yield* (yield* Deferred.await(captured)).closed
        expect(info).toEqual({ code: 4000, reason: "go away", wasClean: true, initiatedBy: "local" })
        expect(yield* Clock.currentTimeMillis).toBe(0) // no deadline was needed
      }).pipe(Effect.provide(Testing.layer(closingApp(captured), options)))
    }))
})

describe("data transfer", () => {
  const layer = Testing.layer(echoApp)

  it.effect("echoes text and binary, small and large", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.sendText("héllo 😀")
      yield* client.expectText("héllo 😀")
      yield* client.sendBinary(new Uint8Array([0, 1, 2, 255]))
      yield* client.expectBinary(new Uint8Array([0, 1, 2, 255]))
      const big = new Uint8Array(70_000).map((_, i) => i & 0xff) // 64-bit length form
      yield* client.sendBinary(big)
      yield* client.expectBinary(big)
      yield* client.sendText("")
      yield* client.expectText("")
    }).pipe(Effect.provide(layer)))

  it.effect("JSON messages, checked with a schema", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.sendText(JSON.stringify({ n: 1, s: "a" }))
      expect(yield* client.expectJson(Schema.Struct({ n: Schema.Number, s: Schema.String }))).toEqual({ n: 1, s: "a" })
      yield* client.sendText("not json")
      expect((yield* Effect.flip(client.expectJson()))._tag).toBe("ClientError")
    }).pipe(Effect.provide(layer)))

  it.effect("reassembles a fragmented message", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.sendFrame({ opcode: Opcode.Text, payload: "frag", fin: false })
      yield* client.ping("in between") // control frames may be interleaved (§5.4)
      yield* client.sendFrame({ opcode: Opcode.Continuation, payload: "ment", fin: true })
      yield* client.expectPong("in between")
      yield* client.expectText("fragment")
    }).pipe(Effect.provide(layer)))

  it.effect("a frame split byte by byte across writes", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      const frame = Testing.clientFrame({ opcode: Opcode.Text, payload: "one byte at a time" })
      for (let i = 0; i < frame.length; i++) {
        yield* client.sendRaw(frame.subarray(i, i + 1))
        yield* Testing.settle // each byte is its own read on the server
      }
      yield* client.expectText("one byte at a time")
    }).pipe(Effect.provide(layer)))

  it.effect("frames in the same write as the upgrade request (leftover bytes)", () =>
    Effect.gen(function*() {
      const first = Testing.clientFrame({ opcode: Opcode.Text, payload: "first" })
      const second = Testing.clientFrame({ opcode: Opcode.Binary, payload: new Uint8Array([7, 8]) })
      const pipelined = new Uint8Array(first.length + second.length)
      pipelined.set(first)
      pipelined.set(second, first.length)
      const client = yield* (yield* Testing.TestServer).connect({ pipelined })
      yield* client.expectText("first")
      yield* client.expectBinary(new Uint8Array([7, 8]))
    }).pipe(Effect.provide(layer)))
})

describe("control frames", () => {
  const layer = Testing.layer(echoApp)

  it.effect("ping → pong with the same payload", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.ping("are you there")
      yield* client.expectPong("are you there")
      yield* client.ping()
      yield* client.expectPong(new Uint8Array(0))
      const max = new Uint8Array(125).fill(0x5a)
      yield* client.ping(max)
      yield* client.expectPong(max)
    }).pipe(Effect.provide(layer)))

  it.effect("an unsolicited pong is ignored", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.sendFrame({ opcode: Opcode.Pong, payload: "unasked" })
      yield* client.sendText("after")
      yield* client.expectText("after") // nothing came before the echo
      yield* Testing.settle
      expect(yield* client.poll).toBeUndefined()
    }).pipe(Effect.provide(layer)))
})

describe("peer-initiated close", () => {
  it.effect("close 1000 with a reason → the server echoes 1000 and ends TCP", () => {
    const rec = recorder()
    return Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.close(1000, "bye")
      expect(yield* client.next).toEqual({ _tag: "Close", code: 1000, reason: "" })
      yield* client.expectDisconnected
      const info = yield* rec.handles[0]!.closed
      expect(info).toEqual({ code: 1000, reason: "bye", wasClean: true, initiatedBy: "peer" })
    }).pipe(Effect.provide(Testing.layer(echoApp, { hooks: rec.hooks })))
  })

  it.effect("an empty close → an empty close", () => {
    const rec = recorder()
    return Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.close()
      expect(yield* client.next).toEqual({ _tag: "Close", code: undefined, reason: "" })
      yield* client.expectDisconnected
      const info = yield* rec.handles[0]!.closed
      expect(info).toMatchObject({ code: 1005, wasClean: true, initiatedBy: "peer" })
    }).pipe(Effect.provide(Testing.layer(echoApp, { hooks: rec.hooks })))
  })

  it.effect("the client dropping TCP without a close frame → 1006, by transport", () => {
    const rec = recorder()
    return Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.end
      yield* client.expectDisconnected
      const info = yield* rec.handles[0]!.closed
      expect(info).toEqual({ code: 1006, reason: "", wasClean: false, initiatedBy: "transport" })
    }).pipe(Effect.provide(Testing.layer(echoApp, { hooks: rec.hooks })))
  })
})

describe("protocol errors fail the connection with the right code", () => {
  const cases: ReadonlyArray<{
    readonly name: string
    readonly frames: ReadonlyArray<Testing.FrameSpec>
    readonly code: number
    readonly reason: ProtocolError["reason"] | undefined
  }> = [
    { name: "reserved opcode 0x3", frames: [{ opcode: 0x3 }], code: 1002, reason: undefined },
    { name: "reserved opcode 0xB (control)", frames: [{ opcode: 0xb }], code: 1002, reason: undefined },
    { name: "unmasked client frame", frames: [{ opcode: Opcode.Text, payload: "x", masked: false }], code: 1002, reason: undefined },
    { name: "RSV1 without an extension", frames: [{ opcode: Opcode.Text, payload: "x", rsv1: true }], code: 1002, reason: undefined },
    {
      name: "invalid UTF-8 in a text message",
      frames: [{ opcode: Opcode.Text, payload: new Uint8Array([0xce, 0xba, 0xff]) }],
      code: 1007,
      reason: undefined
    },
    {
      name: "a message over maxMessageSize",
      frames: [{ opcode: Opcode.Binary, payload: new Uint8Array(65) }],
      code: 1009,
      reason: undefined
    },
    {
      name: "fragments adding up to more than maxMessageSize",
      frames: [
        { opcode: Opcode.Binary, payload: new Uint8Array(40), fin: false },
        { opcode: Opcode.Continuation, payload: new Uint8Array(40) }
      ],
      code: 1009,
      reason: undefined
    }
  ]
  for (const c of cases) {
    it.effect(`${c.name} → close ${c.code}`, () => {
      const rec = recorder()
      return Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        for (const frame of c.frames) yield* client.sendFrame(frame)
        yield* client.expectClose(c.code)
        yield* client.expectDisconnected
        expect(rec.errors.map((e) => e.closeCode)).toEqual([c.code])
        const info = yield* rec.handles[0]!.closed
        expect(info).toMatchObject({ code: c.code, wasClean: false, initiatedBy: "local" })
        expect(info.reason).toBe(rec.errors[0]!.reason)
      }).pipe(Effect.provide(Testing.layer(echoApp, { hooks: rec.hooks, maxMessageSize: 64 })))
    })
  }

  it.effect("a hostile connection does not disturb another connection's echo", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const good = yield* server.connect()
      const bad = yield* server.connect()
      const stalled = yield* server.open() // never finishes its handshake
      yield* stalled.write(utf8("GET / HT"))
      const junk = yield* server.open()
      yield* good.sendText("1")
      yield* bad.sendRaw(new Uint8Array(64).fill(0xff))
      yield* junk.write(new Uint8Array(64).fill(0x00))
      yield* good.expectText("1")
      yield* bad.expectClose(1002)
      yield* bad.expectDisconnected
      yield* good.sendText("2")
      yield* good.sendBinary(new Uint8Array([2]))
      yield* good.expectText("2")
      yield* good.expectBinary(new Uint8Array([2]))
    }).pipe(Effect.provide(Testing.layer(echoApp))))
})

describe("the handler's end closes the connection", () => {
  it.effect("a failing handler → close 1011", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      expect(yield* client.expectClose(1011)).toEqual({ code: 1011, reason: "internal error" })
      yield* client.expectDisconnected
    }).pipe(Effect.provide(Testing.layer(accepting(() => Effect.fail("boom"))))))

  it.effect("a handler that returns → close 1000", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.expectClose(1000)
      yield* client.expectDisconnected
    }).pipe(Effect.provide(Testing.layer(accepting(() => Effect.void)))))

  it.effect("messages sent before returning arrive before the close", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* client.expectText("last words")
      yield* client.expectClose(1000)
    }).pipe(Effect.provide(Testing.layer(accepting((conn) => conn.send("last words"))))))
})

describe("handshakes", () => {
  const app: App<never> = {
    http: (request) => Effect.succeed({ status: 200, body: `http ${request.method} ${request.target}` }),
    upgrade: (upgrade) =>
      Effect.succeed(
        upgrade.request.path === "/forbidden"
          ? { _tag: "Reject", response: { status: 403, body: "no entry" } }
          : { _tag: "Accept", protocol: upgrade.protocols.includes("chat") ? "chat" : undefined, handler: echo }
      )
  }
  const upgradeRequest = (version: string) =>
    "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: ${version}\r\n\r\n`
  const layer = Testing.layer(app)

  it.effect("a plain GET goes to app.http", () =>
    Effect.gen(function*() {
      const reply = yield* (yield* Testing.TestServer).request({ path: "/page?x=1" })
      expect(reply.status).toBe(200)
      expect(reply.body).toBe("http GET /page?x=1")
    }).pipe(Effect.provide(layer)))

  it.effect("a wrong Sec-WebSocket-Version → 426 with Sec-WebSocket-Version: 13", () =>
    Effect.gen(function*() {
      const reply = yield* (yield* Testing.TestServer).request(upgradeRequest("8"))
      expect(reply.status).toBe(426)
      expect(Handshake.header(reply, "sec-websocket-version")).toBe("13")
    }).pipe(Effect.provide(layer)))

  it.effect("a malformed request → 400", () =>
    Effect.gen(function*() {
      const reply = yield* (yield* Testing.TestServer).request("this is not HTTP\r\n\r\n")
      expect(reply.status).toBe(400)
    }).pipe(Effect.provide(layer)))

  it.effect("the app's refusal reaches the client as HandshakeFailed", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.flip((yield* Testing.TestServer).connect({ path: "/forbidden" }))
      expect(failed).toMatchObject({ _tag: "HandshakeFailed", status: 403, body: "no entry" })
    }).pipe(Effect.provide(layer)))

  it.effect("the chosen subprotocol", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({ protocols: ["other", "chat"] })
      expect(client.protocol).toBe("chat")
    }).pipe(Effect.provide(layer)))
})

describe("backpressure", () => {
  interface Attempt {
    readonly ok: boolean
    readonly error: string | undefined
    readonly buffered: number
  }
  // Sends `count` messages, letting the writer run between them, and reports each outcome.
  const sender = (count: number, size: number, report: Deferred.Deferred<ReadonlyArray<Attempt>>) =>
    accepting((conn) =>
      Effect.gen(function*() {
        const attempts: Array<Attempt> = []
        for (let i = 0; i < count; i++) {
          const result = yield* Effect.result(conn.send(`${i}`.padEnd(size, ".")))
          attempts.push({
            ok: result._tag === "Success",
            error: result._tag === "Failure" ? result.failure._tag : undefined,
            buffered: conn.bufferedAmount()
          })
          yield* Testing.settle
        }
        yield* Deferred.succeed(report, attempts)
        yield* Effect.never
      })
    )

  it.effect("suspend (default): a client that never reads cannot grow the server's buffer past the mark", () =>
    Effect.gen(function*() {
      const sent = { count: 0, maxBuffered: 0 }
      const flood = accepting((conn) =>
        Effect.gen(function*() {
          for (let i = 0; i < 100; i++) {
            yield* conn.send(`${i}`.padEnd(1000, "."))
            sent.count++
            sent.maxBuffered = Math.max(sent.maxBuffered, conn.bufferedAmount())
          }
          yield* Effect.never
        })
      )
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect({ receiveWindow: 2000 })
        yield* Testing.settle
        // The sender is suspended: a few messages in the client's window and in the buffer, no more.
        expect(sent.count).toBeLessThan(10)
        expect(sent.maxBuffered).toBeLessThanOrEqual(4096 + 1004)
        for (let i = 0; i < 100; i++) yield* client.expectText(`${i}`.padEnd(1000, "."))
        expect(sent.count).toBe(100)
      }).pipe(Effect.provide(Testing.layer(flood, { outboundHighWaterMark: 4096 })))
    }))

  it.effect("drop: over the high-water mark, send fails and the message never arrives", () =>
    Effect.gen(function*() {
      const report = yield* Deferred.make<ReadonlyArray<Attempt>>()
      yield* Effect.gen(function*() {
        // The client reads nothing: the first message fills its window, the second waits in the buffer.
        const client = yield* (yield* Testing.TestServer).connect({ receiveWindow: 1 })
        const attempts = yield* Deferred.await(report)
        expect(attempts.map((a) => a.error ?? "ok")).toEqual([
          "ok",
          "ok",
          "MessageDroppedError",
          "MessageDroppedError",
          "MessageDroppedError"
        ])
        expect(attempts[2]!.buffered).toBeGreaterThan(64)
        yield* client.expectText("0".padEnd(100, "."))
        yield* client.expectText("1".padEnd(100, "."))
        yield* Testing.settle
        expect(yield* client.poll).toBeUndefined()
      }).pipe(Effect.provide(Testing.layer(sender(5, 100, report), { backpressure: "drop", outboundHighWaterMark: 64 })))
    }))

  it.effect("drop: a client that keeps up loses nothing", () =>
    Effect.gen(function*() {
      const report = yield* Deferred.make<ReadonlyArray<Attempt>>()
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        const attempts = yield* Deferred.await(report)
        expect(attempts.every((a) => a.ok)).toBe(true)
        for (let i = 0; i < 5; i++) yield* client.expectText(`${i}`.padEnd(100, "."))
      }).pipe(Effect.provide(Testing.layer(sender(5, 100, report), { backpressure: "drop", outboundHighWaterMark: 64 })))
    }))

  it.effect("close: over the high-water mark the server closes with 1008", () =>
    Effect.gen(function*() {
      const report = yield* Deferred.make<ReadonlyArray<Attempt>>()
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect({ receiveWindow: 1 })
        const attempts = yield* Deferred.await(report)
        // 42-byte frames, mark 64: the third message is buffered behind the blocked second one.
        expect(attempts.map((a) => a.error ?? "ok")).toEqual(["ok", "ok", "ok", "ConnectionClosedError"])
        expect(attempts[2]!.buffered).toBeGreaterThan(64)
        expect(yield* client.expectClose(1008)).toEqual({ code: 1008, reason: "send buffer full" })
        yield* client.expectDisconnected
      }).pipe(Effect.provide(Testing.layer(sender(4, 40, report), { backpressure: "close", outboundHighWaterMark: 64 })))
    }))

  it.effect("inbound: a handler that does not read stops the server reading; nothing is lost", () =>
    Effect.gen(function*() {
      const go = yield* Deferred.make<void>()
      const app = accepting((conn) => Effect.andThen(Deferred.await(go), echo(conn)))
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        const frameSize = Testing.clientFrame({ opcode: Opcode.Text, payload: "message 00" }).length
        for (let i = 0; i < 20; i++) {
          yield* client.sendText(`message ${String(i).padStart(2, "0")}`)
          yield* Testing.settle
        }
        // Queue of 2 full, a third message held by the blocked reader: the rest stays unread.
        expect(yield* client.serverBacklog).toBeGreaterThanOrEqual(16 * frameSize)
        yield* Deferred.succeed(go, undefined)
        for (let i = 0; i < 20; i++) yield* client.expectText(`message ${String(i).padStart(2, "0")}`)
        expect(yield* client.serverBacklog).toBe(0)
      }).pipe(Effect.provide(Testing.layer(app, { inboundQueueSize: 2 })))
    }))

  it.effect("inbound: the bound is in bytes too, so a few large messages cannot pile up", () =>
    Effect.gen(function*() {
      const go = yield* Deferred.make<void>()
      const app = accepting((conn) => Effect.andThen(Deferred.await(go), echo(conn)))
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        const big = new Uint8Array(600).fill(7)
        const frameSize = Testing.clientFrame({ opcode: Opcode.Binary, payload: big }).length
        for (let i = 0; i < 10; i++) {
          yield* client.sendBinary(big)
          yield* Testing.settle
        }
        // 64 messages would fit the count bound, but 1,000 bytes stop the reading after two.
        expect(yield* client.serverBacklog).toBeGreaterThanOrEqual(7 * frameSize)
        yield* Deferred.succeed(go, undefined)
        for (let i = 0; i < 10; i++) yield* client.expectBinary(big)
        expect(yield* client.serverBacklog).toBe(0)
      }).pipe(Effect.provide(Testing.layer(app, { inboundHighWaterMark: 1000 })))
    }))
})

describe("closing with a full inbound queue", () => {
  // Regression: the reader used to block offering to a full inbound queue, so the peer's answering
  // close frame was never read and the close ended only at closeTimeoutMs, as 1006.
  it.effect("a close started while the inbound queue is full still completes at once", () =>
    Effect.gen(function*() {
      const go = yield* Deferred.make<void>()
      const captured = yield* Deferred.make<Connection>()
      const app = accepting((conn) =>
        Deferred.succeed(captured, conn).pipe(
          Effect.andThen(Deferred.await(go)),
          Effect.andThen(conn.close(4000)),
          Effect.andThen(Effect.never)
        )
      )
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        for (let i = 0; i < 5; i++) {
          yield* client.sendText(`m${i}`)
          yield* Testing.settle
        }
        yield* Deferred.succeed(go, undefined)
        yield* client.expectClose(4000)
        yield* Testing.settle
        const disconnected = yield* client.poll
        const closed = yield* Effect.forkChild((yield* Deferred.await(captured)).closed)
        yield* Testing.settle
        const info = closed.pollUnsafe()
        yield* TestClock.adjust(2000) // let a stuck connection end either way, so the layer can close
        expect(disconnected).toEqual({ _tag: "Disconnected" })
        expect(info).toBeDefined()
        expect(yield* Fiber.join(closed)).toMatchObject({ code: 4000, wasClean: true })
      }).pipe(Effect.provide(Testing.layer(app, { inboundQueueSize: 1, closeTimeoutMs: 2000 })))
    }))
})

describe("graceful shutdown", () => {
  it.effect("interrupting serve sends 1001 to open connections and waits for their answer", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const a = yield* server.connect()
      const b = yield* server.connect()
      yield* a.sendText("ping")
      yield* a.expectText("ping")
      const shutdown = yield* Effect.forkChild(server.shutdown)
      expect(yield* a.expectClose(1001)).toEqual({ code: 1001, reason: "server shutting down" })
      expect(yield* b.expectClose(1001)).toEqual({ code: 1001, reason: "server shutting down" })
      yield* a.expectDisconnected
      yield* b.expectDisconnected
      yield* Fiber.join(shutdown)
      expect(yield* Clock.currentTimeMillis).toBe(0)
    }).pipe(Effect.provide(Testing.layer(echoApp))))

  it.effect("a peer that never answers is dropped after shutdownTimeoutMs", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const client = yield* server.connect()
      const shutdown = yield* Effect.forkChild(server.shutdown)
      expect(yield* client.next).toMatchObject({ _tag: "Close", code: 1001 })
      yield* Testing.settle
      yield* TestClock.adjust(2999)
      expect(shutdown.pollUnsafe()).toBeUndefined()
      expect(yield* client.poll).toBeUndefined()
      yield* TestClock.adjust(1)
      yield* Fiber.join(shutdown)
      yield* client.expectDisconnected
    }).pipe(Effect.provide(Testing.layer(echoApp, { shutdownTimeoutMs: 3000, closeTimeoutMs: 10_000 }))))
})

describe("defects in socket callbacks", () => {
  it.effect("a hook that throws while a chunk is decoded drops that connection only; the server keeps serving", () =>
    Effect.gen(function*() {
      let calls = 0
      const hooks = {
        onMessagesIn: () => {
          calls++
          if (calls === 1) throw new Error("boom")
        }
      }
      yield* Effect.gen(function*() {
        const server = yield* Testing.TestServer
        const victim = yield* server.connect()
        yield* victim.sendText("first")
        yield* victim.expectDisconnected
        const next = yield* server.connect()
        yield* next.sendText("still serving")
        yield* next.expectText("still serving")
      }).pipe(Effect.provide(Testing.layer(echoApp, { hooks })))
    }))
})

describe("a connection that ends with its upgrade request", () => {
  it.effect("upgrade request then FIN before the server read it: onOpen comes before onClose and the registry ends empty", () => {
    const events: Array<string> = []
    let state: Server.ServerState | undefined
    const hooks: Hooks = {
      onOpen: () => void events.push("open"),
      onClose: (_, info) => void events.push(`close ${info.code}`)
    }
    return Effect.gen(function*() {
      const end = yield* (yield* Testing.TestServer).open()
      const request = new TextEncoder().encode(
        "GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
      )
      yield* end.write(request)
      yield* end.end
      yield* Testing.settle
      expect(events).toEqual(["open", "close 1006"])
      expect(state?.connections.size).toBe(0)
    }).pipe(Effect.provide(Testing.layer(echoApp, { hooks, onState: (s) => (state = s) })))
  })
})
