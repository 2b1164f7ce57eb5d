/**
 * Admission over real TCP: the server-wide connection cap (503 + Retry-After
 * before the handshake, counted in /metrics) and a graceful shutdown that
 * stops listening before it closes the open connections.
 */
import * as Effect from "effect/Effect"
import * as Net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { echoApp } from "../../src/Demo.ts"
import * as Handshake from "../../src/domain/Handshake.ts"
import * as Metrics from "../../src/services/Metrics.ts"
import { type RunningServer, startServer } from "../support/TcpServer.ts"
import { withTimeout } from "../support/Timeout.ts"

const WAIT_MS = 5_000
const servers = new Set<RunningServer>()
const sockets = new Set<WebSocket | Net.Socket>()

afterEach(async () => {
  for (const s of sockets) s instanceof WebSocket ? s.terminate() : s.destroy()
  sockets.clear()
  await Promise.all([...servers].map((s) => s.close()))
  servers.clear()
})

const start = async (options: Parameters<typeof startServer>[1]) => {
  const server = await startServer(echoApp, options)
  servers.add(server)
  return server
}

type Outcome =
  | { readonly _tag: "open"; readonly ws: WebSocket }
  | { readonly _tag: "refused"; readonly status: number; readonly retryAfter: string | undefined; readonly body: string }
  | { readonly _tag: "error"; readonly code: string | undefined }

const attempt = (port: number): Promise<Outcome> => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/echo`)
  sockets.add(ws)
  return withTimeout(
    "an upgrade outcome",
    new Promise<Outcome>((resolve) => {
      ws.once("open", () => resolve({ _tag: "open", ws }))
      ws.once("unexpected-response", (_req, res) => {
        let body = ""
        res.setEncoding("utf8").on("data", (chunk: string) => (body += chunk)).on("end", () =>
          resolve({ _tag: "refused", status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"], body }))
      })
      ws.once("error", (error: NodeJS.ErrnoException) => resolve({ _tag: "error", code: error.code }))
    }),
    WAIT_MS
  )
}

describe("maxConnections", () => {
  it("the connection over the cap gets 503 with Retry-After before its handshake, counted in /metrics; a freed place is reused", async () => {
    const metrics = Metrics.makeIsolated()
    const server = await start({ maxConnections: 2, retryAfterSeconds: 7, hooks: metrics.hooks })
    const first = await attempt(server.port)
    const second = await attempt(server.port)
    expect([first._tag, second._tag]).toEqual(["open", "open"])
    const third = await attempt(server.port)
    expect(third).toMatchObject({ _tag: "refused", status: 503, retryAfter: "7", body: "server busy: too many connections\n" })
    const text = await Effect.runPromise(metrics.render)
    expect(text).toMatch(/^wsreactor_handshakes_total\{status="503"\} 1$/m)

    if (first._tag === "open") first.ws.close(1000)
    const deadline = Date.now() + WAIT_MS
    let again = await attempt(server.port)
    while (again._tag !== "open" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      again = await attempt(server.port)
    }
    expect(again._tag).toBe("open")
  })
})

describe("graceful shutdown", () => {
  it("stops listening first: a client arriving during the shutdown is refused by the kernel, not upgraded", async () => {
    const server = await start({ shutdownTimeoutMs: 3_000 })
    // A peer that never answers our close frame keeps the shutdown waiting.
    const stubborn = Net.connect(server.port, "127.0.0.1")
    sockets.add(stubborn)
    stubborn.on("error", () => {})
    let received = Buffer.alloc(0)
    const closeFrameSeen = new Promise<void>((resolve) =>
      stubborn.on("data", (chunk: Buffer) => {
        received = Buffer.concat([received, chunk])
        const end = received.indexOf("\r\n\r\n")
        if (end >= 0 && received.subarray(end + 4).includes(0x88)) resolve()
      })
    )
    stubborn.write(Handshake.clientRequest({ host: `127.0.0.1:${server.port}`, path: "/", key: "dGhlIHNhbXBsZSBub25jZQ==" }))
    await withTimeout("101", new Promise<void>((resolve) => stubborn.once("data", () => resolve())), WAIT_MS)

    const closing = server.close()
    await withTimeout("the 1001 close frame", closeFrameSeen, WAIT_MS)
    const late = await attempt(server.port)
    expect(late).toEqual({ _tag: "error", code: "ECONNREFUSED" })
    stubborn.destroy()
    await withTimeout("shutdown", closing, WAIT_MS)
  })
})
