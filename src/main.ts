/**
 * `npm start`: serve the demo application (WebSocket echo on every path) on
 * port 8888, as the original C reactor did. Flags override PORT / HOST.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import { echoApp } from "./Demo.ts"
import * as NodeTcp from "./layers/NodeTcp.ts"
import * as Server from "./services/Server.ts"

const port = Flag.Int("port").pipe(
  Flag.withDescription("TCP port to listen on (env PORT; 0 picks a free port)"),
  Flag.withFallbackConfig(Config.Port("PORT")),
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

Command.run(wsreactor, { version: "0.1.0" }).pipe(
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
