/**
 * TCP and TLS transports on Node's `net` / `tls` servers. Node's event loop
 * is the epoll reactor of the original design: each accepted socket gets one
 * fiber (the connection's), forked straight from the accept callback, and an
 * `Incoming` whose methods live on a prototype, so an idle connection costs
 * little more than Node's own socket. The listening socket is ours, so the
 * server can stop accepting before a graceful shutdown and hear the accept
 * errors Node reports, logged once per burst and counted in
 * `wsreactor_accept_errors_total`. (At EMFILE libuv itself accepts and closes
 * the waiting connections and reports nothing: a cap below the descriptor
 * limit, `Admission.capForFdLimit`, keeps the server from getting there.)
 *
 * @example
 * const TransportLive = NodeTcp.layer({ port: 8888, host: "0.0.0.0" })
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Scope from "effect/Scope"
import * as SocketServer from "effect/socket/SocketServer"
import * as Net from "node:net"
import type * as Tls from "node:tls"
import { names as metricNames } from "../services/MetricNames.ts"
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

  // Chunks come through the stream's 'data' event: Node allocates each read (up to 64 KiB) and the
  // decoder copies a frame that spans reads into its payload buffer, so a 1 MiB message costs about
  // 2 MiB outside the heap (what drives full GCs). Reading straight into the payload buffer needs
  // the `onread: { buffer, callback }` option, which Node (24) accepts only in the `net.Socket`
  // constructor: `net.createServer`/`tls.createServer` build accepted sockets themselves and
  // pass no `onread`, and wrapping an accepted connection in a new Socket needs its private
  // `_handle`. So this stays on the public stream path (ws's too: it concatenates the chunks).
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

  /** Bytes queued in the socket (Node's stream buffer): the outbox weighs them against its own mark. */
  get writableLength(): number {
    return this.conn.writableLength
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

/** Accept errors end a burst after this long without one; each burst is logged once at its start and summed at its end. */
const acceptErrorBurstMs = 1_000

const acceptErrors = Metric.counter(metricNames.acceptErrors, {
  description: "Failed accept(2) calls (EMFILE/ENFILE at the descriptor limit: the kernel's connection is reset)",
  incremental: true
})

/**
 * Accept errors, logged once per burst: a line when the first one comes, a
 * summary when none came for `quietMs`; every one is counted. At the
 * descriptor limit errors come per connection attempt, and a log line each
 * would add disk I/O to an overloaded server.
 *
 * @example
 * const bursts = acceptErrorBursts({ count: () => {}, log: console.warn })
 * server.on("error", bursts.report)
 */
export const acceptErrorBursts = (options: {
  readonly count: () => void
  readonly log: (line: string) => void
  readonly quietMs?: number | undefined
  readonly now?: (() => number) | undefined
}) => {
  const quietMs = options.quietMs ?? acceptErrorBurstMs
  const now = options.now ?? Date.now
  let burst: { count: number; last: number; code: string; timer: ReturnType<typeof setInterval> } | undefined
  const end = () => {
    if (burst === undefined) return
    clearInterval(burst.timer)
    options.log(`accept errors over: ${burst.count} failed accept(s) (${burst.code}) in that burst`)
    burst = undefined
  }
  return {
    report: (error: NodeJS.ErrnoException) => {
      options.count()
      if (burst !== undefined) {
        burst.count++
        burst.last = now()
        return
      }
      const code = error.code ?? "unknown"
      options.log(`accept failed: ${code} (${error.message}); new connections are reset until it clears`)
      const timer = setInterval(() => {
        if (burst !== undefined && now() - burst.last >= quietMs) end()
      }, quietMs)
      timer.unref()
      burst = { count: 1, last: now(), code, timer }
    },
    /** End the current burst (with its summary), e.g. when the server closes. */
    stop: end
  }
}

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
      conn.on("error", ignoreError)
      conn.pause()
      pending?.push(conn)
    }
    server.on(connectionEvent, (conn: Net.Socket) => onConnection(conn))
    if (connectionEvent === "secureConnection") {
      // A failed TLS handshake (a plain-TCP client, a bad certificate) costs that socket only.
      server.on("tlsClientError", (_error, socket) => socket.destroy())
    }
    const services = yield* Effect.context<never>()
    const onAcceptError = acceptErrorBursts({
      count: () => acceptErrors.updateUnsafe(1, services),
      log: (line) => Effect.runForkWith(services)(Effect.logWarning(line))
    })
    let listening = false
    yield* Effect.callback<void, SocketServer.SocketServerError>((resume) => {
      const onError = (error: unknown) => resume(Effect.fail(openError(error)))
      server.once("error", onError)
      server.listen({ port: options.port, host: options.host, backlog: options.backlog ?? 511 }, () => {
        server.off("error", onError)
        listening = true
        // After listen, 'error' is an accept error (libuv reports it and resets the connection).
        server.on("error", onAcceptError.report)
        resume(Effect.void)
      })
    })
    yield* Effect.addFinalizer(() =>
      Effect.callback<void>((resume) => {
        pending = undefined
        onAcceptError.stop()
        for (const incoming of live) incoming.destroy()
        if (!listening) return resume(Effect.void)
        listening = false
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
        }),
      stopAccepting: Effect.sync(() => {
        // Close the listening socket only: accepted connections live on until the server closes them.
        if (listening) server.close()
        listening = false
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
  // noDelay: Nagle would hold small frames back by up to 40 ms; every WebSocket server disables it.
  // allowHalfOpen: the peer's FIN must not end our side too (Node's default): after it the session
  // may still owe a close frame (RFC 6455 §7.1.7), and it ends TCP itself (as Node's HTTP server does).
  Layer.effect(
    Transport,
    Effect.suspend(() => listen(Net.createServer({ noDelay: true, allowHalfOpen: true }), "connection", options))
  )

const loadTls = (): typeof Tls => process.getBuiltinModule("node:tls")

/**
 * TLS (wss://, https://): connections reach the reactor after the TLS
 * handshake; a client that fails it (plain TCP, a certificate it refuses) is dropped.
 *
 * @example
 * const TransportLive = NodeTcp.layerTls({ port: 8443, key, cert })
 */
export const layerTls = (
  options: ListenOptions & Tls.TlsOptions
): Layer.Layer<Transport, SocketServer.SocketServerError> =>
  Layer.effect(
    Transport,
    Effect.suspend(() =>
      // node:tls is loaded here, not at import: it holds ~1 MB of live heap a plain-TCP server would carry.
      listen(loadTls().createServer({ ...options, noDelay: true, allowHalfOpen: true }), "secureConnection", options)
    )
  )
