import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import * as Http from "node:http"
import { Broker, NodeHttp, Server } from "wsreactor"
import { app } from "./chat.ts"

// An effect/http app: its own routes, and GET /room/* and /echo upgrade to wsreactor's chat.
const Routes = Layer.mergeAll(
  HttpRouter.add("GET", "/api/hello", HttpServerResponse.text("hello")),
  NodeHttp.route("/room/*"),
  NodeHttp.route("/echo")
)

const WebSockets = Layer.unwrap(Effect.map(app, (app) => Server.layer(app)))

Layer.mergeAll(HttpRouter.serve(Routes), WebSockets).pipe(
  Layer.provide([NodeHttp.layerRoutes(), Broker.layerMemory]),
  Layer.provide(NodeHttpServer.layer(Http.createServer, { port: Number(process.env["PORT"] ?? 8080) })),
  Layer.launch,
  NodeRuntime.runMain({ teardown: Server.teardown })
)
