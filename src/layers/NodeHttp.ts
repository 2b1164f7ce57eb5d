/**
 * WebSockets on an existing `node:http` (or `node:https`) server: the app keeps
 * its HTTP API and its port, wsreactor takes the upgrade requests. Node's HTTP
 * parser has already read the request head when it emits `'upgrade'`, so the
 * head is written back as bytes (and the bytes the client sent after it, which
 * Node hands over as `head`, follow): the connection then runs exactly the code
 * the TCP and TLS layers run (handshake validation, routing, upgrade
 * middleware, options, heartbeats, graceful shutdown), through `Server.serve`.
 *
 * Two ways in: {@link layer} listens to a plain `node:http` server's
 * `'upgrade'` event; {@link layerRoutes} + {@link route} put WebSocket routes
 * into an `effect/http` `HttpRouter` app served by `NodeHttpServer`.
 */
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import type * as Http from "node:http"
import type * as Http2 from "node:http2"
import type * as Net from "node:net"
import type { Duplex } from "node:stream"
import { type Incoming, Transport } from "../services/Transport.ts"
import { NodeIncoming } from "./NodeTcp.ts"

/** Which server to attach to, and which of its upgrade requests are wsreactor's. */
export interface UpgradeOptions {
  /**
   * Take only the upgrade requests this returns true for (default: all of them); the others are left to
   * the server's other `'upgrade'` listeners (with none, such a socket stays open until the client leaves).
   */
  readonly filter?: ((request: Http.IncomingMessage) => boolean) | undefined
}

/**
 * The request head as the client sent it (request line, headers in their order and case, blank line):
 * Node parsed it already; the reactor's own parser reads it again so every check runs as on TCP.
 * Latin-1, as HTTP/1.1 header bytes are (RFC 9110 §5.5), so the bytes round-trip.
 *
 * @example
 * requestHead(request) // "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n...\r\n\r\n" as bytes
 */
export const requestHead = (request: Http.IncomingMessage): Uint8Array => {
  let head = `${request.method ?? "GET"} ${request.url ?? "/"} HTTP/${request.httpVersion}\r\n`
  const raw = request.rawHeaders
  for (let i = 0; i + 1 < raw.length; i += 2) head += `${raw[i]}: ${raw[i + 1]}\r\n`
  return Buffer.from(`${head}\r\n`, "latin1")
}

/**
 * The reactor's view of an upgraded connection (arguments of the server's `'upgrade'` event): the
 * request head and `head` are delivered first, then the socket's own bytes.
 *
 * @example
 * server.on("upgrade", (request, socket, head) => { const incoming = fromUpgrade(request, socket, head) })
 */
export const fromUpgrade = (request: Http.IncomingMessage, socket: Duplex, head: Uint8Array): Incoming => {
  const conn = socket as Net.Socket // node:http and node:https hand over their net.Socket / tls.TLSSocket
  // Node sets the socket to not flowing before it emits 'upgrade', so nothing is lost before `listen`;
  // pausing makes that explicit until the reactor starts reading.
  conn.pause()
  if (typeof conn.setNoDelay === "function") conn.setNoDelay(true)
  return new UpgradedIncoming(conn, head.length > 0 ? [requestHead(request), head] : [requestHead(request)])
}

/** A Node socket whose first bytes are the ones Node's HTTP parser already read (the head, then `head`). */
class UpgradedIncoming extends NodeIncoming {
  private replay: ReadonlyArray<Uint8Array> | undefined

  constructor(conn: Net.Socket, replay: ReadonlyArray<Uint8Array>) {
    super(conn)
    this.replay = replay
  }

  override listen(onData: (chunk: Uint8Array) => void, onEnd: () => void): void {
    super.listen(onData, onEnd)
    const replay = this.replay ?? []
    this.replay = undefined
    // Socket 'data' events come from the event loop, after these: the order is the client's.
    for (const chunk of replay) onData(chunk)
  }
}

/**
 * A `Transport` on `server`'s `'upgrade'` event: `Server.serve(app, options)` on it serves the app's
 * WebSocket routes on the server's port, while its `'request'` listener keeps answering plain HTTP.
 * The server is the caller's: this layer never listens or closes it. Interrupting `Server.serve`
 * stops taking upgrades and closes the WebSocket connections with 1001, as on TCP.
 * `address` is the server's once it listens (port 0 before).
 *
 * @example
 * const server = http.createServer(api)
 * server.listen(8080)
 * Server.serve(app).pipe(Effect.provide(NodeHttp.layer(server)), NodeRuntime.runMain({ teardown: Server.teardown }))
 */
export const layer = (server: Http.Server, options: UpgradeOptions = {}): Layer.Layer<Transport> =>
  Layer.succeed(
    Transport,
    Transport.of({
      get address() {
        const address = server.address()
        return address !== null && typeof address === "object"
          ? { host: address.address, port: address.port }
          : { host: "0.0.0.0", port: 0 }
      },
      run: <E, R>(handler: (incoming: Incoming) => Effect.Effect<void, E, R>): Effect.Effect<never, never, R> =>
        Effect.gen(function*() {
          const runFork = Effect.runForkWith(yield* Effect.context<R>())
          const fibers = new Set<Fiber.Fiber<void>>()
          const onUpgrade = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
            if (options.filter !== undefined && !options.filter(request)) return
            const fiber = runFork(Effect.ignoreCause(handler(fromUpgrade(request, socket, head))))
            fibers.add(fiber)
            fiber.addObserver(() => fibers.delete(fiber))
          }
          server.on("upgrade", onUpgrade)
          return yield* Effect.never.pipe(
            Effect.ensuring(Effect.suspend(() => {
              server.off("upgrade", onUpgrade)
              return Fiber.interruptAll([...fibers])
            }))
          )
        })
    })
  )

// ---------------------------------------------------------------------------
// effect/http: an HttpRouter route that hands its upgrade to wsreactor
// ---------------------------------------------------------------------------

/** Where {@link route} hands upgraded connections: the `Transport` of {@link layerRoutes}. */
export class Upgrades extends Context.Service<Upgrades, {
  /** Run `incoming` on the server; completes when the connection has ended. */
  readonly accept: (incoming: Incoming) => Effect.Effect<void>
}>()("wsreactor/NodeHttp/Upgrades") {}

/**
 * A `Transport` fed by {@link route}s of an `effect/http` app (with `Upgrades` for them). Serve the
 * wsreactor app on it with `Server.serve`; `address` is `host`/`port` as given (the HttpServer listens).
 *
 * @example
 * const Ws = Layer.effectDiscard(Effect.forkScoped(Server.serve(app))).pipe(Layer.provideMerge(NodeHttp.layerRoutes()))
 */
export const layerRoutes = (
  address: { readonly host: string; readonly port: number } = { host: "0.0.0.0", port: 0 }
): Layer.Layer<Transport | Upgrades> =>
  Layer.effectContext(Effect.gen(function*() {
    const pending = yield* Queue.unbounded<{ readonly incoming: Incoming; readonly done: Deferred.Deferred<void> }>()
    const transport = Transport.of({
      address,
      run: <E, R>(handler: (incoming: Incoming) => Effect.Effect<void, E, R>): Effect.Effect<never, never, R> =>
        Effect.gen(function*() {
          const scope = yield* Scope.make()
          return yield* Effect.forever(
            Effect.flatMap(Queue.take(pending), ({ incoming, done }) =>
              Effect.forkIn(
                Effect.ignoreCause(handler(incoming)).pipe(Effect.ensuring(Deferred.succeed(done, undefined))),
                scope
              ))
          ).pipe(Effect.ensuring(Scope.close(scope, Exit.void)))
        })
    })
    const upgrades = Upgrades.of({
      accept: (incoming) =>
        Effect.gen(function*() {
          const done = yield* Deferred.make<void>()
          yield* Queue.offer(pending, { incoming, done })
          yield* Deferred.await(done)
        })
    })
    return Context.make(Transport, transport).pipe(Context.add(Upgrades, upgrades))
  }))

const isHttp1 = (request: Http.IncomingMessage | Http2.Http2ServerRequest): request is Http.IncomingMessage =>
  request.httpVersionMajor === 1

/**
 * The handler of an `HttpRouter` route whose WebSocket upgrades wsreactor serves: the request's
 * socket goes to the wsreactor server of {@link layerRoutes}, which answers the handshake itself
 * (its `Router` then routes by path, so give the route the same paths). It completes when the
 * connection ends; the socket is wsreactor's by then, so its response is never written.
 * A request without `Upgrade` gets 426 (RFC 9110 §15.5.22). The bytes a client sends after its
 * request but before the 101 are not seen (NodeHttpServer keeps them); RFC 6455 §4.1 forbids that.
 *
 * @example
 * HttpRouter.add("GET", "/chat/*", NodeHttp.upgrade(upgrades))
 */
export const upgrade = (
  upgrades: Upgrades["Service"]
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest> =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const node = NodeHttpServerRequest.toIncomingMessage(request)
    // HTTP/2 requests have no upgrade (RFC 9113 §8.6); neither has an HTTP/1.1 request without the header.
    if (!isHttp1(node) || node.headers.upgrade === undefined) {
      return HttpServerResponse.text("Upgrade Required: this path speaks WebSocket\n", {
        status: 426,
        headers: { upgrade: "websocket", connection: "Upgrade" }
      })
    }
    yield* upgrades.accept(fromUpgrade(node, node.socket, new Uint8Array(0)))
    return HttpServerResponse.empty()
  })

/**
 * A route layer for `HttpRouter.serve`: `GET path` upgrades through {@link upgrade} (needs
 * {@link layerRoutes}).
 *
 * @example
 * HttpRouter.serve(Layer.mergeAll(ApiRoutes, NodeHttp.route("/chat/*")))
 */
export const route = (path: HttpRouter.PathInput): Layer.Layer<never, never, HttpRouter.HttpRouter | Upgrades> =>
  HttpRouter.use((router) => Effect.flatMap(Effect.service(Upgrades), (upgrades) => router.add("GET", path, upgrade(upgrades))))
