import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { Broker, NodeTcp, Server } from "wsreactor"
import { app } from "./chat.ts"

app.pipe(
  Effect.flatMap((app) => Server.serve(app, { maxMessageSize: 1024 * 1024 })),
  Effect.provide([Broker.layerMemory, NodeTcp.layer({ port: 8080 })]),
  NodeRuntime.runMain
)
