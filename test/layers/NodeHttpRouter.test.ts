/**
 * wsreactor routes inside an `effect/http` app (HttpRouter on NodeHttpServer): the HttpRouter's own
 * routes and the WebSocket ones share one port; the upgrade goes to wsreactor's server (routing,
 * middleware, options, shutdown), tested with the `ws` client and fetch.
 */
import { NodeHttpServer } from "@effect/platform-node"
import { afterEach, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, References, Scope, Stream } from "effect"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import * as Http from "node:http"
import WebSocket from "ws"
import * as NodeHttp from "../../src/layers/NodeHttp.ts"
import * as Middleware from "../../src/services/Middleware.ts"
import * as Router from "../../src/services/Router.ts"
import * as Server from "../../src/services/Server.ts"
import { withTimeout } from "../support/Timeout.ts"

const app = Router.make([
  Router.ws("/ws/echo", (conn) => conn.messages.pipe(Stream.runForEach(conn.send))),
  Router.ws("/ws/private", (conn) => conn.send("welcome"), {
    upgrade: [Middleware.originAllowList(["https://ok.example"])]
  })
])

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** The effect/http app (an API route and the WebSocket routes) and wsreactor's server, on one port. */
const start = async (options: Server.ServeOptions = {}) => {
  const Routes = Layer.mergeAll(
    HttpRouter.add("GET", "/api/hello", HttpServerResponse.text("hello from effect/http")),
    NodeHttp.route("/ws/*")
  )
  const Live = Layer.mergeAll(HttpRouter.serve(Routes, { disableLogger: true }), Server.layer(app, options)).pipe(
    Layer.provide(NodeHttp.layerRoutes()),
    Layer.provideMerge(NodeHttpServer.layer(Http.createServer, { port: 0, host: "127.0.0.1" }))
  )
  const scope = Effect.runSync(Scope.make())
  const context = await Effect.runPromise(
    Layer.buildWithScope(Live, scope).pipe(Effect.provideService(References.MinimumLogLevel, "Warn"))
  )
  const address = Context.get(context, HttpServer.HttpServer).address
  if (address._tag === "UnixPathAddress") throw new Error("expected a TCP address")
  let closing: Promise<void> | undefined
  const stop = () => (closing ??= Effect.runPromise(Scope.close(scope, Exit.void)))
  cleanups.push(stop)
  return { port: address.port, stop }
}

const open = async (url: string, options: WebSocket.ClientOptions = {}) => {
  const ws = new WebSocket(url, options)
  cleanups.push(() => ws.terminate())
  const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)))
  const firstMessage = new Promise<string>((resolve) => ws.once("message", (data) => resolve(String(data))))
  await withTimeout(`open ${url}`, new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject)), 5_000)
  return { ws, closed, firstMessage }
}

const upgradeStatus = (url: string, options: WebSocket.ClientOptions = {}) =>
  withTimeout(
    `upgrade ${url}`,
    new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(url, options)
      cleanups.push(() => ws.terminate())
      ws.once("unexpected-response", (_request, response) => resolve(response.statusCode ?? 0))
      ws.once("open", () => resolve(101))
      ws.once("error", reject)
    }),
    5_000
  )

describe("NodeHttp.route (an effect/http HttpRouter route that upgrades)", () => {
  it("the HttpRouter's routes and wsreactor's echo share the port", async () => {
    const { port } = await start()
    const response = await withTimeout("GET /api/hello", fetch(`http://127.0.0.1:${port}/api/hello`), 5_000)
    expect(await response.text()).toBe("hello from effect/http")
    const { ws, firstMessage, closed } = await open(`ws://127.0.0.1:${port}/ws/echo`)
    const errors: Array<Error> = []
    ws.on("error", (error) => errors.push(error))
    ws.send("through HttpRouter")
    expect(await withTimeout("echo", firstMessage, 5_000)).toBe("through HttpRouter")
    // A clean close: nothing from the HTTP side (no stray response) reaches the WebSocket stream.
    ws.close(1000)
    expect(await withTimeout("close", closed, 5_000)).toBe(1000)
    expect(errors).toEqual([])
    // Several at once: each upgrade is its own connection.
    const more = await Promise.all([1, 2, 3].map(() => open(`ws://127.0.0.1:${port}/ws/echo`)))
    more.forEach(({ ws }, i) => ws.send(`n${i}`))
    expect(await Promise.all(more.map(({ firstMessage }) => withTimeout("echo", firstMessage, 5_000)))).toEqual(["n0", "n1", "n2"])
  })

  it("wsreactor's routing and middleware decide: unknown path 404, bad Origin 403; a plain GET gets 426", async () => {
    const { port } = await start()
    expect(await upgradeStatus(`ws://127.0.0.1:${port}/ws/nowhere`)).toBe(404)
    expect(await upgradeStatus(`ws://127.0.0.1:${port}/ws/private`, { origin: "https://evil.example" })).toBe(403)
    const { firstMessage } = await open(`ws://127.0.0.1:${port}/ws/private`, { origin: "https://ok.example" })
    expect(await withTimeout("welcome", firstMessage, 5_000)).toBe("welcome")
    const plain = await withTimeout("GET /ws/echo", fetch(`http://127.0.0.1:${port}/ws/echo`), 5_000)
    expect(plain.status).toBe(426)
    expect(plain.headers.get("upgrade")).toBe("websocket")
  })

  it("options apply (maxMessageSize → 1009) and closing the layers closes WebSockets with 1001", async () => {
    const { port, stop } = await start({ maxMessageSize: 8 })
    const big = await open(`ws://127.0.0.1:${port}/ws/echo`)
    big.ws.send("more than eight bytes")
    expect(await withTimeout("close 1009", big.closed, 5_000)).toBe(1009)
    const idle = await open(`ws://127.0.0.1:${port}/ws/echo`)
    await withTimeout("shutdown", stop(), 10_000)
    expect(await withTimeout("close 1001", idle.closed, 5_000)).toBe(1001)
  })
})
