/**
 * `npm start`: serve the demo application on port 8888: WebSocket echo on
 * `/echo` and every other path (as the original C reactor did), the chat on
 * `/chat`, the demo page on `GET /`, `/healthz` and `/metrics`. Flags override
 * their environment variables (PORT, HOST, TLS_CERT, TLS_KEY, ALLOW_ORIGIN, ...).
 * With `--tls-cert` and `--tls-key` the same port speaks `wss://` and `https://`.
 * Defaults that bound a hostile client are listed in docs/SECURITY.md.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { readFileSync } from "node:fs"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Demo from "./Demo.ts"
import * as NodeTcp from "./layers/NodeTcp.ts"
import * as Admission from "./services/Admission.ts"
import * as Broker from "./services/Broker.ts"
import * as Metrics from "./services/Metrics.ts"
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

/** A flag combination or file the program cannot start with. */
class StartupError extends Data.TaggedError("StartupError")<{ readonly message: string }> {}

// An origin as a browser sends it: scheme, host and port only.
const parseOrigin = (value: string): Effect.Effect<string, StartupError> =>
  Effect.try({
    try: () => {
      const url = new URL(value)
      if ((url.protocol !== "http:" && url.protocol !== "https:") || url.origin !== value.replace(/\/$/, "")) throw new Error()
      return url.origin
    },
    catch: () => new StartupError({ message: `--allow-origin ${value}: expected an origin like https://app.example` })
  })

const readPem = (flag: string, path: string) =>
  Effect.try({
    try: () => readFileSync(path),
    catch: (error) => new StartupError({ message: `${flag} ${path}: ${(error as Error).message}` })
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
  const app = yield* Demo.make({
    metrics,
    state: () => state,
    allowOrigins: flags.allowOrigins,
    maxConnectionsPerIp: flags.maxConnectionsPerIp,
    chatLimits: { maxMembersPerRoom: Math.max(1, flags.maxRoomMembers), maxRooms: Math.max(1, flags.maxRooms) }
  })
  return yield* Server.serve(app, {
    hooks: metrics.hooks,
    onState: (s) => (state = s),
    perMessageDeflate: flags.deflate,
    maxConnections: flags.connectionCap
  })
})

const flags = { port, host, deflate, allowOrigin, maxConnections, maxConnectionsPerIp, maxRoomMembers, maxRooms, tlsCert, tlsKey }

const wsreactor = Command.make("wsreactor", flags, (flags) =>
  Effect.gen(function*() {
    const fromEnv = yield* Config.String("ALLOW_ORIGIN").pipe(Config.withDefault(""))
    const listed = [...flags.allowOrigin, ...fromEnv.split(",")].map((o) => o.trim()).filter((o) => o.length > 0)
    const allowOrigins = yield* Effect.forEach(listed, parseOrigin)
    const listen = { port: flags.port, host: flags.host }
    const cert = Option.getOrUndefined(flags.tlsCert)
    const key = Option.getOrUndefined(flags.tlsKey)
    if ((cert === undefined) !== (key === undefined)) {
      return yield* new StartupError({ message: "--tls-cert and --tls-key go together" })
    }
    const transport = cert !== undefined && key !== undefined
      ? NodeTcp.layerTls({ ...listen, cert: yield* readPem("--tls-cert", cert), key: yield* readPem("--tls-key", key) })
      : NodeTcp.layer(listen)
    if (cert !== undefined) yield* Effect.logInfo("TLS on: wss:// and https://")
    // Past the open-files limit libuv resets new connections silently: cap below it by default.
    const limit = Admission.fdLimit()
    const connectionCap = Option.getOrElse(flags.maxConnections, () => Admission.capForFdLimit(limit ?? 1024))
    yield* Effect.logInfo(`max connections ${connectionCap === 0 ? "unlimited" : connectionCap} (open-files limit ${limit ?? "unknown"})`)
    return yield* serveDemo({ ...flags, allowOrigins, connectionCap }).pipe(Effect.provide([Broker.layerMemory, transport]))
  })
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
