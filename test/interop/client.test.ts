/**
 * Interop: wsreactor's client against servers no one here wrote (the `ws`
 * package's server, plain and over node:https for wss://), with and without
 * permessage-deflate; and wss:// against wsreactor's own TLS transport with
 * the committed test certificate (test/support/tls).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import * as Stream from "effect/Stream"
import { readFileSync } from "node:fs"
import * as Https from "node:https"
import type { AddressInfo } from "node:net"
import { WebSocketServer } from "ws"
import * as NodeTcp from "../../src/layers/NodeTcp.ts"
import * as Client from "../../src/services/Client.ts"
import type * as Message from "../../src/services/Message.ts"
import * as Server from "../../src/services/Server.ts"
import { Transport } from "../../src/services/Transport.ts"
import { expectBurstEchoed } from "../support/Burst.ts"
import { makeFlood } from "../support/Flood.ts"

const tlsDir = new URL("../support/tls/", import.meta.url)
const cert = readFileSync(new URL("cert.pem", tlsDir))
const key = readFileSync(new URL("key.pem", tlsDir))

const bounded = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.timeout(self, "5 seconds")

interface WsServerOptions {
  readonly perMessageDeflate?: boolean | { readonly threshold: number }
  readonly tls?: boolean
}

/** A `ws` echo server on 127.0.0.1 (over node:https when `tls`), closed with the scope. */
const wsServer = (options: WsServerOptions = {}) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly port: number; readonly wss: WebSocketServer; readonly close: () => void }>((resume) => {
      const https = options.tls === true ? Https.createServer({ key, cert }) : undefined
      const wss = new WebSocketServer({
        ...(https === undefined ? { port: 0, host: "127.0.0.1" } : { server: https }),
        perMessageDeflate: options.perMessageDeflate ?? false,
        handleProtocols: (protocols) => (protocols.has("chat") ? "chat" : false)
      })
      wss.on("connection", (ws) => {
        ws.on("message", (data, isBinary) => {
          const text = isBinary ? "" : String(data)
          if (text === "close-me") ws.close(4001, "as asked")
          else ws.send(data, { binary: isBinary })
        })
      })
      const close = () => {
        for (const client of wss.clients) client.terminate()
        wss.close()
        https?.close()
      }
      const ready = (port: number) => resume(Effect.succeed({ port, wss, close }))
      if (https === undefined) wss.once("listening", () => ready((wss.address() as AddressInfo).port))
      else https.listen(0, "127.0.0.1", () => ready((https.address() as AddressInfo).port))
    }),
    (server) => Effect.sync(() => server.close())
  )

const texts = (messages: ReadonlyArray<Message.Message>) =>
  messages.map((m) => (m._tag === "Text" ? m.text : `<${m.data.length} bytes>`))

const exchange = (conn: Client.ClientConnection) =>
  Effect.gen(function*() {
    const sizes = [0, 1, 125, 126, 65535, 65536, 300_000]
    const outgoing = sizes.map((n, i) => (i % 2 === 0 ? "abc".repeat(n).slice(0, n) : new Uint8Array(n).fill(i)))
    for (const m of outgoing) yield* conn.send(m)
    const got = yield* bounded(conn.messages.pipe(Stream.take(outgoing.length), Stream.runCollect))
    expect(got.map((m) => m._tag)).toEqual(outgoing.map((m) => (typeof m === "string" ? "Text" : "Binary")))
    got.forEach((m, i) => {
      const sent = outgoing[i]!
      if (typeof sent === "string") expect((m as Message.TextMessage).text).toBe(sent)
      else expect(Buffer.from(m.data).equals(Buffer.from(sent))).toBe(true)
    })
  })

describe("Client against the ws server", () => {
  for (const deflate of [false, true]) {
    it.live(`echo of every length class${deflate ? ", permessage-deflate" : ""}; clean close both ways`, () =>
      Effect.scoped(Effect.gen(function*() {
        const server = yield* wsServer({ perMessageDeflate: deflate ? { threshold: 0 } : false })
        const url = `ws://127.0.0.1:${server.port}/`
        const conn = yield* Client.connect(url, { perMessageDeflate: deflate, protocols: ["chat"] })
        expect(conn.protocol).toBe("chat")
        if (deflate) expect(conn.extensions).toMatch(/^permessage-deflate/)
        else expect(conn.extensions).toBeUndefined()
        yield* exchange(conn)
        yield* conn.close(1000, "bye")
        expect(yield* bounded(conn.closed)).toEqual({ code: 1000, reason: "bye", wasClean: true, initiatedBy: "local" })

        const second = yield* Client.connect(url, { perMessageDeflate: deflate })
        yield* second.send("close-me")
        expect(yield* bounded(second.closed)).toEqual({ code: 4001, reason: "as asked", wasClean: true, initiatedBy: "peer" })
      })))
  }

  it.live("ws server pings are answered (the connection stays up), and a server terminate is 1006", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* wsServer()
      const conn = yield* Client.connect(`ws://127.0.0.1:${server.port}/`)
      const peer = [...server.wss.clients][0]!
      const pong = new Promise<string>((resolve) => peer.once("pong", (data) => resolve(String(data))))
      peer.ping("are you there")
      expect(yield* bounded(Effect.promise(() => pong))).toBe("are you there")
      peer.terminate()
      expect(yield* bounded(conn.closed)).toMatchObject({ code: 1006, wasClean: false, initiatedBy: "transport" })
    })))

  it.live("wss:// through node:https with the test certificate; an untrusted certificate is a ConnectError", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* wsServer({ tls: true, perMessageDeflate: true })
      const conn = yield* Client.connect(`wss://localhost:${server.port}/`, {
        tls: { ca: cert },
        perMessageDeflate: true
      })
      yield* exchange(conn)
      const untrusted = yield* Effect.flip(Client.connect(`wss://localhost:${server.port}/`))
      expect(untrusted._tag).toBe("ConnectError")
    })))

  it.live("wss://: bursts of large and small messages arrive intact through the lent read buffer (TLS records)", () =>
    Effect.scoped(Effect.gen(function*() {
      // TLS reads are decrypted records of up to 16 KiB into the client's one shared buffer; those of
      // 4 KiB and more are lent to the decoder: anything it kept as a view would be overwritten.
      const server = yield* wsServer({ tls: true })
      const conns = yield* Effect.forEach([0, 1], () =>
        Client.connect(`wss://localhost:${server.port}/`, { tls: { ca: cert } }))
      yield* expectBurstEchoed(conns, [70_000, 3, 200_000, 17, 4095, 16_384, 65_536, 1, 9000, 130_000, 0, 600])
    })))
})

describe("Client over wss:// against wsreactor's TLS transport", () => {
  it.live("echo and clean close", () =>
    Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(NodeTcp.layerTls({ port: 0, host: "127.0.0.1", key, cert }))
      const port = Context.get(context, Transport).address.port
      const app: Server.App<never> = {
        http: () => Effect.succeed({ status: 404 }),
        upgrade: () =>
          Effect.succeed({ _tag: "Accept", handler: (c) => c.messages.pipe(Stream.runForEach((m) => c.send(m))) })
      }
      const fiber = yield* Effect.forkScoped(
        Server.serve(app).pipe(Effect.provideContext(context), Effect.provideService(References.MinimumLogLevel, "Warn"))
      )
      yield* Effect.scoped(Effect.gen(function*() {
        const conn = yield* Client.connect(`wss://127.0.0.1:${port}/`, { tls: { ca: cert, servername: "localhost" } })
        yield* conn.send("over tls")
        const got = yield* bounded(conn.messages.pipe(Stream.take(1), Stream.runCollect))
        expect(texts(got)).toEqual(["over tls"])
        yield* conn.close()
        expect(yield* bounded(conn.closed)).toMatchObject({ code: 1000, wasClean: true })
      }))
      yield* Fiber.interrupt(fiber)
    })))
})

describe("Client over wss://: inbound backpressure", () => {
  it.live("a client that does not read pauses its TLS socket, and the server's sends wait", () =>
    Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(NodeTcp.layerTls({ port: 0, host: "127.0.0.1", key, cert }))
      const port = Context.get(context, Transport).address.port
      const flood = makeFlood(512)
      const app: Server.App<never> = {
        http: () => Effect.succeed({ status: 404 }),
        upgrade: () => Effect.succeed({ _tag: "Accept", handler: flood.handler })
      }
      yield* Effect.forkScoped(
        Server.serve(app, { outboundHighWaterMark: 64 * 1024 }).pipe(
          Effect.provideContext(context),
          Effect.provideService(References.MinimumLogLevel, "Warn")
        )
      )
      const conn = yield* Client.connect(`wss://127.0.0.1:${port}/`, {
        tls: { ca: cert, servername: "localhost" },
        inboundQueueSize: 4,
        inboundHighWaterMark: 256 * 1024
      })
      yield* flood.expectStallThenDrain(conn)
    })))
})
