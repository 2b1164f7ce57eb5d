/**
 * `npm start`: serve the demo application on port 8888: WebSocket echo on
 * `/echo` and every other path (as the original C reactor did), the chat on
 * `/chat`, the demo page on `GET /`, `/healthz` and `/metrics`. Flags override
 * PORT / HOST / REDIS_URL. `--redis URL` puts the chat's rooms and presence
 * on Redis, so several processes or machines behave as one chat (see
 * docs/DEPLOY.md).
 * `--workers N` (env WORKERS, 0 = one per core) runs N worker processes on
 * one port under a supervising primary (`Cluster.ts`); without `--redis` their
 * topics and presence meet in the primary (`layers/Ipc.ts`, `layers/IpcPresence.ts`).
 */
import cluster from "node:cluster"
import { availableParallelism } from "node:os"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Cluster from "./Cluster.ts"
import * as ClusterStats from "./ClusterStats.ts"
import * as Demo from "./Demo.ts"
import * as IpcBroker from "./layers/Ipc.ts"
import * as IpcPresence from "./layers/IpcPresence.ts"
import * as NodeTcp from "./layers/NodeTcp.ts"
import * as RedisPresence from "./layers/RedisPresence.ts"
import * as Broker from "./services/Broker.ts"
import * as Metrics from "./services/Metrics.ts"
import * as Presence from "./services/Presence.ts"
import * as Server from "./services/Server.ts"

const DEFAULT_PORT = 8888

/** Bad flags or environment, or a port we cannot listen on: one line on stderr and a non-zero exit, no stack. */
class StartupError extends Data.TaggedError("StartupError")<{ readonly message: string; readonly exitCode: number }> {}

// The port is checked here rather than by the flag parser (or a Config fallback), whose errors come
// with the whole help text, a SchemaError dump, or a RangeError stack from net.Server.listen.
const port = Flag.Int("port").pipe(
  Flag.withDescription(`TCP port to listen on (default ${DEFAULT_PORT}, env PORT; 0 picks a free port)`),
  Flag.optional
)
const host = Flag.String("host").pipe(
  Flag.withDescription("Address to bind (default 0.0.0.0, env HOST)"),
  Flag.withFallbackConfig(Config.String("HOST")),
  Flag.withDefault("0.0.0.0")
)

// Not Config.Port: it rejects 0, which picks a free port.
const PortNumber = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 }))

const checkPort = (raw: number | string, source: string): Effect.Effect<number, StartupError> => {
  const value = typeof raw === "number" ? raw : /^\s*\d{1,5}\s*$/.test(raw) ? Number(raw) : Number.NaN
  return Schema.is(PortNumber)(value)
    ? Effect.succeed(value)
    : Effect.fail(
      new StartupError({
        message: `${source} must be an integer from 0 to 65535 (0 picks a free port), got ${JSON.stringify(raw)}`,
        exitCode: 2
      })
    )
}

// net.Server's "listen EADDRINUSE: address already in use 127.0.0.1:8888" and the like.
const why = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/** `--port`, else `PORT`, else the default. */
const resolvePort = (flag: Option.Option<number>): Effect.Effect<number, StartupError> =>
  Option.isSome(flag)
    ? checkPort(flag.value, "--port")
    : Config.option(Config.String("PORT")).pipe(
      Effect.orElseSucceed(() => Option.none<string>()),
      Effect.flatMap((env) => Option.isSome(env) ? checkPort(env.value, "PORT") : Effect.succeed(DEFAULT_PORT))
    )

const deflate = Flag.Boolean("deflate").pipe(
  Flag.withDescription("Offer permessage-deflate (RFC 7692) compression to clients (default off, env DEFLATE)"),
  Flag.withFallbackConfig(Config.Boolean("DEFLATE")),
  Flag.withDefault(false)
)

const redis = Flag.String("redis").pipe(
  Flag.withDescription("Redis URL (redis://host:port) for topics across processes and machines (env REDIS_URL); without it, one process"),
  Flag.withFallbackConfig(Config.String("REDIS_URL")),
  Flag.optional
)

const workers = Flag.Int("workers").pipe(
  Flag.withDescription("Worker processes sharing the port (env WORKERS; 0 = one per core; 1 = no cluster)"),
  Flag.withFallbackConfig(Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 1024 })), "WORKERS")),
  Flag.withDefault(1)
)

const serveDemo = (perMessageDeflate: boolean) => Effect.gen(function*() {
  const metrics = yield* Metrics.make
  let state: Server.ServerState | undefined
  const demo = yield* Demo.make({ metrics, state: () => state, presence: yield* Presence.Presence })
  // In a --workers cluster, /healthz and /metrics answer for every worker.
  const app = cluster.isWorker
    ? yield* ClusterStats.aggregate(demo, { metrics, state: () => state, broker: yield* Broker.Broker })
    : demo
  return yield* Server.serve(app, { hooks: metrics.hooks, onState: (s) => (state = s), perMessageDeflate })
})

const wsreactor = Command.make("wsreactor", { port, host, deflate, redis, workers }, (flags) =>
  Effect.gen(function*() {
    const listenPort = yield* resolvePort(flags.port)
    const count = flags.workers === 0 ? availableParallelism() : flags.workers
    // The primary only supervises; every worker runs this same command and serves.
    if (count > 1 && cluster.isPrimary) return yield* Cluster.supervise({ workers: count })
    const broker = Option.match(flags.redis, {
      onNone: () => (cluster.isWorker ? IpcBroker.layer : Broker.layerMemory),
      onSome: (url) => Broker.layerRedis({ url })
    })
    const presence = Option.match(flags.redis, {
      onNone: () => (cluster.isWorker ? IpcPresence.layer : Presence.layerMemory),
      onSome: (url) => RedisPresence.layer({ url })
    })
    return yield* serveDemo(flags.deflate).pipe(
      Effect.provide([broker, presence, NodeTcp.layer({ port: listenPort, host: flags.host })]),
      Effect.catchTag("SocketServerError", (error) =>
        Effect.fail(
          new StartupError({ message: `cannot listen on ${flags.host}:${listenPort}: ${why(error.reason.cause)}`, exitCode: 1 })
        ))
    )
  })
).pipe(
  Command.withDescription(
    "A WebSocket server (RFC 6455) on Effect: echo on /echo and any other path, a chat on /chat, the demo page on GET /, /healthz and /metrics."
  )
)

Command.run(wsreactor, { version: "0.1.0" }).pipe(
  Effect.catchTag("StartupError", (error) =>
    Effect.sync(() => {
      console.error(`wsreactor: ${error.message}`)
      process.exitCode = error.exitCode
      // A cluster worker's IPC channel keeps its event loop alive: leave, so the primary sees the death.
      if (cluster.isWorker) process.exit(error.exitCode)
    })),
  Effect.provide(NodeServices.layer),
  // SIGINT/SIGTERM interrupt the main fiber; a shutdown that completed gracefully exits 0, not 130.
  NodeRuntime.runMain({ teardown: Server.teardown })
)
