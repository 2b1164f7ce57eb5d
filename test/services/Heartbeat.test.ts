// Heartbeat and idle timeout, at the connection level over the in-memory transport,
// driven by TestClock only: each deadline is checked at its exact millisecond.
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { TestClock } from "effect/testing"
import { Opcode } from "../../src/domain/FrameDecoder.ts"
import type { CloseInfo, Connection } from "../../src/services/Connection.ts"
import type { App, ConnectionHandle } from "../../src/services/Reactor.ts"
import * as Testing from "../../src/testing.ts"

/** An echo app that hands its connection to the test. */
const capturingEcho = (captured: Deferred.Deferred<Connection>): App<never> => ({
  http: () => Effect.succeed({ status: 404 }),
  upgrade: () =>
    Effect.succeed({
      _tag: "Accept",
      handler: (conn) =>
        Deferred.succeed(captured, conn).pipe(
          Effect.andThen(conn.messages.pipe(Stream.runForEach((m) => conn.send(m))))
        )
    })
})

/** Connect, then advance the clock to the first heartbeat ping (the interval, 1000 ms) and read it. */
const connectUntilPing = Effect.gen(function*() {
  const client = yield* (yield* Testing.TestServer).connect()
  yield* Testing.settle
  yield* TestClock.adjust(1000)
  const ping = yield* client.next
  expect(ping._tag).toBe("Ping")
  return { client, ping }
})

describe("heartbeat (interval 1000 ms, timeout 500 ms)", () => {
  const options = { heartbeatIntervalMs: 1000, heartbeatTimeoutMs: 500 }

  it.effect("the client receives a ping after exactly the interval", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* Testing.settle
        yield* TestClock.adjust(999)
        expect(yield* client.poll).toBeUndefined()
        yield* TestClock.adjust(1)
        expect(yield* client.poll).toMatchObject({ _tag: "Ping" })
      }).pipe(Effect.provide(Testing.layer(capturingEcho(captured), options)))
    }))

  it.effect("a client that answers with a pong stays connected, and is pinged again", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const { client, ping } = yield* connectUntilPing
        yield* client.sendFrame({ opcode: Opcode.Pong, payload: ping._tag === "Ping" ? ping.data : undefined })
        yield* Testing.settle
        yield* TestClock.adjust(500)
        expect(yield* client.poll).toBeUndefined() // no close, no disconnect
        yield* client.sendText("still here")
        yield* client.expectText("still here")
        // The next round: another ping after another interval.
        yield* TestClock.adjust(1000)
        expect(yield* client.poll).toMatchObject({ _tag: "Ping" })
      }).pipe(Effect.provide(Testing.layer(capturingEcho(captured), options)))
    }))

  it.effect("pings come every interval: the second at exactly 2000 ms, not 1999", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const { client, ping } = yield* connectUntilPing
        yield* client.sendFrame({ opcode: Opcode.Pong, payload: ping._tag === "Ping" ? ping.data : undefined })
        yield* Testing.settle
        yield* TestClock.adjust(999)
        expect(yield* client.poll).toBeUndefined()
        yield* TestClock.adjust(1)
        expect(yield* client.poll).toMatchObject({ _tag: "Ping" })
      }).pipe(Effect.provide(Testing.layer(capturingEcho(captured), options)))
    }))

  it.effect("any frame counts as an answer (a data message instead of a pong)", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const { client } = yield* connectUntilPing
        yield* client.sendText("busy")
        yield* client.expectText("busy")
        yield* TestClock.adjust(500)
        expect(yield* client.poll).toBeUndefined()
        yield* client.sendText("alive")
        yield* client.expectText("alive")
      }).pipe(Effect.provide(Testing.layer(capturingEcho(captured), options)))
    }))

  it.effect("a client's own ping counts as an answer too", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const { client } = yield* connectUntilPing
        yield* client.ping("me")
        yield* client.expectPong("me")
        yield* TestClock.adjust(500)
        expect(yield* client.poll).toBeUndefined()
      }).pipe(Effect.provide(Testing.layer(capturingEcho(captured), options)))
    }))

  it.effect("no answer: TCP dropped at exactly interval + timeout, no close frame; CloseInfo 1006", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      const timeouts: Array<ConnectionHandle> = []
      const closes: Array<CloseInfo> = []
      const hooks = {
        onHeartbeatTimeout: (handle: ConnectionHandle) => {
          timeouts.push(handle)
        },
        onClose: (_: ConnectionHandle, info: CloseInfo) => {
          closes.push(info)
        }
      }
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* Testing.settle
        yield* TestClock.adjust(1000)
        expect(yield* client.poll).toMatchObject({ _tag: "Ping" })
        yield* TestClock.adjust(499)
        expect(yield* client.poll).toBeUndefined()
        yield* TestClock.adjust(1)
        // RFC 6455 §7.1.5: no close frame exchanged; the client just sees TCP end.
        expect(yield* client.poll).toEqual({ _tag: "Disconnected" })
        const info = yield* (yield* Deferred.await(captured)).closed
        expect(info).toEqual({ code: 1006, reason: "heartbeat timeout", wasClean: false, initiatedBy: "local" })
        expect(timeouts).toHaveLength(1)
        expect(closes).toEqual([info])
      }).pipe(Effect.provide(Testing.layer(capturingEcho(captured), { ...options, hooks })))
    }))

  it.effect("heartbeatIntervalMs 0: never pinged", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* Testing.settle
        yield* TestClock.adjust(3_600_000)
        expect(yield* client.poll).toBeUndefined()
      }).pipe(Effect.provide(Testing.layer(capturingEcho(captured), { heartbeatIntervalMs: 0 })))
    }))
})

describe("idle timeout (2000 ms)", () => {
  const options = { idleTimeoutMs: 2000, heartbeatIntervalMs: 0 }

  it.effect("no message: close 1001 at exactly 2000 ms, not at 1999", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* Testing.settle
        yield* TestClock.adjust(1999)
        expect(yield* client.poll).toBeUndefined()
        yield* TestClock.adjust(1)
        expect(yield* client.poll).toEqual({ _tag: "Close", code: 1001, reason: "idle timeout" })
        yield* client.close(1001)
        yield* client.expectDisconnected
        const info = yield* (yield* Deferred.await(captured)).closed
        expect(info).toEqual({ code: 1001, reason: "idle timeout", wasClean: true, initiatedBy: "local" })
      }).pipe(Effect.provide(Testing.layer(capturingEcho(captured), options)))
    }))

  it.effect("a message at 1500 ms pushes the deadline to 3500 ms", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* Testing.settle
        yield* TestClock.adjust(1500)
        yield* client.sendText("tick")
        yield* client.expectText("tick")
        yield* TestClock.adjust(500) // t = 2000: the first deadline passes without a close
        expect(yield* client.poll).toBeUndefined()
        yield* TestClock.adjust(1499) // t = 3499
        expect(yield* client.poll).toBeUndefined()
        yield* TestClock.adjust(1) // t = 3500
        expect(yield* client.poll).toEqual({ _tag: "Close", code: 1001, reason: "idle timeout" })
      }).pipe(Effect.provide(Testing.layer(capturingEcho(captured), options)))
    }))

  it.effect("control frames do not count as activity (a ping at 1500 ms does not move the deadline)", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* Testing.settle
        yield* TestClock.adjust(1500)
        yield* client.ping()
        yield* client.expectPong()
        yield* TestClock.adjust(500)
        expect(yield* client.poll).toMatchObject({ _tag: "Close", code: 1001 })
      }).pipe(Effect.provide(Testing.layer(capturingEcho(captured), options)))
    }))

  it.effect("heartbeat answered forever does not stop the idle timeout", () =>
    Effect.gen(function*() {
      const captured = yield* Deferred.make<Connection>()
      yield* Effect.gen(function*() {
        const { client } = yield* connectUntilPing
        yield* client.sendFrame({ opcode: Opcode.Pong })
        yield* Testing.settle
        yield* TestClock.adjust(1000) // t = 2000
        expect(yield* client.poll).toMatchObject({ _tag: "Close", code: 1001 })
      }).pipe(Effect.provide(
        Testing.layer(capturingEcho(captured), { idleTimeoutMs: 2000, heartbeatIntervalMs: 1000, heartbeatTimeoutMs: 500 })
      ))
    }))
})
