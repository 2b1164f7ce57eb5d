/**
 * wsreactor on an existing node:http server ('upgrade' event): the app's plain HTTP answers and the
 * WebSocket routes share one port; the same options, routing and shutdown apply, with real clients
 * (the `ws` package, fetch, and a raw TCP client for bytes pipelined after the upgrade request).
 */
import { afterEach, describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, References, Stream } from "effect"
import * as Http from "node:http"
import WebSocket from "ws"
import * as NodeHttp from "../../src/layers/NodeHttp.ts"
import * as Middleware from "../../src/services/Middleware.ts"
import * as Router from "../../src/services/Router.ts"
import * as Server from "../../src/services/Server.ts"
import { encodeFrame, Opcode, openRaw, upgradeRequest } from "../conformance/RawClient.ts"
import { withTimeout } from "../support/Timeout.ts"

const app = Router.make([
  Router.ws("/echo", (conn) => conn.messages.pipe(Stream.runForEach(conn.send))),
  Router.ws("/private", (conn) => conn.send("welcome"), {
    upgrade: [Middleware.originAllowList(["https://ok.example"])]
  })
])

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** A node:http server with its own HTTP API, listening on 127.0.0.1, port 0. */
const startHttpServer = async () => {
  const server = Http.createServer((request, response) => {
    response.setHeader("content-type", "text/plain")
    response.end(`api ${request.method} ${request.url}`)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanups.push(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { server, port: (server.address() as { port: number }).port }
}

/** Server.serve on the http server's upgrades, in the background; `stop` interrupts it (graceful shutdown). */
const serveOn = (server: Http.Server, options: Server.ServeOptions = {}, upgrade: NodeHttp.UpgradeOptions = {}) => {
  const fiber = Effect.runFork(
    Server.serve(app, options).pipe(
      Effect.provide(NodeHttp.layer(server, upgrade)),
      Effect.provideService(References.MinimumLogLevel, "Warn")
    )
  )
  const stop = () => Effect.runPromise(Fiber.interrupt(fiber)).then(() => undefined)
  cleanups.push(stop)
  return { fiber, stop }
}

const open = async (url: string, options: WebSocket.ClientOptions = {}) => {
  const ws = new WebSocket(url, options)
  cleanups.push(() => ws.terminate())
  const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)))
  const firstMessage = new Promise<string>((resolve) => ws.once("message", (data) => resolve(String(data))))
  await withTimeout(`open ${url}`, new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject)), 5_000)
  return { ws, closed, firstMessage }
}

describe("NodeHttp.layer (node:http 'upgrade')", () => {
  it("plain HTTP stays the server's; WebSocket routes echo on the same port", async () => {
    const { server, port } = await startHttpServer()
    serveOn(server)
    const response = await withTimeout("GET /api", fetch(`http://127.0.0.1:${port}/api/items`), 5_000)
    expect(await response.text()).toBe("api GET /api/items")
    const { ws, firstMessage } = await open(`ws://127.0.0.1:${port}/echo`)
    ws.send("same port")
    expect(await withTimeout("echo", firstMessage, 5_000)).toBe("same port")
  })

  it("routing and upgrade middleware run as on TCP: unknown path 404, bad Origin 403, good Origin accepted", async () => {
    const { server, port } = await startHttpServer()
    serveOn(server)
    const status = (path: string, origin?: string) =>
      withTimeout(
        `upgrade ${path}`,
        new Promise<number>((resolve, reject) => {
          const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, origin === undefined ? {} : { origin })
          cleanups.push(() => ws.terminate())
          ws.once("unexpected-response", (_request, response) => resolve(response.statusCode ?? 0))
          ws.once("open", () => resolve(101))
          ws.once("error", reject)
        }),
        5_000
      )
    expect(await status("/nowhere")).toBe(404)
    expect(await status("/private", "https://evil.example")).toBe(403)
    const { firstMessage } = await open(`ws://127.0.0.1:${port}/private`, { origin: "https://ok.example" })
    expect(await withTimeout("welcome", firstMessage, 5_000)).toBe("welcome")
  })

  it("a frame sent in the same packet as the upgrade request (Node's `head`) is not lost", async () => {
    const { server, port } = await startHttpServer()
    serveOn(server)
    const client = await openRaw(port)
    cleanups.push(() => client.destroy())
    const key = "dGhlIHNhbXBsZSBub25jZQ=="
    client.sendRaw(Buffer.concat([
      Buffer.from(upgradeRequest(port, key, { path: "/echo" })),
      encodeFrame({ opcode: Opcode.text, payload: "pipelined" })
    ]))
    const response = await client.readHttpResponse()
    expect(response.status).toBe(101)
    await client.expectMessage(Opcode.text, "pipelined")
    await client.closeCleanly()
  })

  it("options apply: a message over maxMessageSize closes with 1009", async () => {
    const { server, port } = await startHttpServer()
    serveOn(server, { maxMessageSize: 8 })
    const { ws, closed } = await open(`ws://127.0.0.1:${port}/echo`)
    ws.send("more than eight bytes")
    expect(await withTimeout("close", closed, 5_000)).toBe(1009)
  })

  it("interrupting serve closes WebSockets with 1001, stops taking upgrades and leaves the HTTP server up", async () => {
    const { server, port } = await startHttpServer()
    const { stop } = serveOn(server)
    const { closed } = await open(`ws://127.0.0.1:${port}/echo`)
    await withTimeout("shutdown", stop(), 10_000)
    expect(await withTimeout("close", closed, 5_000)).toBe(1001)
    expect(server.listenerCount("upgrade")).toBe(0)
    const response = await withTimeout("GET after shutdown", fetch(`http://127.0.0.1:${port}/still`), 5_000)
    expect(await response.text()).toBe("api GET /still")
  })

  it("filter: upgrades it declines are left to the server's other 'upgrade' listeners", async () => {
    const { server, port } = await startHttpServer()
    server.on("upgrade", (request: Http.IncomingMessage, socket) => {
      if (request.url === "/other") socket.end("HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    })
    serveOn(server, {}, { filter: (request) => request.url !== "/other" })
    const status = await withTimeout(
      "upgrade /other",
      new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/other`)
        cleanups.push(() => ws.terminate())
        ws.once("unexpected-response", (_request, response) => resolve(response.statusCode ?? 0))
        ws.once("error", reject)
      }),
      5_000
    )
    expect(status).toBe(418)
    const { ws, firstMessage } = await open(`ws://127.0.0.1:${port}/echo`)
    ws.send("still mine")
    expect(await withTimeout("echo", firstMessage, 5_000)).toBe("still mine")
  })
})
