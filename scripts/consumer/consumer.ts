// Type-checked by the scratch app's strict tsc (tsconfig.json: strict, exactOptionalPropertyTypes,
// noUncheckedIndexedAccess, no allowImportingTsExtensions, skipLibCheck off; the DOM lib because effect's own
// crypto types name CryptoKey): the package's .d.ts must hold up under the settings an Effect app may use.
import { Context, Effect, Layer, Schema, Stream } from "effect"
import { NodeRuntime } from "@effect/platform-node"
import * as Http from "node:http"
import { HttpRouter } from "effect/http"
import { Broker, Middleware, NodeHttp, NodeTcp, Router, Server, Typed } from "wsreactor"
import * as Testing from "wsreactor/testing"

const Say = Schema.Struct({ text: Schema.String })
class User extends Context.Service<User, { readonly name: string }>()("consumer/User") {}
const login = Middleware.auth({ query: "token" }, (token) =>
  token === "good" ? Effect.succeed({ name: "ada" }) : Effect.fail("bad token"), User)

export const app = Effect.gen(function*() {
  const broker = yield* Broker.Broker
  return Router.make([
    Router.ws("/echo", (conn) => conn.messages.pipe(Stream.runForEach(conn.send))),
    // Typed params (a string, even under noUncheckedIndexedAccess), no Effect.scoped (the connection's Scope),
    // and the principal as a service `auth` provides.
    Router.ws("/room/:name", Typed.handler({ incoming: Say, outgoing: Say }, (conn) =>
      Effect.gen(function*() {
        const topic: string = conn.raw.params.name
        const user = yield* User
        yield* broker.subscribe(topic, conn.raw)
        yield* conn.messages.pipe(
          Stream.runForEach((say) =>
            conn.encode({ text: `${user.name}: ${say.text}` }).pipe(Effect.flatMap((m) => broker.publish(topic, m)))
          )
        )
      })), { upgrade: [login], connection: [Middleware.rateLimit({ capacity: 10, refillPerSecond: 5 })] }),
    Router.get("/healthz", () => Effect.succeed(Router.json({ ok: true })))
  ])
})

export const testLayer = Testing.layer(Router.make([]), { maxMessageSize: 1024 })

export const main = () =>
  app.pipe(
    Effect.flatMap((app) =>
      Server.serve(app, { maxMessageSize: 1024 * 1024, perMessageDeflate: true, heartbeatInterval: "20 seconds" })
    ),
    Effect.provide([Broker.layerMemory, NodeTcp.layer({ port: 8080 })]),
    NodeRuntime.runMain
  )

export const launch = () =>
  Server.layer(Router.make([]), { heartbeatIntervalMs: 0 }).pipe(
    Layer.provide(NodeTcp.layer({ port: 8080 })),
    Layer.launch,
    NodeRuntime.runMain({ teardown: Server.teardown })
  )

// On an existing node:http server, and as an effect/http route.
export const onHttp = (server: Http.Server) =>
  Server.serve(Router.make([]), { heartbeatIntervalMs: 0 }).pipe(Effect.provide(NodeHttp.layer(server)))
export const routes: Layer.Layer<never, never, HttpRouter.HttpRouter> = NodeHttp.route("/ws/*").pipe(
  Layer.provide(NodeHttp.layerRoutes())
)
