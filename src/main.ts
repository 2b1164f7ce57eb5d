/**
 * `npm start`: serve the demo application (WebSocket echo on every path) on
 * port 8888, as the original C reactor did. Flags override PORT / HOST.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import { echoApp } from "./Demo.ts"
import * as NodeTcp from "./layers/NodeTcp.ts"
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

const wsreactor = Command.make("wsreactor", { port, host }, (flags) =>
  Server.serve(echoApp).pipe(Effect.provide(NodeTcp.layer({ port: flags.port, host: flags.host })))
).pipe(Command.withDescription("A WebSocket server (RFC 6455) on Effect: echo on every path, a page on plain GET."))

// SIGINT/SIGTERM interrupt the main fiber; a shutdown that completed gracefully exits 0, not 130.
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

Command.run(wsreactor, { version: "0.1.0" }).pipe(
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain({ teardown })
)
