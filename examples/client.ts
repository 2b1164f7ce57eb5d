import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Schema, Stream } from "effect"
import { Client, Typed } from "wsreactor"

// The other end of examples/chat.ts: say something in a room, print what the room says back.
const Say = Schema.Struct({ text: Schema.String })
const Said = Schema.Struct({ room: Schema.String, text: Schema.String })

const program = Effect.gen(function*() {
  const conn = yield* Client.connect(process.env["URL"] ?? "ws://localhost:8080/room/lobby", {
    perMessageDeflate: true,
    handshakeTimeoutMs: 5_000
  })
  // The server's Typed codecs work on a client connection too: here `incoming` is what the server sends.
  yield* Typed.handler({ incoming: Said, outgoing: Say }, (room) =>
    Effect.gen(function*() {
      yield* room.send({ text: "hello from the wsreactor client" })
      yield* room.messages.pipe(
        Stream.take(1),
        Stream.runForEach((said) => Console.log(`[${said.room}] ${said.text}`))
      )
    }))(conn)
}).pipe(Effect.scoped) // leaving the scope closes with 1000 and waits for the server to close TCP

NodeRuntime.runMain(program)
