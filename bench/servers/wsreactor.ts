/**
 * Peer "wsreactor": the library as a user would run it (Router + Broker on
 * NodeTcp), logging at warning level like the other peers, which log nothing.
 * Echo on any path; /fanout subscribes to a Broker topic, /fanout?pub=1 publishes
 * every message it receives to it (encoded once for all subscribers).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, References, Stream } from "effect"
import * as NodeTcp from "../../src/layers/NodeTcp.ts"
import * as Broker from "../../src/services/Broker.ts"
import * as Router from "../../src/services/Router.ts"
import * as Server from "../../src/services/Server.ts"
import { Transport } from "../../src/services/Transport.ts"
import { exitWithParent, portArg } from "./lifeline.ts"

exitWithParent()

const program = Effect.gen(function*() {
  const broker = yield* Broker.Broker
  const transport = yield* Transport
  const app = Router.make([
    Router.ws("/fanout", (conn) =>
      conn.query.get("pub") === "1"
        ? conn.messages.pipe(Stream.runForEach((message) => broker.publish("fanout", message)))
        : Effect.andThen(broker.subscribe("fanout", conn), Stream.runDrain(conn.messages)).pipe(Effect.scoped)),
    Router.ws("/*", (conn) => conn.messages.pipe(Stream.runForEachArray((batch) => conn.sendAll(batch))))
  ])
  console.log(`READY ${transport.address.port}`)
  return yield* Server.serve(app, { maxMessageSize: 64 << 20 })
})

program.pipe(
  Effect.provide(Layer.mergeAll(Broker.layerMemory, NodeTcp.layer({ port: portArg(), host: "127.0.0.1" }))),
  Effect.provideService(References.MinimumLogLevel, "Warn"),
  NodeRuntime.runMain
)
