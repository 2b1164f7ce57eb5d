/**
 * `/healthz` and `/metrics` for the whole `--workers` cluster, whichever
 * worker takes the request: that worker asks the primary, the primary asks
 * every live worker for its own figures (over the cluster's IPC channel) and
 * hands the answers back, and the worker merges them: Prometheus series of
 * the same name and labels are summed (counters and gauges: connections,
 * messages, bytes), health adds connections up and lists each worker.
 * A worker that does not answer within `timeoutMs` is left out (and counted
 * in `workersAnswering`).
 *
 * @example
 * const app = yield* ClusterStats.aggregate(demoApp, { metrics, state: () => state, broker })
 */
import type { Worker } from "node:cluster"
import * as Effect from "effect/Effect"
import type { Broker, BrokerStatus } from "./services/Broker.ts"
import * as Metrics from "./services/Metrics.ts"
import * as Router from "./services/Router.ts"
import type { App, HttpResponse, ServerState } from "./services/Server.ts"

/** One worker's figures. */
export interface WorkerStats {
  readonly pid: number
  readonly connections: number
  readonly startedAt: number
  readonly shuttingDown: boolean
  readonly broker?: BrokerStatus | undefined
  readonly metrics: string
}

type StatsMessage =
  | { readonly wsreactor: "stats-request"; readonly id: number }
  | { readonly wsreactor: "stats-query"; readonly key: string }
  | { readonly wsreactor: "stats-reply"; readonly key: string; readonly stats: WorkerStats }
  | { readonly wsreactor: "stats-result"; readonly id: number; readonly stats: ReadonlyArray<WorkerStats>; readonly workers: number }

const isStats = (value: unknown): value is StatsMessage =>
  typeof value === "object" && value !== null && typeof (value as { wsreactor?: unknown }).wsreactor === "string" &&
  (value as { wsreactor: string }).wsreactor.startsWith("stats-")

/**
 * Sum Prometheus text expositions: samples with the same name and labels add
 * up; `# HELP`/`# TYPE` lines are kept once; order of first appearance.
 *
 * @example
 * sumPrometheus(["a 1\n", "a 2\n"]) // "a 3\n"
 */
export const sumPrometheus = (texts: ReadonlyArray<string>): string => {
  const lines: Array<string> = []
  const samples = new Map<string, number>()
  const seen = new Set<string>()
  for (const text of texts) {
    for (const line of text.split("\n")) {
      if (line === "") continue
      if (line.startsWith("#")) {
        if (!seen.has(line)) lines.push(line)
        seen.add(line)
        continue
      }
      const space = line.lastIndexOf(" ")
      const series = line.slice(0, space)
      const value = Number(line.slice(space + 1))
      if (space <= 0 || Number.isNaN(value)) continue
      if (!samples.has(series)) lines.push(series)
      samples.set(series, (samples.get(series) ?? 0) + value)
    }
  }
  return lines.map((line) => (line.startsWith("#") ? line : `${line} ${samples.get(line)}`)).join("\n") + "\n"
}

/**
 * The primary's side: answer a worker's request with every live worker's
 * figures. `attach` each forked worker.
 *
 * @example
 * const stats = ClusterStats.makeRelay(() => liveWorkers)
 * cluster.on("fork", stats.attach)
 */
export const makeRelay = (live: () => Iterable<Worker>, timeoutMs = 1_000) => {
  interface Pending {
    readonly requester: Worker
    readonly id: number
    readonly stats: Array<WorkerStats>
    readonly waiting: Set<Worker>
    readonly timer: ReturnType<typeof setTimeout>
    readonly workers: number
  }
  const pending = new Map<string, Pending>()
  let next = 0
  const finish = (key: string) => {
    const p = pending.get(key)
    if (p === undefined) return
    pending.delete(key)
    clearTimeout(p.timer)
    if (p.requester.isConnected()) {
      p.requester.send({ wsreactor: "stats-result", id: p.id, stats: p.stats, workers: p.workers } satisfies StatsMessage)
    }
  }
  const attach = (worker: Worker) => {
    worker.on("message", (message: unknown) => {
      if (!isStats(message)) return
      if (message.wsreactor === "stats-request") {
        const key = String(next++)
        const targets = [...live()].filter((w) => w.isConnected())
        pending.set(key, {
          requester: worker,
          id: message.id,
          stats: [],
          waiting: new Set(targets),
          timer: setTimeout(() => finish(key), timeoutMs),
          workers: targets.length
        })
        for (const target of targets) target.send({ wsreactor: "stats-query", key } satisfies StatsMessage)
        if (targets.length === 0) finish(key)
      } else if (message.wsreactor === "stats-reply") {
        const p = pending.get(message.key)
        if (p === undefined) return
        p.stats.push(message.stats)
        p.waiting.delete(worker)
        if (p.waiting.size === 0) finish(message.key)
      }
    })
    worker.once("exit", () => {
      for (const [key, p] of pending) {
        if (p.waiting.delete(worker) && p.waiting.size === 0) finish(key)
      }
    })
  }
  return { attach }
}

/** What a worker knows about itself. */
export interface LocalStats {
  readonly metrics: Metrics.ServerMetrics
  readonly state: () => ServerState | undefined
  readonly broker: Broker["Service"]
}

/**
 * Wrap `app` so that `GET /healthz` and `GET /metrics` answer for every
 * worker of the cluster; other requests go to `app`. In a process without a
 * primary (no IPC channel) it returns `app` unchanged.
 *
 * @example
 * const app = yield* ClusterStats.aggregate(yield* Demo.make({ metrics, state }), { metrics, state, broker })
 */
export const aggregate = <R>(app: App<R>, local: LocalStats, timeoutMs = 2_000): Effect.Effect<App<R>> =>
  Effect.sync(() => {
    if (process.send === undefined) return app
    const collect: Effect.Effect<WorkerStats> = Effect.map(local.metrics.render, (metrics) => {
      const state = local.state()
      return {
        pid: process.pid,
        connections: state?.connections.size ?? 0,
        startedAt: state?.startedAt ?? Date.now(),
        shuttingDown: state?.shuttingDown === true,
        broker: local.broker.status?.(),
        metrics
      }
    })
    const waiting = new Map<number, (result: { stats: ReadonlyArray<WorkerStats>; workers: number }) => void>()
    let next = 0
    process.on("message", (message: unknown) => {
      if (!isStats(message)) return
      if (message.wsreactor === "stats-query") {
        Effect.runFork(Effect.map(collect, (stats) => {
          if (process.connected) process.send!({ wsreactor: "stats-reply", key: message.key, stats } satisfies StatsMessage)
        }))
      } else if (message.wsreactor === "stats-result") {
        waiting.get(message.id)?.(message)
        waiting.delete(message.id)
      }
    })
    // Every worker's figures, or this worker's alone when the primary does not answer in time.
    const gather = Effect.callback<{ stats: ReadonlyArray<WorkerStats>; workers: number }>((resume) => {
      const id = next++
      waiting.set(id, (result) => resume(Effect.succeed(result)))
      if (process.connected) process.send!({ wsreactor: "stats-request", id } satisfies StatsMessage)
      return Effect.sync(() => waiting.delete(id))
    }).pipe(
      Effect.timeoutOrElse({
        duration: timeoutMs,
        orElse: () => Effect.map(collect, (stats) => ({ stats: [stats], workers: 1 }))
      })
    )
    const health = Effect.map(gather, ({ stats, workers }): HttpResponse => {
      const now = Date.now()
      const shuttingDown = stats.some((s) => s.shuttingDown)
      let connections = 0
      for (const s of stats) connections += s.connections
      return Router.json(
        {
          status: shuttingDown ? "shutting-down" : "ok",
          uptimeSeconds: Math.max(0, Math.floor((now - Math.min(...stats.map((s) => s.startedAt))) / 1000)),
          connections,
          workers,
          workersAnswering: stats.length,
          perWorker: stats.map(({ metrics: _metrics, ...rest }) => rest)
        },
        shuttingDown ? 503 : 200
      )
    })
    const metrics = Effect.map(gather, ({ stats, workers }) =>
      Metrics.response(
        sumPrometheus(stats.map((s) => s.metrics)) +
          `# HELP wsreactor_workers Worker processes answering this scrape (of ${workers} alive)\n` +
          `# TYPE wsreactor_workers gauge\nwsreactor_workers ${stats.length}\n`
      ))
    return {
      http: (request, peer) =>
        request.method === "GET" && request.path === "/healthz"
          ? health
          : request.method === "GET" && request.path === "/metrics"
          ? metrics
          : app.http(request, peer),
      upgrade: app.upgrade
    }
  })
