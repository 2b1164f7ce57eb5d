import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import * as Http from "node:http"
import { Broker, NodeHttp, Server } from "wsreactor"
import { app } from "./chat.ts"

// An HTTP API that already exists; wsreactor takes its WebSocket upgrades, on the same port.
const api = Http.createServer((request, response) => {
  response.setHeader("content-type", "application/json")
  response.end(JSON.stringify({ path: request.url }))
})
api.listen(Number(process.env["PORT"] ?? 8080))

app.pipe(
  Effect.flatMap((app) => Server.serve(app)),
  Effect.provide([Broker.layerMemory, NodeHttp.layer(api)]),
  Effect.ensuring(Effect.sync(() => api.close())),
  NodeRuntime.runMain({ teardown: Server.teardown })
)
