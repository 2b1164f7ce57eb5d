/**
 * A running server: accepts connections from the `Transport`, runs each in
 * the reactor, keeps a registry of open connections (for counts, metrics and
 * shutdown) and shuts down gracefully: stop accepting, close 1001 to every
 * peer, wait for their close frames up to a deadline.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as LogLevel from "effect/LogLevel"
import * as References from "effect/References"
import * as Clock from "effect/Clock"
import * as Fiber from "effect/Fiber"
import * as Cause from "effect/Cause"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import * as CloseCode from "../domain/CloseCode.ts"
import type { CloseInfo } from "./Connection.ts"
import { decode, type DurationOptions, type InvalidOptionsError, type ServerOptions, withMillis } from "./Options.ts"
import * as PerMessageDeflate from "../domain/PerMessageDeflate.ts"
import { CompressingSlots, CompressionLimiter } from "./Compression.ts"
import * as Deadlines from "./Deadlines.ts"
import * as Admission from "./Admission.ts"
import type { App, ConnectionHandle, Hooks } from "./App.ts"
import * as Reactor from "./Reactor.ts"

export type { Accept, App, ConnectionHandle, Hooks, HttpResponse, Peer, Reject, UpgradeDecision } from "./App.ts"
import { Transport } from "./Transport.ts"

/** Live view of the server for health checks and metrics. */
export interface ServerState {
  readonly connections: ReadonlySet<ConnectionHandle>
  readonly startedAt: number
  shuttingDown: boolean
}

export interface ServeOptions extends Partial<ServerOptions>, DurationOptions {
  /** How long shutdown waits for peers to answer close 1001. */
  readonly shutdownTimeoutMs?: number | undefined
  /** Extra lifecycle hooks (metrics). */
  readonly hooks?: Hooks | undefined
  /**
   * permessage-deflate (RFC 7692): `true` for the defaults, or options. Off by default:
   * it costs ~250 KiB of zlib memory per compressing connection (see docs/BENCHMARKS.md).
   */
  readonly perMessageDeflate?: boolean | Partial<PerMessageDeflate.DeflateOptions> | undefined
  /** Receives the live state once the server runs. */
  readonly onState?: ((state: ServerState) => void) | undefined
  /**
   * Connections at once (handshaking or open, from accept to close); one more
   * gets `503` + `Retry-After` before its request is read (see `Admission`).
   * Default 0: no cap but the process's descriptor limit.
   */
  readonly maxConnections?: number | undefined
  /** The `Retry-After` (seconds) of that 503; default 5. */
  readonly retryAfterSeconds?: number | undefined
}

const makeDeflateSupport = (
  setting: boolean | Partial<PerMessageDeflate.DeflateOptions> | undefined,
  hooks: Hooks | undefined
): Effect.Effect<Reactor.DeflateSupport | undefined> => {
  if (setting === undefined || setting === false) return Effect.succeed(undefined)
  const resolved = PerMessageDeflate.resolveDeflateOptions(setting === true ? {} : setting)
  if (resolved._tag === "Error") return Effect.die(resolved.error)
  return Effect.map(
    Layer.build(CompressionLimiter.layer(resolved.options.concurrency, hooks?.onZlibState)).pipe(Effect.scoped),
    (context) => ({
      options: resolved.options,
      limiter: Context.get(context, CompressionLimiter),
      slots: new CompressingSlots(resolved.options.maxCompressingConnections, hooks?.onCompressionDeclined)
    })
  )
}

const logClose = (handle: ConnectionHandle, info: CloseInfo) =>
  Effect.logInfo(
    `close #${handle.info.id} ${handle.info.remoteAddress ?? "?"} code=${info.code} clean=${info.wasClean} by=${info.initiatedBy}`
  )

/**
 * Serve `app` on the `Transport` until interrupted. On interruption: no new
 * connections, close 1001 to every open one, wait up to `shutdownTimeoutMs`.
 * Each connection runs in its own `Scope` (closed when it ends), so the app may
 * need `Scope` and the server does not.
 *
 * @example
 * Server.serve(app, { maxMessageSize: 1 << 20 }).pipe(
 *   Effect.provide(NodeTcp.layer({ port: 8888 })),
 *   NodeRuntime.runMain
 * )
 */
export const serve = <R>(
  app: App<R>,
  serveOptions: ServeOptions = {}
): Effect.Effect<never, InvalidOptionsError, Exclude<R, Scope.Scope> | Transport> =>
  Effect.scoped(Effect.gen(function*() {
    // Every option is checked before anything starts: bad ones fail here, typed (Options.decode).
    const options = yield* decode(serveOptions)
    const { hooks: userHooks, onState, shutdownTimeoutMs = 5_000, perMessageDeflate, maxConnections, retryAfterSeconds } =
      withMillis(serveOptions).input
    const admission = Admission.make(Admission.decodeAdmissionOptions({ maxConnections, retryAfterSeconds }))
    const deflate = yield* makeDeflateSupport(perMessageDeflate, userHooks)
    const deadlines = yield* Deadlines.make
    const transport = yield* Transport
    const connections = new Set<ConnectionHandle>()
    const state: ServerState = { connections, startedAt: Date.now(), shuttingDown: false }
    onState?.(state)
    const services = yield* Effect.context<never>()
    // Per-connection log lines are synchronous and skipped outright below the minimum level:
    // no fiber per line on the accept path.
    const runSync = Effect.runSyncWith(services)
    const logSync = (line: Effect.Effect<void>) => {
      try {
        runSync(line)
      } catch {
        runLogged(line) // a logger that is not synchronous: let it run in its own fiber
      }
    }
    const infoEnabled = LogLevel.isGreaterThanOrEqualTo("Info", Context.get(services, References.MinimumLogLevel))
    const runLogged = Effect.runForkWith(services)
    // Every user hook is passed through; open and close also keep the registry.
    const hooks: Hooks = {
      ...userHooks,
      onOpen: (handle) => {
        connections.add(handle)
        if (infoEnabled) logSync(Effect.logInfo(`open #${handle.info.id} ${handle.info.remoteAddress ?? "?"} ${handle.info.path}`))
        userHooks?.onOpen?.(handle)
        // A connection accepted while shutting down is closed at once.
        if (state.shuttingDown) runLogged(handle.close(CloseCode.GoingAway, "server shutting down"))
      },
      onClose: (handle, info) => {
        connections.delete(handle)
        if (infoEnabled) logSync(logClose(handle, info))
        userHooks?.onClose?.(handle, info)
      }
    }
    yield* Effect.logInfo(`listening on ${transport.address.host}:${transport.address.port}`)
    const run = Reactor.make(app, {
      options,
      hooks,
      deadlines,
      clock: yield* Clock.Clock,
      log: (level, message, detail) => {
        if (level === "Error") runLogged(Effect.logError(message, detail))
        else if (infoEnabled) logSync(Effect.logInfo(message))
      }
    }, deflate, admission)
    // Detached so that shutdown runs *before* the transport interrupts the connection fibers.
    const runFiber = yield* Effect.forkDetach(transport.run(run))
    return yield* Fiber.join(runFiber).pipe(
      Effect.onInterrupt(() =>
        Effect.gen(function*() {
          state.shuttingDown = true
          // Stop listening first: a client that comes now is refused by the kernel, not upgraded then closed 1001.
          if (transport.stopAccepting !== undefined) yield* transport.stopAccepting
          if (connections.size > 0) {
            yield* Effect.logInfo(`shutting down: closing ${connections.size} connection(s) with 1001`)
            const open = [...connections]
            yield* Effect.forEach(open, (handle) => handle.close(CloseCode.GoingAway, "server shutting down"), {
              discard: true
            })
            yield* Effect.forEach(open, (handle) => handle.closed, { concurrency: "unbounded", discard: true }).pipe(
              Effect.timeoutOrElse({ duration: shutdownTimeoutMs, orElse: () => Effect.void })
            )
          }
          yield* Fiber.interrupt(runFiber)
        })
      )
    )
  }))

// ---- Entry points for Effect programs (issue 9, item 4) ----

/**
 * {@link serve} as a Layer, for `Layer.launch` or to merge with an app's other layers. The options
 * are decoded while the layer builds (a bad one fails the build with `InvalidOptionsError`); the
 * server then runs until the layer's scope closes, which shuts it down gracefully.
 *
 * @example
 * Server.layer(app, { maxMessageSize: 1 << 20 }).pipe(
 *   Layer.provide(NodeTcp.layer({ port: 8888 })),
 *   Layer.launch,
 *   NodeRuntime.runMain({ teardown: Server.teardown })
 * )
 */
export const layer = <R>(
  app: App<R>,
  serveOptions: ServeOptions = {}
): Layer.Layer<never, InvalidOptionsError, Exclude<R, Scope.Scope> | Transport> =>
  Layer.effectDiscard(Effect.gen(function*() {
    yield* decode(serveOptions)
    yield* Effect.forkScoped(serve(app, serveOptions))
  }))

/**
 * A `Runtime.Teardown` for `NodeRuntime.runMain`: SIGINT/SIGTERM interrupt the main fiber, and the
 * default teardown reports an interrupted program as exit code 130. A server whose shutdown was only
 * an interruption (it closed every connection with 1001 and waited for them) exits 0 instead; any
 * failure or defect keeps the default (exit 1 and the error reported).
 *
 * @example
 * Server.serve(app).pipe(Effect.provide(NodeTcp.layer({ port: 8888 })), NodeRuntime.runMain({ teardown: Server.teardown }))
 */
export const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)
