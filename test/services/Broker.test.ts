// The in-memory Broker with fake connections: a publish encodes once and hands the
// very same bytes to every subscriber; full subscribers are skipped and counted.
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as FrameDecoder from "../../src/domain/FrameDecoder.ts"
import * as Broker from "../../src/services/Broker.ts"
import type { Connection } from "../../src/services/Connection.ts"
import * as Message from "../../src/services/Message.ts"
import * as Router from "../../src/services/Router.ts"
import * as Testing from "../../src/testing.ts"

interface Fake {
  readonly connection: Connection
  readonly frames: Array<Uint8Array>
}

/** A connection that records what `offerFrame` received; `accept: false` plays a full outbound buffer. */
const fake = (id: number, accept = true): Fake => {
  const frames: Array<Uint8Array> = []
  const unused = () => {
    throw new Error("the broker should only call offerFrame")
  }
  const connection = {
    id,
    offerFrame: (frame: Uint8Array) => {
      if (!accept) return false
      frames.push(frame)
      return true
    },
    send: unused,
    sendAll: unused,
    sendFrame: unused
  } as unknown as Connection
  return { connection, frames }
}

/** Decode a server frame the way a client would. */
const decodeFrame = (frame: Uint8Array) => {
  const result = FrameDecoder.make({ role: "client", maxMessageSize: 1 << 20 }).feed(frame)
  expect(result.error).toBeUndefined()
  return result.events
}

describe("Broker (memory)", () => {
  it.effect("publish to 1000 subscribers encodes once: every subscriber gets the same Uint8Array", () =>
    Effect.gen(function*() {
      const broker = Broker.makeMemory()
      const fakes = Array.from({ length: 1000 }, (_, i) => fake(i))
      yield* Effect.forEach(fakes, (f) => broker.subscribe("lobby", f.connection), { discard: true })
      const result = yield* broker.publish("lobby", "hello everyone")
      expect(result).toEqual({ delivered: 1000, dropped: 0 })
      const first = fakes[0].frames[0]
      for (const f of fakes) {
        expect(f.frames.length).toBe(1)
        expect(f.frames[0]).toBe(first) // identity, not just equal bytes
      }
      const events = decodeFrame(first)
      expect(events).toHaveLength(1)
      expect(events[0]).toMatchObject({ _tag: "Message", binary: false })
      expect(new TextDecoder().decode((events[0] as { data: Uint8Array }).data)).toBe("hello everyone")
    }))

  it.effect("binary and Message values keep their type on the wire", () =>
    Effect.gen(function*() {
      const broker = Broker.makeMemory()
      const f = fake(1)
      yield* broker.subscribe("t", f.connection)
      yield* broker.publish("t", new Uint8Array([1, 2, 3]))
      yield* broker.publish("t", Message.text("as message"))
      const [binary] = decodeFrame(f.frames[0])
      expect(binary).toMatchObject({ _tag: "Message", binary: true, data: new Uint8Array([1, 2, 3]) })
      const [text] = decodeFrame(f.frames[1])
      expect(text).toMatchObject({ _tag: "Message", binary: false })
    }))

  it.effect("`except` skips the sender", () =>
    Effect.gen(function*() {
      const broker = Broker.makeMemory()
      const [a, b, c] = [fake(1), fake(2), fake(3)]
      for (const f of [a, b, c]) yield* broker.subscribe("room", f.connection)
      const result = yield* broker.publish("room", "from a", { except: a.connection })
      expect(result).toEqual({ delivered: 2, dropped: 0 })
      expect(a.frames).toEqual([])
      expect(b.frames).toHaveLength(1)
      expect(c.frames).toHaveLength(1)
    }))

  it.effect("a subscriber whose offerFrame returns false is counted as dropped; the others still get it", () =>
    Effect.gen(function*() {
      const broker = Broker.makeMemory()
      const fakes = [fake(1), fake(2, false), fake(3), fake(4, false)]
      for (const f of fakes) yield* broker.subscribe("room", f.connection)
      const result = yield* broker.publish("room", "x")
      expect(result).toEqual({ delivered: 2, dropped: 2 })
      expect(fakes.map((f) => f.frames.length)).toEqual([1, 0, 1, 0])
    }))

  it.effect("publish to an unknown or empty topic delivers nothing", () =>
    Effect.gen(function*() {
      const broker = Broker.makeMemory()
      expect(yield* broker.publish("nobody", "x")).toEqual({ delivered: 0, dropped: 0 })
    }))

  it.effect("subscriptions end when their scope closes; subscriberCount and topics follow", () =>
    Effect.gen(function*() {
      const broker = Broker.makeMemory()
      const [a, b] = [fake(1), fake(2)]
      const scopeA = yield* Scope.make()
      const scopeB = yield* Scope.make()
      yield* Scope.provide(broker.subscribe("lobby", a.connection), scopeA)
      yield* Scope.provide(broker.subscribe("news", a.connection), scopeA)
      yield* Scope.provide(broker.subscribe("lobby", b.connection), scopeB)
      expect(broker.subscriberCount("lobby")).toBe(2)
      expect(broker.subscriberCount("news")).toBe(1)
      expect([...broker.topics()].sort()).toEqual(["lobby", "news"])

      yield* Scope.close(scopeA, Exit.void)
      expect(broker.subscriberCount("lobby")).toBe(1)
      expect(broker.subscriberCount("news")).toBe(0)
      expect(broker.topics()).toEqual(["lobby"]) // an empty topic is forgotten
      yield* broker.publish("lobby", "after")
      expect(a.frames).toEqual([])
      expect(b.frames).toHaveLength(1)

      yield* Scope.close(scopeB, Exit.void)
      expect(broker.topics()).toEqual([])
    }))

  it.effect("unsubscribe removes at once; subscribing twice counts once", () =>
    Effect.gen(function*() {
      const broker = Broker.makeMemory()
      const a = fake(1)
      yield* broker.subscribe("t", a.connection)
      yield* broker.subscribe("t", a.connection)
      expect(broker.subscriberCount("t")).toBe(1)
      expect(yield* broker.publish("t", "once")).toEqual({ delivered: 1, dropped: 0 })
      yield* broker.unsubscribe("t", a.connection)
      expect(broker.subscriberCount("t")).toBe(0)
      expect(broker.topics()).toEqual([])
      yield* broker.unsubscribe("t", a.connection) // no-op
      expect(a.frames).toHaveLength(1)
    }))

  it.effect("the Layer provides a Broker service", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const a = fake(1)
      yield* broker.subscribe("t", a.connection)
      expect(broker.subscriberCount("t")).toBe(1)
    }).pipe(Effect.provide(Broker.layerMemory)))
})

describe("Broker with real connections (test kit)", () => {
  // A room: every message goes to everyone else in it.
  const app = Router.make([
    Router.ws("/room", (conn) =>
      Effect.gen(function*() {
        const broker = yield* Broker.Broker
        yield* broker.subscribe("room", conn)
        yield* conn.send("joined")
        yield* conn.messages.pipe(Stream.runForEach((m) => broker.publish("room", m, { except: conn })))
      }).pipe(Effect.scoped))
  ])

  it.effect("a message reaches the other members, not the sender; a member that left gets nothing", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const a = yield* server.connect({ path: "/room" })
      const b = yield* server.connect({ path: "/room" })
      const c = yield* server.connect({ path: "/room" })
      for (const client of [a, b, c]) yield* client.expectText("joined")
      yield* a.sendText("hi from a")
      yield* b.expectText("hi from a")
      yield* c.expectText("hi from a")
      yield* c.close(1000)
      yield* c.expectClose(1000)
      yield* b.sendText("hi from b")
      yield* a.expectText("hi from b")
      yield* Testing.settle
      expect(yield* a.poll).toBeUndefined()
      expect(yield* c.poll).toEqual({ _tag: "Disconnected" })
    }).pipe(Effect.provide(Testing.layer(app, { heartbeatIntervalMs: 0 })), Effect.provide(Broker.layerMemory)))
})
