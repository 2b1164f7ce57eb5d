/**
 * `npm start`: serve the demo application on port 8888: WebSocket echo on
 * `/echo` and every other path (as the original C reactor did), the chat on
 * `/chat`, the demo page on `GET /`, `/healthz` and `/metrics`. Flags override
 * their environment variables (PORT, HOST, REDIS_URL, WORKERS, TLS_CERT,
 * TLS_KEY, ALLOW_ORIGIN, ...). With `--tls-cert` and `--tls-key` the same
 * port speaks `wss://` and `https://`. Defaults that bound a hostile client
 * are listed in docs/SECURITY.md. `--redis URL` puts the chat's rooms and presence
 * on Redis, so several processes or machines behave as one chat (see
 * docs/DEPLOY.md).
 * `--workers N` (env WORKERS, 0 = one per core) runs N worker processes on
 * one port under a supervising primary (`Cluster.ts`); without `--redis` their
 * topics and presence meet in the primary (`layers/Ipc.ts`, `layers/IpcPresence.ts`).
 */
import cluster from "node:cluster"
import { readFileSync } from "node:fs"
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
import * as Admission from "./services/Admission.ts"
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

const count = (name: string, env: string, description: string, fallback: number) =>
  Flag.Int(name).pipe(
    Flag.withDescription(`${description} (env ${env})`),
    Flag.withFallbackConfig(Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 10_000_000 })), env)),
    Flag.withDefault(fallback)
  )
const maxConnections = Flag.Int("max-connections").pipe(
  Flag.withDescription(
    "Connections at once; more get 503 + Retry-After before the handshake (0 = no cap; default: what the open-files limit allows, at most 10000) (env MAX_CONNECTIONS)"
  ),
  Flag.withFallbackConfig(Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 10_000_000 })), "MAX_CONNECTIONS")),
  Flag.optional
)
const maxConnectionsPerIp = count(
  "max-connections-per-ip",
  "MAX_CONNECTIONS_PER_IP",
  "Open WebSocket connections per client address; more get 429 (0 = no limit)",
  256
)
const maxRoomMembers = count("max-room-members", "MAX_ROOM_MEMBERS", "Chat members per room (at least 1)", 1000)
const maxRooms = count("max-rooms", "MAX_ROOMS", "Chat rooms with members at once (at least 1)", 1000)

// A chat cap of 0 would refuse every member or room: refused, not quietly raised to 1. The value may
// come from the flag or its environment variable, so the message names both.
const checkAtLeastOne = (value: number, flag: string, env: string): Effect.Effect<number, StartupError> =>
  Number.isInteger(value) && value >= 1 && value <= 10_000_000
    ? Effect.succeed(value)
    : Effect.fail(
      new StartupError({ message: `${flag} (env ${env}) must be an integer from 1 to 10000000, got ${value}`, exitCode: 2 })
    )

const allowOrigin = Flag.String("allow-origin").pipe(
  Flag.withDescription(
    "An origin besides the page's own allowed to open /chat from a browser, e.g. https://app.example (repeatable; env ALLOW_ORIGIN, comma-separated)"
  ),
  Flag.atLeast(0)
)

const tlsCert = Flag.String("tls-cert").pipe(
  Flag.withDescription("PEM certificate (chain) file: serve wss:// and https:// (env TLS_CERT; needs --tls-key)"),
  Flag.withFallbackConfig(Config.String("TLS_CERT")),
  Flag.optional
)
const tlsKey = Flag.String("tls-key").pipe(
  Flag.withDescription("PEM private key file for --tls-cert (env TLS_KEY)"),
  Flag.withFallbackConfig(Config.String("TLS_KEY")),
  Flag.optional
)

// An origin as a browser sends it: scheme, host and port only.
const parseOrigin = (value: string): Effect.Effect<string, StartupError> =>
  Effect.try({
    try: () => {
      const url = new URL(value)
      if ((url.protocol !== "http:" && url.protocol !== "https:") || url.origin !== value.replace(/\/$/, "")) throw new Error()
      return url.origin
    },
    catch: () => new StartupError({ message: `--allow-origin ${value}: expected an origin like https://app.example`, exitCode: 2 })
  })

const readPem = (flag: string, path: string) =>
  Effect.try({
    try: () => readFileSync(path),
    catch: (error) => new StartupError({ message: `${flag} ${path}: ${(error as Error).message}`, exitCode: 1 })
  })

interface DemoFlags {
  readonly deflate: boolean
  readonly allowOrigins: ReadonlyArray<string>
  readonly connectionCap: number
  readonly maxConnectionsPerIp: number
  readonly maxRoomMembers: number
  readonly maxRooms: number
}

const serveDemo = (flags: DemoFlags) => Effect.gen(function*() {
  const metrics = yield* Metrics.make
  let state: Server.ServerState | undefined
  const demo = yield* Demo.make({
    metrics,
    state: () => state,
    presence: yield* Presence.Presence,
    allowOrigins: flags.allowOrigins,
    maxConnectionsPerIp: flags.maxConnectionsPerIp,
    chatLimits: { maxMembersPerRoom: flags.maxRoomMembers, maxRooms: flags.maxRooms }
  })
  // In a --workers cluster, /healthz and /metrics answer for every worker.
  const app = cluster.isWorker
    ? yield* ClusterStats.aggregate(demo, { metrics, state: () => state, broker: yield* Broker.Broker })
    : demo
  return yield* Server.serve(app, {
    hooks: metrics.hooks,
    onState: (s) => (state = s),
    perMessageDeflate: flags.deflate,
    maxConnections: flags.connectionCap
  })
})

const flags = {
  port,
  host,
  deflate,
  redis,
  workers,
  allowOrigin,
  maxConnections,
  maxConnectionsPerIp,
  maxRoomMembers,
  maxRooms,
  tlsCert,
  tlsKey
}

const wsreactor = Command.make("wsreactor", flags, (flags) =>
  Effect.gen(function*() {
    const listenPort = yield* resolvePort(flags.port)
    const fromEnv = yield* Config.String("ALLOW_ORIGIN").pipe(Config.withDefault(""))
    const listed = [...flags.allowOrigin, ...fromEnv.split(",")].map((o) => o.trim()).filter((o) => o.length > 0)
    const allowOrigins = yield* Effect.forEach(listed, parseOrigin)
    const maxRoomMembers = yield* checkAtLeastOne(flags.maxRoomMembers, "--max-room-members", "MAX_ROOM_MEMBERS")
    const maxRooms = yield* checkAtLeastOne(flags.maxRooms, "--max-rooms", "MAX_ROOMS")
    const cert = Option.getOrUndefined(flags.tlsCert)
    const key = Option.getOrUndefined(flags.tlsKey)
    if ((cert === undefined) !== (key === undefined)) {
      return yield* new StartupError({ message: "--tls-cert and --tls-key go together", exitCode: 2 })
    }
    const count = flags.workers === 0 ? availableParallelism() : flags.workers
    // The primary only supervises; every worker runs this same command and serves.
    if (count > 1 && cluster.isPrimary) return yield* Cluster.supervise({ workers: count })
    const listen = { port: listenPort, host: flags.host }
    const transport = cert !== undefined && key !== undefined
      ? NodeTcp.layerTls({ ...listen, cert: yield* readPem("--tls-cert", cert), key: yield* readPem("--tls-key", key) })
      : NodeTcp.layer(listen)
    if (cert !== undefined) yield* Effect.logInfo("TLS on: wss:// and https://")
    // Past the open-files limit libuv resets new connections silently: cap below it by default.
    const limit = Admission.fdLimit()
    const connectionCap = Option.getOrElse(flags.maxConnections, () => Admission.capForFdLimit(limit ?? 1024))
    yield* Effect.logInfo(`max connections ${connectionCap === 0 ? "unlimited" : connectionCap} (open-files limit ${limit ?? "unknown"})`)
    const broker = Option.match(flags.redis, {
      onNone: () => (cluster.isWorker ? IpcBroker.layer : Broker.layerMemory),
      onSome: (url) => Broker.layerRedis({ url })
    })
    const presence = Option.match(flags.redis, {
      onNone: () => (cluster.isWorker ? IpcPresence.layer : Presence.layerMemory),
      onSome: (url) => RedisPresence.layer({ url })
    })
    return yield* serveDemo({ ...flags, allowOrigins, connectionCap, maxRoomMembers, maxRooms }).pipe(
      Effect.provide([broker, presence, transport]),
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
