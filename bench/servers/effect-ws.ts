/**
 * Peer "effect-ws": what an Effect user would write today, Effect's own
 * WebSocket server (NodeSocketServer.layerWebSocket, which wraps ws).
 * Echo via the Socket reader/writer: pull a batch, write the batch back.
 * /fanout subscribes (its writer joins a set), /fanout?pub=1 publishes.
 */
import { NodeRuntime, NodeSocketServer } from "@effect/platform-node"
import { Effect, Option } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import * as Socket from "effect/socket/Socket"
import * as SocketServer from "effect/socket/SocketServer"
import { exitWithParent, portArg } from "./lifeline.ts"

exitWithParent()
const subscribers = new Set<Socket.Writer>()

const handle = (socket: Socket.Socket) =>
  Effect.gen(function*() {
    // The server puts the request in each connection's context; read it without widening R.
    const request = yield* Effect.serviceOption(NodeSocketServer.IncomingMessage)
    const url = Option.match(request, { onNone: () => "/", onSome: (req) => req.url ?? "/" })
    const { pull } = yield* socket.reader
    const writer = yield* socket.writer
    if (url.startsWith("/fanout") && !url.includes("pub=1")) {
      subscribers.add(writer)
      yield* Effect.addFinalizer(() => Effect.sync(() => subscribers.delete(writer)))
      return yield* Effect.forever(pull)
    }
    const publish = url.startsWith("/fanout")
    while (true) {
      const batch = yield* pull
      if (publish) yield* Effect.forEach(subscribers, (s) => s.writeAll(batch), { discard: true })
      else yield* writer.writeAll(batch)
    }
  }).pipe(Effect.scoped, Effect.catchTag("SocketError", () => Effect.void))

const program = Effect.gen(function*() {
  const server = yield* SocketServer.SocketServer
  const address = server.address
  console.log(`READY ${NetAddress.isInetAddress(address) ? address.port : 0}`)
  return yield* server.run(handle)
})

program.pipe(
  Effect.provide(
    NodeSocketServer.layerWebSocket({ host: "127.0.0.1", port: portArg(), perMessageDeflate: false, maxPayload: 64 << 20 })
  ),
  NodeRuntime.runMain
)
