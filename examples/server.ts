import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { Broker, NodeTcp, Server } from "wsreactor"
import { app } from "./chat.ts"

app.pipe(
  Effect.flatMap((app) => Server.serve(app, { maxMessageSize: 1024 * 1024 })),
  Effect.provide([Broker.layerMemory, NodeTcp.layer({ port: Number(process.env["PORT"] ?? 8080) })]),
  // Ctrl-C closes every connection with 1001, waits for them, then exits 0 (the default says 130).
  NodeRuntime.runMain({ teardown: Server.teardown })
)
