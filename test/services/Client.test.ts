/**
 * The client against wsreactor's own server on a real loopback port: echo,
 * both closing handshakes, subprotocols, permessage-deflate, limits,
 * refused upgrades and backpressure.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Net from "node:net"
import * as Handshake from "../../src/domain/Handshake.ts"
import * as Client from "../../src/services/Client.ts"
import type { CloseInfo } from "../../src/services/Connection.ts"
import * as Message from "../../src/services/Message.ts"
import * as Typed from "../../src/services/Typed.ts"
import type { App } from "../../src/services/Reactor.ts"
import * as Router from "../../src/services/Router.ts"
import type { ServeOptions } from "../../src/services/Server.ts"
import { expectBurstEchoed } from "../support/Burst.ts"
import { makeFlood } from "../support/Flood.ts"
import { startServer } from "../support/TcpServer.ts"

/** A wsreactor server on 127.0.0.1, stopped with the test's scope. */
export const serverOn = (app: App<never>, options: ServeOptions = {}) =>
  Effect.acquireRelease(
    Effect.promise(() => startServer(app, options)),
    (server) => Effect.promise(() => server.close())
  )

const echo: App<never> = {
  http: () => Effect.succeed({ status: 404 }),
  upgrade: (upgrade) =>
    Effect.succeed({
      _tag: "Accept",
      protocol: upgrade.protocols.includes("v2") ? "v2" : undefined,
      handler: (c) => c.messages.pipe(Stream.runForEach((m) => c.send(m)))
    })
}

const bounded = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.timeout(self, "5 seconds")

describe("Client against wsreactor's server", () => {
  it.live("echoes text and binary, then closes cleanly from the client (1000, §7.1.1)", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* serverOn(echo)
      const conn = yield* Client.connect(`ws://127.0.0.1:${server.port}/echo?x=1`)
      expect(conn.path).toBe("/echo")
      expect(conn.query.get("x")).toBe("1")
      expect(conn.response.status).toBe(101)
      yield* conn.send("héllo")
      yield* conn.send(new Uint8Array([1, 2, 3]))
      yield* conn.sendAll(["a", "b"])
      const got = yield* bounded(conn.messages.pipe(Stream.take(4), Stream.runCollect))
      expect(got.map((m) => (m._tag === "Text" ? m.text : [...m.data]))).toEqual(["héllo", [1, 2, 3], "a", "b"])
      yield* conn.close(1000, "done")
      const info = yield* bounded(conn.closed)
      expect(info).toEqual({ code: 1000, reason: "done", wasClean: true, initiatedBy: "local" })
      // The stream ends with the connection; send after close fails, typed.
      expect(yield* bounded(Stream.runCollect(conn.messages))).toEqual([])
      const error = yield* Effect.flip(conn.send("late"))
      expect(error._tag).toBe("ConnectionClosedError")
    })))

  it.live("the server's close is echoed; messages before it are still delivered", () =>
    Effect.scoped(Effect.gen(function*() {
      const serverSaw = yield* Deferred.make<CloseInfo>()
      const app = Router.make([Router.ws("/*", (c) =>
        Effect.gen(function*() {
          yield* c.sendAll(["one", "two"])
          yield* c.close(4000, "bye")
          yield* Deferred.succeed(serverSaw, yield* c.closed)
        }))])
      const server = yield* serverOn(app)
      const conn = yield* Client.connect(`ws://127.0.0.1:${server.port}/`)
      const info = yield* bounded(conn.closed)
      expect(info).toEqual({ code: 4000, reason: "bye", wasClean: true, initiatedBy: "peer" })
      const got = yield* bounded(Stream.runCollect(conn.messages))
      expect(got.map((m) => (m as Message.TextMessage).text)).toEqual(["one", "two"])
      expect((yield* bounded(Deferred.await(serverSaw))).wasClean).toBe(true)
    })))

  it.live("leaving the scope closes with 1000 and the server sees a clean close", () =>
    Effect.gen(function*() {
      const serverSaw = yield* Deferred.make<CloseInfo>()
      const app = Router.make([Router.ws("/*", (c) => Effect.andThen(Stream.runDrain(c.messages), Effect.flatMap(c.closed, (i) => Deferred.succeed(serverSaw, i))))])
      yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* serverOn(app)
        yield* Effect.scoped(Effect.gen(function*() {
          const conn = yield* Client.connect(`ws://127.0.0.1:${server.port}/`)
          yield* conn.send("x")
        }))
        const info = yield* bounded(Deferred.await(serverSaw))
        expect(info).toMatchObject({ code: 1000, wasClean: true, initiatedBy: "peer" })
      }))
    }))

  it.live("subprotocols: the server's choice is the connection's; a refused upgrade is a typed HandshakeError", () =>
    Effect.scoped(Effect.gen(function*() {
      const app: App<never> = {
        http: () => Effect.succeed({ status: 404 }),
        upgrade: (upgrade) =>
          upgrade.request.path === "/private"
            ? Effect.succeed({ _tag: "Reject", response: { status: 403, body: "no" } })
            : echo.upgrade(upgrade, { remoteAddress: undefined, remotePort: undefined })
      }
      const server = yield* serverOn(app)
      const conn = yield* Client.connect(`ws://127.0.0.1:${server.port}/`, { protocols: ["v1", "v2"] })
      expect(conn.protocol).toBe("v2")
      expect(conn.responseHeader("sec-websocket-protocol")).toBe("v2")
      const missing = yield* Effect.flip(Client.connect(`ws://127.0.0.1:${server.port}/`, { protocols: ["v1"] }))
      expect(missing).toMatchObject({ _tag: "HandshakeError", reason: "MissingProtocol" })
      const refused = yield* Effect.flip(Client.connect(`ws://127.0.0.1:${server.port}/private`))
      expect(refused).toMatchObject({ _tag: "HandshakeError", reason: "BadStatus", status: 403 })
    })))

  it.live("permessage-deflate: agreed with the server, large messages echo exactly", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* serverOn(echo, { perMessageDeflate: true })
      const conn = yield* Client.connect(`ws://127.0.0.1:${server.port}/`, { perMessageDeflate: { threshold: 0 } })
      expect(conn.extensions).toContain("permessage-deflate")
      const big = "wsreactor ".repeat(50_000)
      yield* conn.send(big)
      yield* conn.send("small")
      const got = yield* bounded(conn.messages.pipe(Stream.take(2), Stream.runCollect))
      expect(got.map((m) => (m as Message.TextMessage).text)).toEqual([big, "small"])
      // Without the offer, the server answers without the extension.
      const plain = yield* Client.connect(`ws://127.0.0.1:${server.port}/`)
      expect(plain.extensions).toBeUndefined()
    })))

  it.live("bursts of large and small messages, fragmented or not, arrive intact through the lent read buffer", () =>
    Effect.scoped(Effect.gen(function*() {
      // Reads of 4 KiB and more are lent to the decoder (one buffer for every client socket): a
      // payload, fragment or header it kept as a view would be overwritten by the next read.
      for (const fragmentSize of [0, 5000]) {
        const server = yield* serverOn(echo, { fragmentSize, maxMessageSize: 1 << 20 })
        const conns = yield* Effect.forEach([0, 1], () => Client.connect(`ws://127.0.0.1:${server.port}/`))
        yield* expectBurstEchoed(conns, [70_000, 3, 200_000, 17, 4095, 4096, 65_536, 1, 9000, 130_000, 0, 600])
      }
    })))

  it.live("a message over maxMessageSize fails the connection with 1009", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* serverOn(echo)
      const conn = yield* Client.connect(`ws://127.0.0.1:${server.port}/`, { maxMessageSize: 1000 })
      yield* conn.send("x".repeat(999))
      yield* conn.send("x".repeat(1001)) // our limit is on what we receive: the echo is too big
      const got = yield* bounded(Stream.runCollect(conn.messages))
      expect(got.length).toBe(1)
      const info = yield* bounded(conn.closed)
      expect(info).toMatchObject({ code: 1009, wasClean: false, initiatedBy: "local" })
    })))

  it.live("options and URLs are validated before anything connects", () =>
    Effect.gen(function*() {
      const bad = yield* Effect.flip(Effect.scoped(Client.connect("ws://127.0.0.1:1/", { maxMessageSize: 0 })))
      expect(bad._tag).toBe("ClientOptionsError")
      const url = yield* Effect.flip(Effect.scoped(Client.connect("http://127.0.0.1:1/")))
      expect(url._tag).toBe("ClientOptionsError")
      const token = yield* Effect.flip(Effect.scoped(Client.connect("ws://127.0.0.1:1/", { protocols: ["a b"] })))
      expect(token._tag).toBe("ClientOptionsError")
    }))

  it.live("a refused TCP connection is a ConnectError; a silent server a handshake Timeout", () =>
    Effect.scoped(Effect.gen(function*() {
      const silent = Net.createServer((socket) => socket.on("error", () => {}))
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => void silent.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => silent.close())
      )
      const port = (silent.address() as Net.AddressInfo).port
      const timeout = yield* Effect.flip(Client.connect(`ws://127.0.0.1:${port}/`, { handshakeTimeoutMs: 200 }))
      expect(timeout).toMatchObject({ _tag: "HandshakeError", reason: "Timeout" })
      silent.close()
      yield* Effect.sleep("50 millis")
      const refused = yield* Effect.flip(Client.connect(`ws://127.0.0.1:${port}/`))
      expect(refused._tag).toBe("ConnectError")
    })))

  it.live("outbound backpressure: over the mark, 'drop' refuses while the server does not read", () =>
    Effect.scoped(Effect.gen(function*() {
      // A server that completes the handshake and then never reads.
      const sockets = new Set<Net.Socket>()
      const stalled = Net.createServer((socket) => {
        sockets.add(socket)
        socket.on("error", () => {})
        socket.once("data", (head) => {
          const key = /sec-websocket-key: *(\S+)/i.exec(head.toString("latin1"))![1]!
          socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${Handshake.acceptKey(key)}\r\n\r\n`)
          socket.pause()
        })
      })
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => void stalled.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => {
          for (const s of sockets) s.destroy()
          stalled.close()
        })
      )
      const port = (stalled.address() as Net.AddressInfo).port
      const conn = yield* Client.connect(`ws://127.0.0.1:${port}/`, {
        outboundHighWaterMark: 64 * 1024,
        backpressure: "drop",
        closeTimeoutMs: 100
      })
      const chunk = new Uint8Array(256 * 1024)
      let sent = 0
      const error = yield* bounded(Effect.flip(Effect.forever(Effect.andThen(conn.send(chunk), Effect.sync(() => sent++)).pipe(Effect.andThen(Effect.yieldNow)))))
      expect(error._tag).toBe("MessageDroppedError")
      expect(sent).toBeGreaterThan(0)
      expect(conn.bufferedAmount()).toBeGreaterThan(64 * 1024)
    })))

  it.live("inbound: a client that does not read pauses the socket, and the server's send waits", () =>
    Effect.scoped(Effect.gen(function*() {
      const flood = makeFlood(512)
      const server = yield* serverOn(Router.make([Router.ws("/*", flood.handler)]), { outboundHighWaterMark: 64 * 1024 })
      const conn = yield* Client.connect(`ws://127.0.0.1:${server.port}/`, {
        inboundQueueSize: 4,
        inboundHighWaterMark: 256 * 1024
      })
      yield* flood.expectStallThenDrain(conn)
    })))

  it.live("Typed codecs on a client connection: values both ways; a message that does not decode closes 1007", () =>
    Effect.scoped(Effect.gen(function*() {
      const serverSaw = yield* Deferred.make<CloseInfo>()
      const app = Router.make([Router.ws("/*", (c) =>
        Effect.gen(function*() {
          const [first] = yield* c.messages.pipe(Stream.take(1), Stream.runCollect)
          const n = JSON.parse((first as Message.TextMessage).text).n as number
          yield* c.sendAll([JSON.stringify({ doubled: n * 2 }), "not json"])
          yield* Deferred.succeed(serverSaw, yield* c.closed)
        }))])
      const server = yield* serverOn(app)
      const conn = yield* Client.connect(`ws://127.0.0.1:${server.port}/`)
      const seen: Array<number> = []
      yield* bounded(Typed.handler(
        { incoming: Schema.Struct({ doubled: Schema.Number }), outgoing: Schema.Struct({ n: Schema.Number }) },
        (typed) =>
          Effect.andThen(
            typed.send({ n: 21 }),
            typed.messages.pipe(Stream.runForEach((m) => Effect.sync(() => seen.push(m.doubled))))
          )
      )(conn))
      expect(seen).toEqual([42])
      expect(yield* bounded(conn.closed)).toMatchObject({ code: 1007, initiatedBy: "local", wasClean: true })
      expect((yield* bounded(Deferred.await(serverSaw))).code).toBe(1007)
    })))
})
