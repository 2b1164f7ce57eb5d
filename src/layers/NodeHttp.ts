/**
 * WebSockets on an existing `node:http` (or `node:https`) server: the app keeps
 * its HTTP API and its port, wsreactor takes the upgrade requests. Node's HTTP
 * parser has already read the request head when it emits `'upgrade'`, so the
 * head is written back as bytes (and the bytes the client sent after it, which
 * Node hands over as `head`, follow): the connection then runs exactly the code
 * the TCP and TLS layers run (handshake validation, routing, upgrade
 * middleware, options, heartbeats, graceful shutdown), through `Server.serve`.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import type * as Http from "node:http"
import type * as Net from "node:net"
import type { Duplex } from "node:stream"
import { type Incoming, Transport } from "../services/Transport.ts"
import { fromNetSocket } from "./NodeTcp.ts"

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
  const inner = fromNetSocket(conn)
  const replay = head.length > 0 ? [requestHead(request), head] : [requestHead(request)]
  return {
    get remoteAddress() {
      return inner.remoteAddress
    },
    get remotePort() {
      return inner.remotePort
    },
    listen: (onData, onEnd) => {
      inner.listen(onData, onEnd)
      // Socket 'data' events come from the event loop, after these: the order is the client's.
      for (const chunk of replay) onData(chunk)
    },
    pause: inner.pause,
    resume: inner.resume,
    write: inner.write,
    onDrain: inner.onDrain,
    end: inner.end,
    destroy: inner.destroy
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
