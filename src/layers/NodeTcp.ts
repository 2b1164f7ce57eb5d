/**
 * TCP and TLS transports on `node:net` / `node:tls`. The listening socket is
 * ours (not hidden in a library), so the server can stop accepting before a
 * graceful shutdown and hear the accept errors Node reports, which it logs
 * once per burst and counts in `wsreactor_accept_errors_total`. (At EMFILE
 * libuv itself accepts and closes the waiting connections and reports
 * nothing: a cap below the descriptor limit, `Admission.capForFdLimit`, is
 * what keeps the server from getting there.)
 *
 * @example
 * const TransportLive = NodeTcp.layer({ port: 8888, host: "0.0.0.0" })
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Scope from "effect/Scope"
import * as SocketServer from "effect/socket/SocketServer"
import * as Net from "node:net"
import * as Tls from "node:tls"
import { names as metricNames } from "../services/Metrics.ts"
import { type Incoming, Transport } from "../services/Transport.ts"

/** Where to listen. `port: 0` picks a free port (see `Transport.address`). */
export interface ListenOptions {
  readonly port: number
  readonly host?: string | undefined
  /** Kernel accept queue length (listen(2) backlog). */
  readonly backlog?: number | undefined
}

/** The reactor's view of a Node socket (see `Incoming`). */
export const fromNetSocket = (conn: Net.Socket): Incoming => {
  let ended = false
  return {
    // Getters: each is a getpeername(2) call, only paid when someone asks.
    get remoteAddress() {
      return conn.remoteAddress
    },
    get remotePort() {
      return conn.remotePort
    },
    listen: (onData, onEnd) => {
      const end = () => {
        if (ended) return
        ended = true
        onEnd()
      }
      conn.on("data", onData)
      conn.on("end", end)
      conn.on("error", end)
      conn.on("close", end)
      conn.resume()
    },
    pause: () => conn.pause(),
    resume: () => conn.resume(),
    write: (chunks) => {
      if (conn.destroyed || conn.writableEnded) return true
      if (chunks.length === 1) return conn.write(chunks[0]!)
      // One writev for the batch.
      conn.cork()
      for (let i = 0; i < chunks.length; i++) conn.write(chunks[i]!)
      conn.uncork()
      return !conn.writableNeedDrain
    },
    onDrain: (callback) => {
      if (conn.destroyed || !conn.writableNeedDrain) return void queueMicrotask(callback)
      const done = () => {
        conn.off("drain", done)
        conn.off("close", done)
        callback()
      }
      conn.on("drain", done)
      conn.on("close", done)
    },
    end: () => {
      if (!conn.destroyed) conn.end()
    },
    destroy: () => {
      conn.destroy()
    }
  }
}

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

const makeTransport = (
  createServer: () => Net.Server,
  connectionEvent: "connection" | "secureConnection",
  requested: ListenOptions
): Effect.Effect<Transport["Service"], SocketServer.SocketServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const services = yield* Effect.context<never>()
    const runSide = Effect.runForkWith(services)
    // Connections that arrive before `run` (or between two runs) wait here, paused.
    const waiting = new Set<Net.Socket>()
    let onConnection = (socket: Net.Socket) => void waiting.add(socket)
    let listening = false

    const onAcceptError = acceptErrorBursts({
      count: () => acceptErrors.updateUnsafe(1, services),
      log: (line) => runSide(Effect.logWarning(line))
    })
    const server = createServer()
    server.on(connectionEvent, (socket: Net.Socket) => {
      // Until the reactor listens, an error must not reach the process as an unhandled 'error'.
      socket.on("error", () => {})
      socket.pause()
      onConnection(socket)
    })
    if (server instanceof Tls.Server) {
      // A failed TLS handshake (a plain-TCP client, a bad certificate) costs that socket only.
      server.on("tlsClientError", (_error, socket) => socket.destroy())
    }
    yield* Effect.acquireRelease(
      Effect.callback<void, SocketServer.SocketServerError>((resume) => {
        const onListenError = (cause: Error) =>
          resume(Effect.fail(new SocketServer.SocketServerError({ reason: new SocketServer.SocketServerOpenError({ cause }) })))
        server.once("error", onListenError)
        server.listen({ port: requested.port, host: requested.host, backlog: requested.backlog ?? 511 }, () => {
          server.off("error", onListenError)
          listening = true
          // After listen, 'error' is an accept error (libuv reports it and resets the connection).
          server.on("error", onAcceptError.report)
          resume(Effect.void)
        })
      }),
      () =>
        Effect.sync(() => {
          if (listening) server.close()
          listening = false
          onAcceptError.stop()
          for (const socket of waiting) socket.destroy()
          waiting.clear()
        })
    )
    const bound = server.address()
    const address = typeof bound === "object" && bound !== null
      ? { host: bound.address, port: bound.port }
      : { host: requested.host ?? "0.0.0.0", port: requested.port }

    return Transport.of({
      address,
      run: <E, R>(handler: (incoming: Incoming) => Effect.Effect<void, E, R>) =>
        Effect.gen(function*() {
          const scope = yield* Scope.make()
          const context = Context.omit(Scope.Scope)(yield* Effect.context<R>()) as Context.Context<R>
          const track = Fiber.runIn(scope)
          const previous = onConnection
          onConnection = (socket) => {
            const fiber = Effect.runForkWith(context)(
              handler(fromNetSocket(socket)).pipe(
                Effect.ignoreCause({ log: "Error", message: "connection handler failed" }),
                Effect.ensuring(Effect.sync(() => socket.destroy()))
              )
            )
            track(fiber)
          }
          for (const socket of waiting) onConnection(socket)
          waiting.clear()
          return yield* Effect.never.pipe(
            Effect.ensuring(Effect.suspend(() => {
              onConnection = previous
              return Scope.close(scope, Exit.void)
            }))
          )
        }),
      stopAccepting: Effect.sync(() => {
        // Close the listening socket only: accepted connections live on until the server closes them.
        if (listening) server.close()
        listening = false
      })
    })
  })

/**
 * Plain TCP.
 *
 * @example
 * const TransportLive = NodeTcp.layer({ port: 8888, host: "0.0.0.0" })
 */
export const layer = (options: ListenOptions): Layer.Layer<Transport, SocketServer.SocketServerError> =>
  // noDelay: Nagle would hold small frames back by up to 40 ms; every WebSocket server disables it.
  Layer.effect(Transport, makeTransport(() => Net.createServer({ noDelay: true }), "connection", options))

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
    makeTransport(() => Tls.createServer({ ...options, noDelay: true }), "secureConnection", options)
  )
