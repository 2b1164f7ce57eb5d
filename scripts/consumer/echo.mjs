// Plain JavaScript under Node: the installed package (dist/) serves a route, Node's built-in
// WebSocket client (Node >= 22) echoes through it. Exits 0 on success, 1 with a message otherwise.
import { Effect, Layer, Stream } from "effect"
import { NodeTcp, Router, Server, Transport } from "wsreactor"

const app = Router.make([
  Router.ws("/echo", (conn) => conn.messages.pipe(Stream.runForEach(conn.send)))
])

/** Open a client, send `text`, resolve with the first message it gets back. */
const echo = (url, text) =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.onopen = () => ws.send(text)
    ws.onmessage = (event) => {
      ws.close(1000)
      resolve(event.data)
    }
    ws.onerror = () => reject(new Error(`WebSocket error on ${url}`))
  })

const program = Effect.gen(function*() {
  const { address } = yield* Transport.Transport
  yield* Effect.forkScoped(Server.serve(app))
  const reply = yield* Effect.promise(() => echo(`ws://127.0.0.1:${address.port}/echo`, "hello from .mjs"))
  if (reply !== "hello from .mjs") return yield* Effect.die(new Error(`unexpected echo: ${reply}`))
  console.log(`echo.mjs: ok (${reply})`)
}).pipe(
  Effect.scoped,
  Effect.provide(NodeTcp.layer({ port: 0, host: "127.0.0.1" })),
  Effect.timeout("10 seconds")
)

Effect.runPromise(program).then(
  () => process.exit(0),
  (error) => {
    console.error("echo.mjs: failed:", error)
    process.exit(1)
  }
)
