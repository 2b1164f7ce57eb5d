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
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import type * as SocketServer from "effect/socket/SocketServer"
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

const port = Flag.Int("port").pipe(
  Flag.withDescription("TCP port to listen on (env PORT; 0 picks a free port)"),
  // Not Config.Port: it rejects 0, which picks a free port.
  Flag.withFallbackConfig(Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })), "PORT")),
  Flag.withDefault(8888)
)
const host = Flag.String("host").pipe(
  Flag.withDescription("Address to bind (env HOST)"),
  Flag.withFallbackConfig(Config.String("HOST")),
  Flag.withDefault("0.0.0.0")
)

const deflate = Flag.Boolean("deflate").pipe(
  Flag.withDescription("Offer permessage-deflate (RFC 7692) compression to clients (env DEFLATE)"),
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

const wsreactor = Command.make("wsreactor", { port, host, deflate, redis, workers }, (flags): Effect.Effect<
  void,
  Cluster.CrashLoopError | Schema.SchemaError | SocketServer.SocketServerError
> => {
  const count = flags.workers === 0 ? availableParallelism() : flags.workers
  // The primary only supervises; every worker runs this same command and serves.
  if (count > 1 && cluster.isPrimary) return Cluster.supervise({ workers: count })
  const broker = Option.match(flags.redis, {
    onNone: () => (cluster.isWorker ? IpcBroker.layer : Broker.layerMemory),
    onSome: (url) => Broker.layerRedis({ url })
  })
  const presence = Option.match(flags.redis, {
    onNone: () => (cluster.isWorker ? IpcPresence.layer : Presence.layerMemory),
    onSome: (url) => RedisPresence.layer({ url })
  })
  return serveDemo(flags.deflate).pipe(
    Effect.provide([broker, presence, NodeTcp.layer({ port: flags.port, host: flags.host })])
  )
}
).pipe(
  Command.withDescription(
    "A WebSocket server (RFC 6455) on Effect: echo on /echo and any other path, a chat on /chat, the demo page on GET /, /healthz and /metrics."
  )
)

// SIGINT/SIGTERM interrupt the main fiber; a shutdown that completed gracefully exits 0, not 130.
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

Command.run(wsreactor, { version: "0.1.0" }).pipe(
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain({ teardown })
)
