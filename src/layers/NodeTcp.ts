/**
 * TCP and TLS transports on Node's `net` / `tls` servers. Node's event loop
 * is the epoll reactor of the original design: each accepted socket gets one
 * fiber (the connection's), forked straight from the accept callback, and an
 * `Incoming` whose methods live on a prototype, so an idle connection costs
 * little more than Node's own socket.
 *
 * @example
 * const TransportLive = NodeTcp.layer({ port: 8888, host: "0.0.0.0" })
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as SocketServer from "effect/socket/SocketServer"
import * as Net from "node:net"
import * as Tls from "node:tls"
import { type Incoming, Transport } from "../services/Transport.ts"

/** Where to listen. `port: 0` picks a free port (see `Transport.address`). */
export interface ListenOptions {
  readonly port: number
  readonly host?: string | undefined
  /** Kernel accept queue length (listen(2) backlog). */
  readonly backlog?: number | undefined
}

// Errors on an accepted socket are followed by "close" (autoDestroy), which ends it; without
// a listener an "error" event would throw.
const ignoreError = () => {}

/** The reactor's view of a Node socket (see `Incoming`). */
export class NodeIncoming implements Incoming {
  readonly conn: Net.Socket
  /** The connection's fiber, once forked (so the server can stop it). */
  fiber: Fiber.Fiber<unknown, unknown> | undefined = undefined
  private ended = false
  /** The server's set of live connections, left in `destroy` (the reactor always calls it). */
  private readonly live: Set<NodeIncoming> | undefined

  constructor(conn: Net.Socket, live?: Set<NodeIncoming>) {
    this.conn = conn
    this.live = live
    live?.add(this)
    conn.on("error", ignoreError)
  }

  // Getters: each is a getpeername(2) call, only paid when someone asks.
  get remoteAddress(): string | undefined {
    return this.conn.remoteAddress
  }

  get remotePort(): number | undefined {
    return this.conn.remotePort
  }

  listen(onData: (chunk: Uint8Array) => void, onEnd: () => void): void {
    const end = () => {
      if (this.ended) return
      this.ended = true
      onEnd()
    }
    this.conn.on("data", onData)
    this.conn.on("end", end)
    this.conn.on("close", end)
    this.conn.resume()
  }

  pause(): void {
    this.conn.pause()
  }

  resume(): void {
    this.conn.resume()
  }

  write(chunks: ReadonlyArray<Uint8Array>): boolean {
    const conn = this.conn
    if (conn.destroyed || conn.writableEnded) return true
    if (chunks.length === 1) return conn.write(chunks[0]!)
    // One writev for the batch.
    conn.cork()
    for (let i = 0; i < chunks.length; i++) conn.write(chunks[i]!)
    conn.uncork()
    return !conn.writableNeedDrain
  }

  onDrain(callback: () => void): void {
    const conn = this.conn
    if (conn.destroyed || !conn.writableNeedDrain) return void queueMicrotask(callback)
    const done = () => {
      conn.off("drain", done)
      conn.off("close", done)
      callback()
    }
    conn.on("drain", done)
    conn.on("close", done)
  }

  end(): void {
    if (!this.conn.destroyed) this.conn.end()
  }

  destroy(): void {
    this.live?.delete(this)
    this.conn.destroy()
  }
}

/** The reactor's view of a Node socket (see `Incoming`). */
export const fromNetSocket = (conn: Net.Socket): Incoming => new NodeIncoming(conn)

const openError = (cause: unknown) =>
  new SocketServer.SocketServerError({ reason: new SocketServer.SocketServerOpenError({ cause }) })

/**
 * Listen on `server`, and serve each connection (after `connectionEvent`) in
 * its own fiber. Closing the scope stops listening and interrupts every
 * connection fiber still running.
 */
const listen = (
  server: Net.Server,
  connectionEvent: "connection" | "secureConnection",
  options: ListenOptions
): Effect.Effect<Transport["Service"], SocketServer.SocketServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const live = new Set<NodeIncoming>()
    // Accepted before `run` started: paused, served once it does.
    let pending: Array<Net.Socket> | undefined = []
    let onConnection = (conn: Net.Socket) => {
      conn.pause()
      pending?.push(conn)
    }
    server.on(connectionEvent, (conn: Net.Socket) => onConnection(conn))
    yield* Effect.callback<void, SocketServer.SocketServerError>((resume) => {
      const onError = (error: unknown) => resume(Effect.fail(openError(error)))
      server.once("error", onError)
      server.listen({ port: options.port, host: options.host, backlog: options.backlog ?? 511 }, () => {
        server.off("error", onError)
        resume(Effect.void)
      })
    })
    // After listening, an accept error (EMFILE) is reported here; the server keeps listening.
    const services = yield* Effect.context<never>()
    server.on("error", (error) => {
      Effect.runForkWith(services)(Effect.logWarning("accept failed", error))
    })
    yield* Effect.addFinalizer(() =>
      Effect.callback<void>((resume) => {
        pending = undefined
        for (const incoming of live) incoming.destroy()
        server.close(() => resume(Effect.void))
      })
    )
    const address = server.address()
    const bound = address !== null && typeof address === "object"
      ? { host: address.address, port: address.port }
      : { host: options.host ?? "0.0.0.0", port: options.port }

    return Transport.of({
      address: bound,
      run: <E, R>(handler: (incoming: Incoming) => Effect.Effect<void, E, R>) =>
        Effect.gen(function*() {
          const context = Context.omit(Scope.Scope)(yield* Effect.context<R>()) as Context.Context<R>
          const fork = Effect.runForkWith(context)
          const serve = (conn: Net.Socket) => {
            // Nagle would hold small frames back by up to 40 ms; every WebSocket server disables it.
            conn.setNoDelay(true)
            const incoming = new NodeIncoming(conn, live)
            // Nothing observes a connection fiber's exit (a failure is the reactor's to log), so no
            // catch-all wrapper is kept on each idle connection's stack.
            incoming.fiber = fork(handler(incoming))
          }
          onConnection = serve
          const waiting = pending ?? []
          pending = undefined
          for (const conn of waiting) serve(conn)
          return yield* Effect.never.pipe(
            Effect.onInterrupt(() =>
              Effect.suspend(() => {
                onConnection = (conn) => conn.destroy()
                const fibers: Array<Fiber.Fiber<unknown, unknown>> = []
                for (const incoming of live) if (incoming.fiber !== undefined) fibers.push(incoming.fiber)
                for (const fiber of fibers) fiber.interruptUnsafe()
                return Effect.forEach(fibers, (fiber) => Effect.exit(fiberAwait(fiber)), { discard: true })
              })
            )
          )
        })
    })
  })

const fiberAwait = (fiber: Fiber.Fiber<unknown, unknown>): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    fiber.addObserver(() => resume(Effect.void))
  })

/**
 * Plain TCP.
 *
 * @example
 * const TransportLive = NodeTcp.layer({ port: 8888, host: "0.0.0.0" })
 */
export const layer = (options: ListenOptions): Layer.Layer<Transport, SocketServer.SocketServerError> =>
  Layer.effect(Transport, Effect.suspend(() => listen(Net.createServer(), "connection", options)))

/**
 * TLS (wss://): connections reach the reactor after the TLS handshake.
 *
 * @example
 * const TransportLive = NodeTcp.layerTls({ port: 8443, key, cert })
 */
export const layerTls = (
  options: ListenOptions & Tls.TlsOptions
): Layer.Layer<Transport, SocketServer.SocketServerError> =>
  Layer.effect(Transport, Effect.suspend(() => listen(Tls.createServer(options), "secureConnection", options)))
