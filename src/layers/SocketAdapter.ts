/**
 * wsreactor connections as `effect/socket` `Socket`s, so Effect libraries that
 * speak over a `Socket` (Effect RPC's socket protocol, `Socket.toChannel`
 * pipelines) run over wsreactor: on the client side over `Client.connect`, on
 * the server side over a route's connections (as a `SocketServer`).
 *
 * The mapping follows Effect's own `Socket.fromWebSocket`:
 * - each element of a reader batch is one WebSocket message: a `string` for a
 *   text message (RFC 6455 §5.6), a `Uint8Array` for a binary one;
 * - `write(string)` sends a text message, `write(Uint8Array)` a binary one,
 *   `write(new Socket.CloseEvent(code, reason))` starts the closing handshake
 *   (§7.1.2);
 * - once the connection has closed, `pull` fails with `SocketError` whose
 *   reason is `SocketCloseError { code, closeReason }` (even for 1000, as in
 *   Effect); 1006 when no close frame came (§7.1.5);
 * - a connect or handshake failure is `SocketOpenError` (`kind: "Timeout"` for
 *   the handshake timeout), a refused write `SocketWriteError`.
 *
 * Unlike `fromWebSocket`, writes have backpressure: `write` waits while the
 * connection's outbound buffer is over its high-water mark (the client's
 * `backpressure` option), and reads pause the TCP socket while the reader is
 * behind.
 *
 * @example
 * import { Effect, Layer } from "effect"
 * import { RpcClient, RpcSerialization } from "effect/rpc"
 * import { SocketAdapter } from "wsreactor"
 *
 * // Effect RPC over a wsreactor client:
 * const Protocol = RpcClient.layerProtocolSocket().pipe(
 *   Layer.provide(SocketAdapter.layer("ws://localhost:8888/rpc")),
 *   Layer.provide(RpcSerialization.layerJson)
 * )
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Latch from "effect/Latch"
import * as Layer from "effect/Layer"
import * as NetAddress from "effect/net/NetAddress"
import type * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import * as SocketServer from "effect/socket/SocketServer"
import * as Stream from "effect/Stream"
import * as Client from "../services/Client.ts"
import type { Connection } from "../services/Connection.ts"
import type * as Message from "../services/Message.ts"

const closeError = (code: number, reason?: string) =>
  new Socket.SocketError({ reason: new Socket.SocketCloseError({ code, closeReason: reason === "" ? undefined : reason }) })

const writeError = (cause: unknown) => new Socket.SocketError({ reason: new Socket.SocketWriteError({ cause }) })

const toChunk = (message: Message.Message): string | Uint8Array => (message._tag === "Text" ? message.text : message.data)

/**
 * The reader of an open connection, in the current scope. When the scope
 * closes, a pull blocked in another fiber fails (1006), as `Socket.make`
 * requires.
 */
const readerOf = (conn: Connection): Effect.Effect<Socket.Reader, never, Scope.Scope> =>
  Effect.gen(function*() {
    const pull = yield* Stream.toPull(conn.messages)
    const detached = yield* Deferred.make<never, Socket.SocketError>()
    yield* Effect.addFinalizer(() => Deferred.fail(detached, closeError(1006)))
    const next: Effect.Effect<ReadonlyArray<string | Uint8Array>, Socket.SocketError> = pull.pipe(
      Effect.map((batch) => batch.map(toChunk)),
      // The messages ended: the connection is closing; report how it closed (§7.1.5, §7.4).
      Effect.catchIf(Cause.isDone, () =>
        Effect.flatMap(conn.closed, (info) => Effect.fail(closeError(info.code, info.reason))))
    )
    return {
      pull: Effect.raceFirst(next, Deferred.await(detached)) as Socket.Reader["pull"],
      upgrade: Socket.SocketUpgradeError.unsupported
    }
  })

const writerOf = (conn: Connection): Socket.Writer => ({
  write: (chunk) =>
    Socket.isCloseEvent(chunk)
      ? conn.close(chunk.code, chunk.reason ?? "")
      : Effect.mapError(conn.send(chunk), writeError),
  writeAll: (chunks) => Effect.mapError(conn.sendAll(chunks), writeError)
})

/**
 * A `Socket` over a connection that is already open (a client's, or one a
 * server route accepted). Its messages can be read once: acquire the reader
 * once (as `Socket.toChannel` and Effect RPC do).
 *
 * @example
 * const handler = (conn: Connection.Connection) =>
 *   Socket.toStream(SocketAdapter.fromConnection(conn)).pipe(Stream.runForEach(Console.log))
 */
export const fromConnection = (conn: Connection): Socket.Socket =>
  Socket.make({
    reader: readerOf(conn),
    writer: Effect.succeed(writerOf(conn))
  })

const openError = (error: Client.ConnectFailure) =>
  new Socket.SocketError({
    reason: new Socket.SocketOpenError({
      kind: error._tag === "HandshakeError" && error.reason === "Timeout" ? "Timeout" : "Unknown",
      cause: error
    })
  })

/**
 * A `Socket` that connects with {@link Client.connect} each time its reader is
 * acquired (the connection lives in the reader's scope, as with
 * `Socket.makeWebSocket`); writes wait until that connection is open. A
 * failed connect is `SocketOpenError` (its `cause` is the typed
 * `ConnectError` / `HandshakeError`), so Effect RPC's `retryTransientErrors`
 * reconnects.
 *
 * @example
 * const socket = yield* SocketAdapter.make("ws://localhost:8888/feed", { perMessageDeflate: true })
 * yield* Socket.toStream(socket).pipe(Stream.take(10), Stream.runForEach(Console.log))
 */
export const make = (url: string | URL, options: Client.ConnectOptions = {}): Effect.Effect<Socket.Socket> =>
  Effect.sync(() => {
    let current: Connection | undefined
    const open = Latch.makeUnsafe(false)
    const reader = Effect.gen(function*() {
      const conn = yield* Effect.mapError(Client.connect(url, options), openError)
      current = conn
      open.openUnsafe()
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          current = undefined
          open.closeUnsafe()
        })
      )
      return yield* readerOf(conn)
    })
    const whenOpen = <A>(f: (w: Socket.Writer) => Effect.Effect<A, Socket.SocketError>): Effect.Effect<A, Socket.SocketError> =>
      Effect.suspend(() => (current === undefined ? open.whenOpen(Effect.suspend(() => whenOpen(f))) : f(writerOf(current))))
    const writer: Socket.Writer = {
      write: (chunk) => whenOpen((w) => w.write(chunk)),
      writeAll: (chunks) => whenOpen((w) => w.writeAll(chunks))
    }
    return Socket.make({ reader, writer: Effect.succeed(writer) })
  })

/**
 * The `Socket` service backed by {@link make}: provide it to
 * `RpcClient.layerProtocolSocket()` (or anything that needs a `Socket`).
 *
 * @example
 * const Protocol = RpcClient.layerProtocolSocket({ retryTransientErrors: true }).pipe(
 *   Layer.provide(SocketAdapter.layer("wss://api.example.com/rpc", { tls: { ca } })),
 *   Layer.provide(RpcSerialization.layerJson)
 * )
 */
export const layer = (url: string | URL, options: Client.ConnectOptions = {}): Layer.Layer<Socket.Socket> =>
  Layer.effect(Socket.Socket, make(url, options))

/**
 * A `SocketServer` fed by a wsreactor route: pass `accept` as the route's
 * connection handler; the server's `run` handler gets each connection as a
 * `Socket` (see {@link fromConnection}). A connection that arrives before
 * `run` has started waits for it. So `RpcServer.layerProtocolSocketServer`
 * serves Effect RPC on a wsreactor route, beside the app's other routes.
 *
 * @example
 * const { server, accept } = yield* SocketAdapter.makeSocketServer()
 * const app = Router.make([Router.ws("/rpc", accept)]) // the rest of the app as usual
 * const Rpc = RpcServer.layer(Api).pipe(
 *   Layer.provide(RpcServer.layerProtocolSocketServer),
 *   Layer.provide(Layer.succeed(SocketServer.SocketServer, server))
 * )
 */
export const makeSocketServer = (
  /** What `server.address` reports (the wsreactor server's listening address, for logs). */
  address: { readonly host: string; readonly port: number } = { host: "127.0.0.1", port: 0 }
): Effect.Effect<{
  readonly server: SocketServer.SocketServer["Service"]
  readonly accept: (conn: Connection) => Effect.Effect<void>
}> =>
  Effect.gen(function*() {
    type Handler = (socket: Socket.Socket) => Effect.Effect<unknown, unknown>
    const running = yield* Deferred.make<Handler>()
    const server = SocketServer.SocketServer.of({
      address: NetAddress.inetAddressFromIpStringUnsafe(address.host, address.port),
      run: <R, E, _>(handler: (socket: Socket.Socket) => Effect.Effect<_, E, R>) =>
        Effect.gen(function*() {
          const context = yield* Effect.context<R>()
          yield* Deferred.succeed(running, (socket) => Effect.provideContext(handler(socket), context))
          return yield* Effect.never
        })
    })
    // The connection lives as long as the handler runs: it ends when the socket's user is done.
    const accept = (conn: Connection) =>
      Effect.flatMap(Deferred.await(running), (handler) => handler(fromConnection(conn))).pipe(
        Effect.exit,
        Effect.flatMap((exit) => (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause) ? Effect.logDebug(exit.cause) : Effect.void))
      )
    return { server, accept }
  })

