import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer, Schema } from "effect"
import { Rpc, RpcClient, RpcGroup, RpcSerialization } from "effect/rpc"
import { SocketAdapter } from "wsreactor"

// Effect RPC's socket protocol over a wsreactor client: SocketAdapter.layer is the `Socket` it speaks over.
const Api = RpcGroup.make(
  Rpc.make("Add", { payload: { a: Schema.Number, b: Schema.Number }, success: Schema.Number })
)

const Protocol = RpcClient.layerProtocolSocket().pipe(
  Layer.provide(SocketAdapter.layer(process.env["URL"] ?? "ws://localhost:8080/rpc", { perMessageDeflate: true })),
  Layer.provide(RpcSerialization.layerJson)
)

const program = Effect.gen(function*() {
  const client = yield* RpcClient.make(Api)
  yield* Console.log(`2 + 40 = ${yield* client.Add({ a: 2, b: 40 })}`)
}).pipe(Effect.scoped, Effect.provide(Protocol))

NodeRuntime.runMain(program)
