/**
 * `npm start -- --workers N`: the primary process of a Node `cluster`. It
 * forks N workers that run the same program (same argv) and share the
 * listening port (Node's round-robin: the primary accepts and hands each
 * connection to the next worker), relays topics between them
 * (`layers/Ipc.ts`), chat presence (`layers/IpcPresence.ts`) and
 * `/healthz`/`/metrics` figures (`ClusterStats.ts`),
 * and supervises them:
 * - a worker that dies is restarted after a backoff (`restartMinMs`, doubling
 *   with every death in the window, up to `restartMaxMs`); only its own
 *   clients are lost;
 * - `maxDeaths` deaths within `windowMs` is a crash loop: the primary stops
 *   the other workers and fails loudly with {@link CrashLoopError} (exit 1),
 *   rather than restarting forever;
 * - interrupting the supervisor (SIGINT/SIGTERM under `NodeRuntime.runMain`)
 *   forwards SIGTERM to every worker, each of which shuts down gracefully
 *   (close 1001 to its clients); after `shutdownTimeoutMs` the stragglers get
 *   SIGKILL. The primary returns once every worker has exited.
 *
 * @example
 * if (cluster.isPrimary) yield* Cluster.supervise({ workers: os.availableParallelism() })
 * else yield* serveTheApp
 */
import cluster, { type Worker } from "node:cluster"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as ClusterStats from "./ClusterStats.ts"
import * as IpcBroker from "./layers/Ipc.ts"
import * as IpcPresence from "./layers/IpcPresence.ts"

/** The workers died too often: the primary gave up. */
export class CrashLoopError extends Data.TaggedError("CrashLoopError")<{
  readonly deaths: number
  readonly windowMs: number
  readonly last: string
}> {
  override get message(): string {
    return `crash loop: ${this.deaths} worker deaths within ${this.windowMs} ms (last: ${this.last}); giving up`
  }
}

/**
 * Supervisor options; only `workers` is required.
 *
 * @example
 * Cluster.supervise({ workers: 4, restartMaxMs: 10_000 })
 */
export const SuperviseOptions = Schema.Struct({
  workers: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 1024 })),
  restartMinMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 600_000 })),
  restartMaxMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 600_000 })),
  /** Deaths within `windowMs` that count as a crash loop (default: 5, or 2 per worker if more). */
  maxDeaths: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 100_000 }))),
  windowMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 86_400_000 })),
  shutdownTimeoutMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 600_000 }))
})
export type SuperviseOptions = { readonly workers: number } & Partial<typeof SuperviseOptions.Type>

const defaults = { restartMinMs: 100, restartMaxMs: 5_000, windowMs: 30_000, shutdownTimeoutMs: 10_000 }

const describeExit = (worker: Worker, code: number | null, signal: string | null) =>
  `worker ${worker.id} (pid ${worker.process.pid}) ${signal !== null ? `killed by ${signal}` : `exited with code ${code}`}`

/**
 * Fork and supervise the workers until interrupted (then stop them all) or a
 * crash loop (then fail). Call it in the primary only.
 *
 * @example
 * Cluster.supervise({ workers: 2 }).pipe(NodeRuntime.runMain)
 */
export const supervise = (input: SuperviseOptions): Effect.Effect<void, CrashLoopError | Schema.SchemaError> =>
  Effect.gen(function*() {
    const options = yield* Schema.decodeUnknownEffect(SuperviseOptions)({ ...defaults, ...input })
    const maxDeaths = options.maxDeaths ?? Math.max(5, 2 * options.workers)
    const runSync = Effect.runSyncWith(yield* Effect.context<never>())
    const log = (level: "info" | "warn" | "error", text: string) =>
      runSync(level === "info" ? Effect.logInfo(text) : level === "warn" ? Effect.logWarning(text) : Effect.logError(text))

    // Bytes cross the IPC channel as bytes (structured clone), not as JSON arrays.
    cluster.setupPrimary({ serialization: "advanced" })
    const relay = IpcBroker.makeRelay()
    const live = new Set<Worker>()
    const stats = ClusterStats.makeRelay(() => live)
    const presence = IpcPresence.makeRelay(() => live)
    const timers = new Set<ReturnType<typeof setTimeout>>()
    let deaths: Array<number> = []
    let stopping = false

    yield* Effect.callback<void, CrashLoopError>((resume) => {
      let failure: CrashLoopError | undefined
      const finishIfDone = () => {
        if (stopping && live.size === 0) resume(failure === undefined ? Effect.void : Effect.fail(failure))
      }
      const fork = () => {
        const worker = cluster.fork()
        live.add(worker)
        relay.attach(worker)
        stats.attach(worker)
        presence.attach(worker)
        worker.once("online", () => log("info", `worker ${worker.id} online (pid ${worker.process.pid})`))
        worker.once("exit", (code, signal) => {
          live.delete(worker)
          const what = describeExit(worker, code, signal)
          if (stopping) {
            log(code === 0 ? "info" : "warn", what)
            return finishIfDone()
          }
          const now = Date.now()
          deaths = [...deaths.filter((t) => now - t < options.windowMs), now]
          if (deaths.length >= maxDeaths) {
            failure = new CrashLoopError({ deaths: deaths.length, windowMs: options.windowMs, last: what })
            log("error", failure.message)
            stopAll()
            return finishIfDone()
          }
          const delay = Math.min(options.restartMinMs * 2 ** (deaths.length - 1), options.restartMaxMs)
          log("warn", `${what}; restarting it in ${delay} ms`)
          const timer = setTimeout(() => {
            timers.delete(timer)
            if (!stopping) fork()
          }, delay)
          timers.add(timer)
        })
      }
      const stopAll = () => {
        stopping = true
        for (const timer of timers) clearTimeout(timer)
        timers.clear()
        for (const worker of live) worker.process.kill("SIGTERM")
      }
      log("info", `cluster: starting ${options.workers} workers (pid ${process.pid} is the primary)`)
      for (let i = 0; i < options.workers; i++) fork()

      // Interrupted (SIGINT/SIGTERM): forward SIGTERM, wait for every worker, SIGKILL the late ones.
      return Effect.callback<void>((done) => {
        if (!stopping) log("info", `cluster: stopping ${live.size} workers`)
        stopAll()
        if (live.size === 0) return done(Effect.void)
        const kill = setTimeout(() => {
          for (const worker of live) worker.process.kill("SIGKILL")
        }, options.shutdownTimeoutMs)
        const check = () => {
          if (live.size > 0) return
          clearTimeout(kill)
          done(Effect.void)
        }
        for (const worker of live) worker.once("exit", () => queueMicrotask(check))
      })
    })
  })
