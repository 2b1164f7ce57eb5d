/**
 * wsreactor's real client against a `Testing` server in memory, under
 * `it.effect`'s `TestClock`: `Client.connect` / `Client.reconnecting` with
 * `connector: server.connector`. No port, no real waiting: the reconnect
 * backoff, the client's heartbeat and its handshake timeout advance only
 * with `TestClock.adjust`.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { TestClock } from "effect/testing"
import * as Client from "../../src/services/Client.ts"
import * as Router from "../../src/services/Router.ts"
import * as Testing from "../../src/testing.ts"

let connections = 0
// Echo; "drop" makes the server close with 1011.
const app = Router.make([
  Router.ws("/echo", (conn) =>
    Effect.gen(function*() {
      connections++
      yield* conn.messages.pipe(Stream.runForEach((m) => {
        if (m._tag === "Text" && m.text === "drop") return conn.close(1011, "going away for a bit")
        return conn.send(m)
      }))
    }))
])

const waitFor = (client: Client.ReconnectingClient, tag: Client.ConnectionState["_tag"]) =>
  SubscriptionRef.changes(client.state).pipe(Stream.filter((s) => s._tag === tag), Stream.take(1), Stream.runDrain)

describe("Client over the test kit (in memory, TestClock)", () => {
  it.effect("connect, echo, close handshake: the same client code as over TCP", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const conn = yield* Client.connect("ws://test/echo?room=1", { connector: server.connector })
      expect(conn.request.target).toBe("/echo?room=1")
      yield* conn.sendAll(["one", new Uint8Array([1, 2, 3])])
      const got = yield* conn.messages.pipe(Stream.take(2), Stream.runCollect)
      expect(got.map((m) => m._tag)).toEqual(["Text", "Binary"])
      yield* conn.close(1000, "bye")
      expect(yield* conn.closed).toEqual({ code: 1000, reason: "bye", wasClean: true, initiatedBy: "local" })
      // No route: the typed HandshakeError with the server's status.
      const error = yield* Effect.flip(Client.connect("ws://test/nope", { connector: server.connector }))
      expect(error).toMatchObject({ _tag: "HandshakeError", status: 404 })
    }).pipe(Effect.scoped, Effect.provide(Testing.layer(app))))

  it.effect("reconnect backoff runs on TestClock: nothing happens before the delay, the reconnect right at it", () =>
    Effect.gen(function*() {
      connections = 0
      const server = yield* Testing.TestServer
      const opened: Array<number> = []
      const client = yield* Client.reconnecting("ws://test/echo", {
        connector: server.connector,
        // Exponential from 1 s (1 s, 2 s, 4 s ...), no jitter: exact instants to check.
        schedule: Schedule.exponential("1 second"),
        onOpen: (conn) => Effect.andThen(Effect.sync(() => opened.push(conn.id)), conn.send("hello again"))
      })
      yield* waitFor(client, "Open")
      expect(opened.length).toBe(1)
      const firstHello = yield* client.messages.pipe(Stream.take(1), Stream.runCollect)
      expect(firstHello.map((m) => (m._tag === "Text" ? m.text : ""))).toEqual(["hello again"])

      // The server drops us (1011): Reconnecting, and it stays so until the clock reaches 1 s.
      yield* client.send("drop")
      yield* waitFor(client, "Reconnecting")
      const state = yield* SubscriptionRef.get(client.state)
      expect(state).toMatchObject({ _tag: "Reconnecting", cause: { _tag: "Disconnected", info: { code: 1011 } } })
      // Sent while down: buffered, delivered after onOpen.
      yield* client.send("while down")
      yield* Testing.settle
      yield* TestClock.adjust("999 millis")
      yield* Testing.settle
      expect((yield* SubscriptionRef.get(client.state))._tag).toBe("Reconnecting")
      expect(connections).toBe(1)
      yield* TestClock.adjust("1 millis")
      yield* waitFor(client, "Open")
      expect(connections).toBe(2)
      expect(opened.length).toBe(2)
      const after = yield* client.messages.pipe(Stream.take(2), Stream.runCollect)
      expect(after.map((m) => (m._tag === "Text" ? m.text : ""))).toEqual(["hello again", "while down"])
      yield* client.close()
      expect((yield* SubscriptionRef.get(client.state))._tag).toBe("Closed")
    }).pipe(Effect.scoped, Effect.provide(Testing.layer(app))))

  it.effect("the client's heartbeat on TestClock: a peer gone silent is dropped (1006) after interval + timeout", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      // A connector can wrap the test kit's: here the network starts losing everything the server sends.
      let blackhole = false
      const connector: Client.Connector = (target) =>
        Effect.map(server.connector(target), (incoming) => ({
          ...incoming,
          listen: (onData, onEnd) => incoming.listen((chunk) => (blackhole ? undefined : onData(chunk)), onEnd)
        }))
      const conn = yield* Client.connect("ws://test/echo", { connector, heartbeatIntervalMs: 10_000, heartbeatTimeoutMs: 5_000 })
      blackhole = true
      const closed = yield* Effect.forkChild(conn.closed)
      yield* Testing.settle
      yield* TestClock.adjust("10 seconds") // the ping goes out; its pong is lost
      yield* Testing.settle
      expect(closed.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust("5 seconds")
      expect(yield* Fiber.join(closed)).toMatchObject({ code: 1006, wasClean: false })
    }).pipe(Effect.scoped, Effect.provide(Testing.layer(app))))
})
