/**
 * SocketAdapter: wsreactor connections as `effect/socket` `Socket`s. Effect
 * RPC end to end (its socket protocol on both sides: `RpcClient` over
 * `SocketAdapter.layer`, `RpcServer` over a wsreactor route through
 * `makeSocketServer`), and the Socket contract itself (chunks per message,
 * close events, typed errors), over real loopback sockets.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Rpc from "effect/rpc/Rpc"
import * as RpcClient from "effect/rpc/RpcClient"
import * as RpcGroup from "effect/rpc/RpcGroup"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import * as RpcServer from "effect/rpc/RpcServer"
import * as Socket from "effect/socket/Socket"
import * as SocketServer from "effect/socket/SocketServer"
import * as NodeTcp from "../../src/layers/NodeTcp.ts"
import * as SocketAdapter from "../../src/layers/SocketAdapter.ts"
import * as Router from "../../src/services/Router.ts"
import * as Server from "../../src/services/Server.ts"
import { Transport } from "../../src/services/Transport.ts"

const bounded = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.timeout(self, "5 seconds")

/** Serve `app` with wsreactor on 127.0.0.1 (a port the kernel picks), for the scope. */
const serveOnLoopback = <R>(app: Server.App<R>) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(NodeTcp.layer({ port: 0, host: "127.0.0.1" }))
    const port = Context.get(context, Transport).address.port
    yield* Effect.forkScoped(
      Server.serve(app).pipe(Effect.provideContext(context), Effect.provideService(References.MinimumLogLevel, "Warn"))
    )
    return port
  })

class Boom extends Schema.TaggedError<Boom>()("Boom", { why: Schema.String }) {}

const Api = RpcGroup.make(
  Rpc.make("Add", { payload: { a: Schema.Number, b: Schema.Number }, success: Schema.Number }),
  Rpc.make("Count", { payload: { to: Schema.Int }, success: Schema.Int, stream: true }),
  Rpc.make("Fail", { payload: { why: Schema.String }, error: Boom }),
  Rpc.make("Echo", { payload: { text: Schema.String }, success: Schema.String })
)

const Handlers = Api.toLayer({
  Add: ({ a, b }) => Effect.succeed(a + b),
  Count: ({ to }) => Stream.range(1, to),
  Fail: ({ why }) => Effect.fail(new Boom({ why })),
  Echo: ({ text }) => Effect.succeed(text)
})

describe("Effect RPC over wsreactor (client and server)", () => {
  it.live("calls, a stream, a typed error, a large payload, two clients", () =>
    Effect.scoped(Effect.gen(function*() {
      const { server, accept } = yield* SocketAdapter.makeSocketServer()
      const port = yield* serveOnLoopback(Router.make([Router.ws("/rpc", accept)]))
      // The RPC server: Effect's socket-server protocol, fed by the wsreactor route.
      yield* Layer.build(
        RpcServer.layer(Api).pipe(
          Layer.provide(Handlers),
          Layer.provide(RpcServer.layerProtocolSocketServer),
          Layer.provide(Layer.succeed(SocketServer.SocketServer, server)),
          Layer.provide(RpcSerialization.layerJson)
        )
      )
      const protocol = (deflate: boolean) =>
        RpcClient.layerProtocolSocket().pipe(
          Layer.provide(SocketAdapter.layer(`ws://127.0.0.1:${port}/rpc`, { perMessageDeflate: deflate })),
          Layer.provide(RpcSerialization.layerJson),
          Layer.fresh
        )
      for (const deflate of [false, true]) {
        yield* Effect.scoped(Effect.gen(function*() {
          // Built in this scope: the protocol's reader fiber lives as long as the client.
          const client = yield* RpcClient.make(Api).pipe(Effect.provideContext(yield* Layer.build(protocol(deflate))))
          expect(yield* bounded(client.Add({ a: 2, b: 40 }))).toBe(42)
          expect(yield* bounded(client.Count({ to: 5 }).pipe(Stream.runCollect))).toEqual([1, 2, 3, 4, 5])
          const error = yield* bounded(Effect.flip(client.Fail({ why: "on purpose" })))
          expect(error).toBeInstanceOf(Boom)
          expect((error as Boom).why).toBe("on purpose")
          const big = "x".repeat(300_000)
          expect(yield* bounded(client.Echo({ text: big }))).toBe(big)
          const sums = yield* bounded(Effect.forEach([1, 2, 3, 4, 5, 6, 7, 8], (i) => client.Add({ a: i, b: i }), {
            concurrency: "unbounded"
          }))
          expect(sums).toEqual([2, 4, 6, 8, 10, 12, 14, 16])
        }))
      }
    })), 20_000)
})

// An echo route; "close:<code>" makes the server close with that code.
const echoApp = Router.make([
  Router.ws("/", (conn) =>
    conn.messages.pipe(Stream.runForEach((m) => {
      if (m._tag === "Text" && m.text.startsWith("close:")) return conn.close(Number(m.text.slice(6)), "asked")
      return conn.send(m)
    })))
])

const closeCode = (error: Socket.SocketError) => (error.reason._tag === "SocketCloseError" ? error.reason.code : error.reason._tag)

describe("SocketAdapter: the Socket contract", () => {
  it.live("one chunk per message: text as string, binary as bytes; the writer waits for the connection", () =>
    Effect.scoped(Effect.gen(function*() {
      const port = yield* serveOnLoopback(echoApp)
      const socket = yield* SocketAdapter.make(`ws://127.0.0.1:${port}/`)
      const writer = yield* socket.writer
      // Written before any reader opened the connection: held until it is open (as in Socket.fromWebSocket).
      const early = yield* Effect.forkChild(writer.writeAll(["a", new Uint8Array([1, 2, 3]), ""]))
      const reader = yield* socket.reader
      yield* Fiber.join(early)
      const got: Array<string | Uint8Array> = []
      while (got.length < 3) got.push(...(yield* bounded(reader.pull)))
      expect(got.map((c) => (typeof c === "string" ? c : Array.from(c)))).toEqual(["a", [1, 2, 3], ""])
      yield* writer.write(new Uint8Array(70_000).fill(7))
      const [big] = yield* bounded(reader.pull)
      expect(big).toBeInstanceOf(Uint8Array)
      expect((big as Uint8Array).length).toBe(70_000)
    })))

  it.live("a CloseEvent closes (the pull then fails with SocketCloseError and our code), 1000 included", () =>
    Effect.scoped(Effect.gen(function*() {
      const port = yield* serveOnLoopback(echoApp)
      for (const code of [1000, 4321]) {
        yield* Effect.scoped(Effect.gen(function*() {
          const socket = yield* SocketAdapter.make(`ws://127.0.0.1:${port}/`)
          const reader = yield* socket.reader
          const writer = yield* socket.writer
          yield* writer.write(new Socket.CloseEvent(code, "done"))
          const error = yield* bounded(Effect.flip(reader.pull))
          expect(error).toBeInstanceOf(Socket.SocketError)
          expect(closeCode(error)).toBe(code)
          // After the close, writes fail with SocketWriteError.
          const late = yield* Effect.flip(writer.write("late"))
          expect(late.reason._tag).toBe("SocketWriteError")
        }))
      }
    })))

  it.live("a close by the server: the messages before it, then SocketCloseError with its code and reason", () =>
    Effect.scoped(Effect.gen(function*() {
      const port = yield* serveOnLoopback(echoApp)
      const socket = yield* SocketAdapter.make(`ws://127.0.0.1:${port}/`)
      const stream = Socket.toStream(socket)
      const writer = yield* socket.writer
      const fiber = yield* Effect.forkChild(Stream.runCollect(stream).pipe(Effect.flip))
      yield* writer.write("one")
      yield* writer.write("close:4000")
      const error = yield* bounded(Fiber.join(fiber))
      expect(error.reason).toMatchObject({ _tag: "SocketCloseError", code: 4000, closeReason: "asked" })
      // toChannel over it: Effect's own channel helpers work too.
      const socket2 = yield* SocketAdapter.make(`ws://127.0.0.1:${port}/`)
      const echoed = yield* bounded(
        Stream.make(new TextEncoder().encode("via channel")).pipe(
          Stream.pipeThroughChannel(Socket.toChannel(socket2)),
          Stream.take(1),
          Stream.runCollect
        )
      )
      expect(new TextDecoder().decode(echoed[0])).toBe("via channel")
    })))

  it.live("connect failures are SocketOpenError with the typed client error as cause; the reader scope's end unblocks a pull", () =>
    Effect.scoped(Effect.gen(function*() {
      const port = yield* serveOnLoopback(Router.make([]))
      // No route: the server answers 404, a HandshakeError.
      const refused = yield* Effect.flip(Effect.scoped((yield* SocketAdapter.make(`ws://127.0.0.1:${port}/nope`)).reader))
      expect(refused.reason._tag).toBe("SocketOpenError")
      expect((refused.reason as Socket.SocketOpenError).cause).toMatchObject({ _tag: "HandshakeError", status: 404 })
      const timeout = yield* Effect.flip(
        Effect.scoped((yield* SocketAdapter.make(`ws://127.0.0.1:${port}/nope`, { handshakeTimeoutMs: 1 })).reader)
      )
      expect(timeout.reason._tag).toBe("SocketOpenError")

      const echoPort = yield* serveOnLoopback(echoApp)
      const socket = yield* SocketAdapter.make(`ws://127.0.0.1:${echoPort}/`)
      const scope = yield* Scope.make()
      const reader = yield* Scope.provide(socket.reader, scope)
      const blocked = yield* Effect.forkChild(Effect.flip(reader.pull))
      yield* Effect.sleep("20 millis")
      yield* Scope.close(scope, Exit.void)
      expect(closeCode(yield* bounded(Fiber.join(blocked)))).toBe(1006)
    })))
})
