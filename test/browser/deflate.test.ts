/**
 * permessage-deflate with a real browser: Debian's headless Chromium (driven
 * by playwright-core, launched as in chat.test.ts) against wsreactor with and
 * without `perMessageDeflate`. A byte-counting TCP proxy sits between them,
 * so compression is seen on the wire in both directions, and the server's
 * `onBytesOut` hook gives the server's own count.
 */
import * as net from "node:net"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { Browser } from "playwright-core"
import { launchChromium } from "../support/Chromium.ts"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { App } from "../../src/services/Reactor.ts"
import { type RunningServer, startServer } from "../support/TcpServer.ts"

const WAIT_MS = 10_000

// The page the test runs in comes from the server itself: Chromium's local network access checks
// block a ws://127.0.0.1 connection from about:blank. The data: icon stops a /favicon.ico request.
const page = `<!doctype html><html><head><link rel="icon" href="data:,"><title>deflate</title></head><body></body></html>`

const echoApp: App<never> = {
  http: () => Effect.succeed({ status: 200, headers: [["Content-Type", "text/html; charset=utf-8"]], body: page }),
  upgrade: () =>
    Effect.succeed({ _tag: "Accept", handler: (c) => c.messages.pipe(Stream.runForEach((m) => c.send(m))) })
}

interface Counted {
  readonly port: number
  /** Bytes browser → server and server → browser since the last reset. */
  readonly counts: { up: number; down: number; head: string }
  readonly close: () => Promise<void>
}

/** A TCP proxy to `target` that counts bytes each way and keeps the start of the upstream (the HTTP request). */
const countingProxy = (target: number): Promise<Counted> =>
  new Promise((resolve) => {
    const counts = { up: 0, down: 0, head: "" }
    const sockets = new Set<net.Socket>()
    const proxy = net.createServer((client) => {
      const upstream = net.connect({ host: "127.0.0.1", port: target })
      for (const s of [client, upstream]) {
        sockets.add(s)
        s.on("error", () => {})
        s.on("close", () => sockets.delete(s))
      }
      client.on("data", (chunk: Buffer) => {
        counts.up += chunk.length
        if (counts.head.length < 4096) counts.head += chunk.toString("latin1")
      })
      upstream.on("data", (chunk: Buffer) => (counts.down += chunk.length))
      client.pipe(upstream)
      upstream.pipe(client)
    })
    proxy.listen(0, "127.0.0.1", () => {
      const port = (proxy.address() as net.AddressInfo).port
      resolve({
        port,
        counts,
        close: () =>
          new Promise((done) => {
            for (const s of sockets) s.destroy()
            proxy.close(() => done())
          })
      })
    })
  })

/** Compressible JSON text of about `n` bytes, different per `seed`. */
const jsonOf = (n: number, seed: number): string => {
  const rows: Array<string> = []
  let length = 2
  for (let i = 0; length < n; i++) {
    const row = JSON.stringify({ id: seed * 1000 + i, user: `user-${(seed + i) % 13}`, text: `hello number ${i}` })
    rows.push(row)
    length += row.length + 1
  }
  return `[${rows.join(",")}]`
}

interface Side {
  server: RunningServer
  proxy: Counted
  bytesOut: number
}

let browser: Browser
let deflate: Side
let plain: Side

const side = async (perMessageDeflate: boolean): Promise<Side> => {
  const s = { bytesOut: 0 } as Side
  s.server = await startServer(echoApp, { perMessageDeflate, hooks: { onBytesOut: (n) => (s.bytesOut += n) } })
  s.proxy = await countingProxy(s.server.port)
  return s
}

beforeAll(async () => {
  deflate = await side(true)
  plain = await side(false)
  browser = await launchChromium()
}, 60_000)

afterAll(async () => {
  await browser?.close()
  for (const s of [deflate, plain]) {
    await s?.proxy.close()
    await s?.server.close()
  }
})

interface BrowserRun {
  readonly extensions: string
  readonly allEqual: boolean
  readonly count: number
  readonly closeCode: number
}

/** In the page: open a native WebSocket, echo each message in turn, close 1000. */
const runInBrowser = async (s: Side, messages: ReadonlyArray<string>): Promise<BrowserRun> => {
  const port = s.proxy.port
  const reset = () => {
    s.bytesOut = 0
    s.proxy.counts.up = 0
    s.proxy.counts.down = 0
    s.proxy.counts.head = ""
  }
  const context = await browser.newContext()
  const tab = await context.newPage()
  tab.setDefaultTimeout(WAIT_MS)
  try {
    await tab.goto(`http://127.0.0.1:${port}/`)
    reset() // count the WebSocket connection only
    return await tab.evaluate(
      async ({ url, messages }) => {
        const ws = new WebSocket(url)
        await new Promise<void>((resolve, reject) => {
          ws.onopen = () => resolve()
          ws.onerror = () => reject(new Error("websocket error before open"))
        })
        const next = () => new Promise<string>((resolve) => (ws.onmessage = (e) => resolve(e.data as string)))
        let allEqual = true
        let count = 0
        for (const m of messages) {
          const reply = next()
          ws.send(m)
          if ((await reply) !== m) allEqual = false
          count++
        }
        const closeCode = await new Promise<number>((resolve) => {
          ws.onclose = (e) => resolve(e.code)
          ws.close(1000)
        })
        return { extensions: ws.extensions, allEqual, count, closeCode }
      },
      { url: `ws://127.0.0.1:${port}/`, messages: [...messages] }
    )
  } finally {
    await context.close()
  }
}

describe("headless Chromium and permessage-deflate", () => {
  it("negotiates permessage-deflate and echoes a compressible 10 KiB message, compressed both ways", async () => {
    const text = jsonOf(10 * 1024, 1)
    const run = await runInBrowser(deflate, [text])
    expect(run).toEqual({ extensions: "permessage-deflate", allEqual: true, count: 1, closeCode: 1000 })
    // What Chromium offered, and what the server answered (RFC 7692 §7.1).
    expect(deflate.proxy.counts.head).toMatch(/\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n/i)
    // Handshake (~200-500 B each way) plus the compressed message: far below 10 KiB in both directions.
    expect(deflate.proxy.counts.down).toBeLessThan(2 * 1024)
    expect(deflate.proxy.counts.up).toBeLessThan(2 * 1024)
    expect(deflate.bytesOut).toBeLessThan(2 * 1024)
  }, 60_000)

  it("the same exchange without perMessageDeflate sends the full 10 KiB each way", async () => {
    const text = jsonOf(10 * 1024, 1)
    const run = await runInBrowser(plain, [text])
    expect(run).toEqual({ extensions: "", allEqual: true, count: 1, closeCode: 1000 })
    expect(plain.proxy.counts.down).toBeGreaterThan(text.length)
    expect(plain.proxy.counts.up).toBeGreaterThan(text.length)
    expect(plain.bytesOut).toBeGreaterThan(text.length)
  }, 60_000)

  it("30 different compressible messages with context takeover: exact echoes, a fraction of the bytes of the plain run", async () => {
    const messages = Array.from({ length: 30 }, (_, i) => jsonOf(10 * 1024, i))
    const total = messages.reduce((n, m) => n + m.length, 0)
    const compressed = await runInBrowser(deflate, messages)
    const uncompressed = await runInBrowser(plain, messages)
    expect(compressed).toEqual({ extensions: "permessage-deflate", allEqual: true, count: 30, closeCode: 1000 })
    expect(uncompressed).toEqual({ extensions: "", allEqual: true, count: 30, closeCode: 1000 })
    console.log(
      `browser, 30 × ~10 KiB JSON (${total} B): server bytes out ${deflate.bytesOut} with deflate vs ${plain.bytesOut} without; ` +
        `browser bytes up ${deflate.proxy.counts.up} vs ${plain.proxy.counts.up}`
    )
    expect(plain.bytesOut).toBeGreaterThan(total)
    expect(deflate.bytesOut).toBeLessThan(plain.bytesOut / 5)
    expect(deflate.proxy.counts.up).toBeLessThan(plain.proxy.counts.up / 5)
  }, 60_000)
})
