/**
 * Interop: the `ws` npm client (a widely used, Autobahn-conformant
 * implementation) against wsreactor's real TCP server, in-process.
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { echoApp } from "../../src/Demo.ts"
import type { App } from "../../src/services/Reactor.ts"
import { type RunningServer, startServer } from "../support/TcpServer.ts"
import { withTimeout as boundedWait } from "../support/Timeout.ts"

/** Longest any single wait may take before the test fails. */
const WAIT_MS = 5_000

const clients = new Set<WebSocket>()

afterEach(() => {
  for (const ws of clients) ws.terminate()
  clients.clear()
})

const withTimeout = <A>(what: string, promise: Promise<A>, ms = WAIT_MS): Promise<A> => boundedWait(what, promise, ms)

/** Open a `ws` client; resolves on 'open', rejects on 'error' or an early close. */
const open = (port: number, path = "/", protocols?: ReadonlyArray<string>): Promise<WebSocket> => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, protocols === undefined ? undefined : [...protocols])
  clients.add(ws)
  return withTimeout(
    "open",
    new Promise<WebSocket>((resolve, reject) => {
      ws.once("open", () => resolve(ws))
      ws.once("error", reject)
      ws.once("close", (code) => reject(new Error(`closed before open (code ${code})`)))
    })
  )
}

interface Received {
  readonly data: Buffer
  readonly isBinary: boolean
}

/** Collect the next `n` messages in arrival order. */
const receive = (ws: WebSocket, n: number): Promise<Array<Received>> =>
  withTimeout(
    `${n} message(s)`,
    new Promise<Array<Received>>((resolve, reject) => {
      const got: Array<Received> = []
      const onMessage = (data: WebSocket.RawData, isBinary: boolean) => {
        got.push({ data: toBuffer(data), isBinary })
        if (got.length === n) {
          ws.off("message", onMessage)
          resolve(got)
        }
      }
      ws.on("message", onMessage)
      ws.once("close", (code) => reject(new Error(`closed (code ${code}) after ${got.length}/${n} messages`)))
    })
  )

const toBuffer = (data: WebSocket.RawData): Buffer =>
  Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)

/** Resolves with the code and reason of the 'close' event. */
const closed = (ws: WebSocket): Promise<{ code: number; reason: string }> =>
  withTimeout(
    "close",
    new Promise((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) throw new Error("already closed")
      ws.once("close", (code, reason) => resolve({ code, reason: reason.toString("utf8") }))
    })
  )

/** ASCII text of exactly `n` bytes, with a pattern so that reordering shows. */
const textOf = (n: number): string => {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
  return alphabet.repeat(Math.ceil(n / alphabet.length)).slice(0, n)
}

const binaryOf = (n: number): Buffer => {
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff
  return b
}

const sizes = [0, 1, 125, 126, 65535, 65536, 1024 * 1024, 8 * 1024 * 1024]

describe("ws client against wsreactor (echoApp)", () => {
  let server: RunningServer | undefined
  const port = () => {
    if (server === undefined) throw new Error("server not started")
    return server.port
  }
  beforeAll(async () => {
    server = await startServer(echoApp)
  })
  afterAll(async () => {
    await server?.close()
  })

  it("connects", async () => {
    const ws = await open(port())
    expect(ws.readyState).toBe(WebSocket.OPEN)
    expect(ws.protocol).toBe("")
  })

  describe("echoes text messages exactly, as text", () => {
    for (const size of sizes) {
      it(`${size} bytes`, async () => {
        const ws = await open(port())
        const text = textOf(size)
        const reply = receive(ws, 1)
        ws.send(text)
        const [message] = await reply
        expect(message.isBinary).toBe(false)
        expect(message.data.length).toBe(size)
        expect(message.data.toString("utf8") === text).toBe(true)
      })
    }

    it("multi-byte UTF-8 survives intact", async () => {
      const ws = await open(port())
      const text = "héllo wörld — 日本語 — 🎉".repeat(1000)
      const reply = receive(ws, 1)
      ws.send(text)
      const [message] = await reply
      expect(message.isBinary).toBe(false)
      expect(message.data.toString("utf8")).toBe(text)
    })
  })

  describe("echoes binary messages exactly, as binary", () => {
    for (const size of sizes) {
      it(`${size} bytes`, async () => {
        const ws = await open(port())
        const bytes = binaryOf(size)
        const reply = receive(ws, 1)
        ws.send(bytes, { binary: true })
        const [message] = await reply
        expect(message.isBinary).toBe(true)
        expect(message.data.length).toBe(size)
        expect(message.data.equals(bytes)).toBe(true)
      })
    }
  })

  it("100 pipelined messages come back in order, with their types", async () => {
    const ws = await open(port())
    const reply = receive(ws, 100)
    for (let i = 0; i < 100; i++) {
      if (i % 2 === 0) ws.send(`message ${i}`)
      else ws.send(Buffer.from(`binary ${i}`), { binary: true })
    }
    const messages = await reply
    messages.forEach((message, i) => {
      expect(message.isBinary).toBe(i % 2 === 1)
      expect(message.data.toString("utf8")).toBe(i % 2 === 0 ? `message ${i}` : `binary ${i}`)
    })
  })

  it("answers a ping with a pong carrying the same payload (RFC 6455 §5.5.3)", async () => {
    const ws = await open(port())
    const payload = Buffer.from("are you there?")
    const pong = withTimeout("pong", new Promise<Buffer>((resolve) => ws.once("pong", resolve)))
    ws.ping(payload)
    expect((await pong).equals(payload)).toBe(true)
  })

  it("answers an empty ping and a 125-byte ping", async () => {
    const ws = await open(port())
    const pongs: Array<Buffer> = []
    const both = withTimeout(
      "two pongs",
      new Promise<void>((resolve) =>
        ws.on("pong", (data) => {
          pongs.push(data)
          if (pongs.length === 2) resolve()
        })
      )
    )
    ws.ping()
    ws.ping(binaryOf(125))
    await both
    expect(pongs[0].length).toBe(0)
    expect(pongs[1].equals(binaryOf(125))).toBe(true)
  })

  describe("client-initiated close: the server echoes the code (RFC 6455 §5.5.1)", () => {
    for (const code of [1000, 1001, 1003, 1008, 1011, 3000, 4999]) {
      it(`code ${code}`, async () => {
        const ws = await open(port())
        const done = closed(ws)
        ws.close(code, `reason for ${code}`)
        const info = await done
        expect(info.code).toBe(code)
      })
    }
  })

  it("20 concurrent clients each echo 50 messages", async () => {
    const all = await Promise.all(Array.from({ length: 20 }, () => open(port())))
    await Promise.all(
      all.map(async (ws, c) => {
        const reply = receive(ws, 50)
        for (let i = 0; i < 50; i++) ws.send(`client ${c} message ${i}`)
        const messages = await reply
        expect(messages.map((m) => m.data.toString("utf8"))).toEqual(
          Array.from({ length: 50 }, (_, i) => `client ${c} message ${i}`)
        )
      })
    )
    const closes = all.map(closed)
    for (const ws of all) ws.close(1000)
    for (const info of await Promise.all(closes)) expect(info.code).toBe(1000)
  })

  it("a subprotocol the server does not choose: ws refuses the handshake, as is its (stricter) rule", async () => {
    // RFC 6455 §4.2.2 lets the server pick no subprotocol, and a browser would then open with
    // protocol "". The `ws` client is stricter: it fails with "Server sent no subprotocol".
    // What the server must do is checked below: a 101 without Sec-WebSocket-Protocol.
    await expect(open(port(), "/", ["chat"])).rejects.toThrow(/no subprotocol/)
  })

  it("a subprotocol the server does not choose: 101 without Sec-WebSocket-Protocol (RFC 6455 §4.2.2)", async () => {
    const response = await withTimeout(
      "upgrade response",
      new Promise<{ status: number; protocol: string | undefined }>((resolve, reject) => {
        // `ws` exposes the raw upgrade response before its own subprotocol check.
        const ws = new WebSocket(`ws://127.0.0.1:${port()}/`, ["chat"])
        clients.add(ws)
        ws.once("upgrade", (res) => {
          resolve({ status: res.statusCode ?? 0, protocol: res.headers["sec-websocket-protocol"] as string | undefined })
        })
        ws.once("error", () => {})
        ws.once("unexpected-response", () => reject(new Error("not upgraded")))
      })
    )
    expect(response.status).toBe(101)
    expect(response.protocol).toBeUndefined()
  })
})

describe("ws client against a handler that closes first", () => {
  // Takes one message, then closes with 4001 "bye".
  const closeAfterFirst: App<never> = {
    http: () => Effect.succeed({ status: 404 }),
    upgrade: () =>
      Effect.succeed({
        _tag: "Accept",
        handler: (connection) =>
          connection.messages.pipe(
            Stream.take(1),
            Stream.runDrain,
            Effect.andThen(connection.close(4001, "bye"))
          )
      })
  }
  let server: RunningServer | undefined
  beforeAll(async () => {
    server = await startServer(closeAfterFirst)
  })
  afterAll(async () => {
    await server?.close()
  })

  it("the client sees the server's code and reason", async () => {
    const ws = await open(server!.port)
    const done = closed(ws)
    ws.send("hello")
    expect(await done).toEqual({ code: 4001, reason: "bye" })
  })
})

describe("ws client against maxMessageSize = 1 MiB", () => {
  let server: RunningServer | undefined
  beforeAll(async () => {
    server = await startServer(echoApp, { maxMessageSize: 1024 * 1024 })
  })
  afterAll(async () => {
    await server?.close()
  })

  it("a message of exactly 1 MiB is echoed", async () => {
    const ws = await open(server!.port)
    const reply = receive(ws, 1)
    ws.send(binaryOf(1024 * 1024))
    const [message] = await reply
    expect(message.data.length).toBe(1024 * 1024)
  })

  it("a message of 1 MiB + 1 closes the connection with 1009 (RFC 6455 §7.4.1)", async () => {
    const ws = await open(server!.port)
    ws.on("error", () => {})
    const done = closed(ws)
    ws.send(binaryOf(1024 * 1024 + 1))
    expect((await done).code).toBe(1009)
  })

  it("an oversized text message also closes with 1009", async () => {
    const ws = await open(server!.port)
    ws.on("error", () => {})
    const done = closed(ws)
    ws.send(textOf(1024 * 1024 + 1))
    expect((await done).code).toBe(1009)
  })
})
