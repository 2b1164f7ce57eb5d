/**
 * Peer "wsreactor": the library as a user would run it (Router + Broker on
 * NodeTcp), logging at warning level like the other peers, which log nothing.
 * Echo on any path; /fanout subscribes to a Broker topic, /fanout?pub=1 publishes
 * every message it receives to it (encoded once for all subscribers).
 * `--redis <url>`: the Broker is `Broker.layerRedis({ url })` instead of the
 * in-memory one (READY once it is connected), so two peers on one Redis
 * share the topic (the bench's cross-process fan-out).
 */
// Module imports, not the package barrels: `from "effect"` loads every Effect module, which
// holds ~16 MB more live heap, and every full GC walks it (a large-message echo runs one per
// few dozen messages). Applications should import the same way.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import * as Stream from "effect/Stream"
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
  // A Redis broker connects in the background: subscribers that arrive before it is ready would miss publishes.
  while (broker.status !== undefined && broker.status().state !== "ready" && broker.status().state !== "local") {
    yield* Effect.sleep("10 millis")
  }
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

const redisUrl = process.argv.includes("--redis") ? process.argv[process.argv.indexOf("--redis") + 1] : undefined
const broker = redisUrl === undefined ? Broker.layerMemory : Broker.layerRedis({ url: redisUrl })

program.pipe(
  Effect.provide(Layer.mergeAll(broker, NodeTcp.layer({ port: portArg(), host: "127.0.0.1" }))),
  Effect.provideService(References.MinimumLogLevel, "Warn"),
  NodeRuntime.runMain
)
