/**
 * The demo app (what `npm start` serves) on a real TCP port, driven by the
 * `ws` client and fetch: the typed chat with presence, echo on any path,
 * `/healthz`, `/metrics` and the HTTP routing around them.
 */
import * as Effect from "effect/Effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import * as Demo from "../src/Demo.ts"
import * as Broker from "../src/services/Broker.ts"
import * as Metrics from "../src/services/Metrics.ts"
import type { ServerState } from "../src/services/Server.ts"
import { type RunningServer, startServer } from "./support/TcpServer.ts"
import { withTimeout as boundedWait } from "./support/Timeout.ts"

const WAIT_MS = 5_000

const withTimeout = <A>(what: string, promise: Promise<A>, ms = WAIT_MS): Promise<A> => boundedWait(what, promise, ms)

/** A `ws` client that queues what it receives, so tests read messages in order. */
interface Client {
  readonly ws: WebSocket
  readonly next: () => Promise<any>
  readonly send: (value: unknown) => void
  readonly closed: Promise<{ code: number; reason: string }>
}

let server: RunningServer
let state: ServerState | undefined
const metrics = Metrics.makeIsolated()
const clients = new Set<WebSocket>()
const base = () => `http://127.0.0.1:${server.port}`

beforeAll(async () => {
  const app = Effect.runSync(
    Demo.make({ metrics, state: () => state }).pipe(Effect.provideService(Broker.Broker, Broker.makeMemory()))
  )
  server = await startServer(app, { hooks: metrics.hooks, onState: (s) => (state = s) })
})

afterAll(async () => {
  for (const ws of clients) if (ws.readyState === WebSocket.OPEN) ws.terminate()
  await server.close()
})

const connect = (path: string, options: { readonly port?: number; readonly origin?: string } = {}): Promise<Client> => {
  const ws = new WebSocket(`ws://127.0.0.1:${options.port ?? server.port}${path}`, { origin: options.origin })
  clients.add(ws)
  const received: Array<any> = []
  const waiting: Array<(value: any) => void> = []
  ws.on("message", (data, isBinary) => {
    const value = isBinary ? data : JSON.parse(data.toString())
    const resolve = waiting.shift()
    if (resolve !== undefined) resolve(value)
    else received.push(value)
  })
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() }))
  )
  const client: Client = {
    ws,
    next: () =>
      withTimeout(
        `a message on ${path}`,
        received.length > 0 ? Promise.resolve(received.shift()) : new Promise((resolve) => waiting.push(resolve))
      ),
    send: (value) => ws.send(typeof value === "string" ? value : JSON.stringify(value)),
    closed
  }
  return withTimeout(
    `open ${path}`,
    new Promise<Client>((resolve, reject) => {
      ws.once("open", () => resolve(client))
      ws.once("error", reject)
    })
  )
}

const join = async (path: string, name: string, port?: number): Promise<Client> => {
  const client = await connect(path, { port })
  client.send({ type: "join", name })
  const joined = await client.next()
  expect(joined).toMatchObject({ type: "joined", name: name.trim() })
  return client
}

/** Poll until `check` passes (server-side bookkeeping after a close is asynchronous). */
const eventually = async (check: () => Promise<void>, ms = WAIT_MS): Promise<void> => {
  const deadline = Date.now() + ms
  while (true) {
    try {
      return await check()
    } catch (error) {
      if (Date.now() > deadline) throw error
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  }
}

const metricValue = (text: string, series: string): number | undefined => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

describe("chat on /chat", () => {
  it("two clients: presence lists both, messages reach both with sender and time, leaving updates presence", async () => {
    const ada = await join("/chat", "Ada")
    const bob = await connect("/chat")
    bob.send({ type: "join", name: "Bob" })
    // Everyone in the room (Bob included) learns who joined and who is there.
    // The joiner gets the full list; the others only the delta.
    expect(await bob.next()).toEqual({ type: "joined", name: "Bob", members: ["Ada", "Bob"] })
    expect(await ada.next()).toEqual({ type: "joined", name: "Bob" })

    const before = Date.now()
    ada.send({ type: "message", text: "hello Bob" })
    for (const client of [ada, bob]) {
      const message = await client.next()
      expect(message).toMatchObject({ type: "message", from: "Ada", text: "hello Bob" })
      expect(message.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
      expect(Date.parse(message.time)).toBeGreaterThanOrEqual(before - 1000)
      expect(Date.parse(message.time)).toBeLessThanOrEqual(Date.now() + 1000)
    }
    bob.send({ type: "message", text: "hi Ada 👋" })
    expect(await ada.next()).toMatchObject({ type: "message", from: "Bob", text: "hi Ada 👋" })
    expect(await bob.next()).toMatchObject({ type: "message", from: "Bob", text: "hi Ada 👋" })

    bob.ws.close(1000, "bye")
    expect((await withTimeout("close", bob.closed)).code).toBe(1000)
    expect(await ada.next()).toEqual({ type: "left", name: "Bob" })
    ada.ws.close(1000)
    await withTimeout("close", ada.closed)
  })

  it("answers invalid input with an error message and keeps the connection", async () => {
    const client = await connect("/chat")
    client.send({ type: "message", text: "too early" })
    expect(await client.next()).toMatchObject({ type: "error", message: expect.stringMatching(/join first/) })
    client.send("this is not JSON")
    expect(await client.next()).toMatchObject({ type: "error", message: expect.stringMatching(/^invalid message: /) })
    client.send({ type: "dance" })
    expect((await client.next()).type).toBe("error")
    client.send({ type: "join", name: "   " })
    expect((await client.next()).type).toBe("error")
    client.send({ type: "join", name: "x".repeat(33) })
    expect((await client.next()).message).toMatch(/at most 32/)
    client.send(Buffer.from([1, 2, 3])) // binary where JSON text is expected
    expect((await client.next()).type).toBe("error")

    // Still open: a valid join (trimmed) and messages work.
    client.send({ type: "join", name: "  Cy  " })
    expect(await client.next()).toEqual({ type: "joined", name: "Cy", members: ["Cy"] })
    client.send({ type: "join", name: "Cy again" })
    expect((await client.next()).message).toMatch(/already joined as Cy/)
    client.send({ type: "message", text: "x".repeat(2001) })
    expect((await client.next()).message).toMatch(/at most 2000/)
    client.send({ type: "message", text: "x".repeat(2000) })
    expect(await client.next()).toMatchObject({ type: "message", from: "Cy", text: "x".repeat(2000) })

    // A name already in the room (case-insensitive) is refused.
    const other = await connect("/chat")
    other.send({ type: "join", name: "cy" })
    expect((await other.next()).message).toMatch(/taken/)
    client.ws.close(1000)
    other.ws.close(1000)
    await withTimeout("close", Promise.all([client.closed, other.closed]))
  })

  it("keeps rooms apart and refuses a bad room name with 400", async () => {
    const red = await join("/chat/red", "Ada")
    const blue = await join("/chat/blue", "Ada") // same name, other room: fine
    blue.send({ type: "message", text: "in blue" })
    expect(await blue.next()).toMatchObject({ from: "Ada", text: "in blue" })
    red.send({ type: "message", text: "in red" })
    expect(await red.next()).toMatchObject({ text: "in red" })

    const status = await withTimeout(
      "unexpected-response",
      new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${server.port}/chat/not%20ok`)
        ws.on("error", () => {}) // ws reports the refused upgrade as an error too
        ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0))
        ws.once("open", () => reject(new Error("upgrade should have been refused")))
      })
    )
    expect(status).toBe(400)
    red.ws.close(1000)
    blue.ws.close(1000)
  })
})

/** The HTTP status of an upgrade the server refuses (the test fails if it is accepted). */
const refusedStatus = (url: string, origin?: string) =>
  withTimeout(
    "unexpected-response",
    new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(url, { origin })
      ws.on("error", () => {}) // ws reports the refused upgrade as an error too
      ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0))
      ws.once("open", () => (ws.terminate(), reject(new Error("upgrade should have been refused"))))
    })
  )

const closeAll = async (...list: ReadonlyArray<Client>) => {
  for (const c of list) c.ws.close(1000)
  await withTimeout("close", Promise.all(list.map((c) => c.closed)))
}

describe("chat security", () => {
  it("a page on another site cannot open the chat (403); same-origin pages and non-browser clients can", async () => {
    const url = `ws://127.0.0.1:${server.port}/chat`
    expect(await refusedStatus(url, "https://evil.example")).toBe(403)
    expect(await refusedStatus(`ws://127.0.0.1:${server.port}/chat/room`, "null")).toBe(403)
    const own = await connect("/chat", { origin: `http://127.0.0.1:${server.port}` })
    const cli = await connect("/chat")
    // Echo carries no credentials and conformance suites send any Origin: it stays open.
    const echo = await connect("/echo", { origin: "https://evil.example" })
    await closeAll(own, cli, echo)
  })

  it("presence: 40 joins cost the others one short delta each, not the whole list", async () => {
    const room = "/chat/crowd"
    const members: Array<Client> = []
    let presenceBytes = 0
    for (let i = 0; i < 40; i++) {
      const client = await connect(room)
      client.ws.on("message", (data) => (presenceBytes += (data as Buffer).length))
      client.send({ type: "join", name: `member-${i}` })
      const own = await client.next()
      expect(own.members).toHaveLength(i + 1)
      for (const other of members) expect(await other.next()).toEqual({ type: "joined", name: `member-${i}` })
      members.push(client)
    }
    // Full lists to every member on every join grow as N³; the joiner's list plus one delta per member as N².
    expect(presenceBytes).toBeLessThan(80_000) // measured: ~39 KB
    await closeAll(...members)
  })

  it("names are NFKC-normalised and invisible characters are refused: no look-alike Admin", async () => {
    const admin = await join("/chat/names", "Admin")
    const zeroWidth = await connect("/chat/names")
    zeroWidth.send({ type: "join", name: "Admin\u200b" })
    expect((await zeroWidth.next()).message).toMatch(/invisible or format characters/)
    zeroWidth.send({ type: "join", name: "Ad\u2060min" }) // word joiner
    expect((await zeroWidth.next()).message).toMatch(/invisible or format characters/)
    zeroWidth.send({ type: "join", name: "\u3164" }) // Hangul filler: a letter that prints blank
    expect((await zeroWidth.next()).type).toBe("error")
    zeroWidth.send({ type: "join", name: "Ａｄｍｉｎ" }) // full-width: NFKC folds it to Admin
    expect((await zeroWidth.next()).message).toMatch(/the name Admin is taken/)
    zeroWidth.send({ type: "join", name: " ｆｕｌｌ " })
    expect(await zeroWidth.next()).toEqual({ type: "joined", name: "full", members: ["Admin", "full"] })
    await closeAll(admin, zeroWidth)
  })

  describe("with small caps and an allowed origin", () => {
    let capped: RunningServer
    beforeAll(async () => {
      const app = Effect.runSync(
        Demo.make({ chatLimits: { maxMembersPerRoom: 2, maxRooms: 2 }, allowOrigins: ["https://app.example"] }).pipe(
          Effect.provideService(Broker.Broker, Broker.makeMemory())
        )
      )
      capped = await startServer(app)
    })
    afterAll(() => capped.close())

    it("a full room and a room beyond the cap answer with a clear error; an emptied room frees its place", async () => {
      const a = await join("/chat/one", "A", capped.port)
      const b = await join("/chat/one", "B", capped.port)
      const c = await connect("/chat/one", { port: capped.port })
      c.send({ type: "join", name: "C" })
      expect((await c.next()).message).toBe("the room one is full (2 members)")
      const d = await join("/chat/two", "D", capped.port)
      const e = await connect("/chat/three", { port: capped.port })
      e.send({ type: "join", name: "E" })
      expect((await e.next()).message).toBe("too many rooms are open (2): join an existing one")
      await closeAll(d)
      await eventually(async () => {
        e.send({ type: "join", name: "E" })
        expect(await e.next()).toEqual({ type: "joined", name: "E", members: ["E"] })
      })
      await closeAll(a, b, c, e)
    })

    it("an allowed origin may open the chat; others may not", async () => {
      const allowed = await connect("/chat", { port: capped.port, origin: "https://app.example" })
      expect(await refusedStatus(`ws://127.0.0.1:${capped.port}/chat`, "https://other.example")).toBe(403)
      await closeAll(allowed)
    })
  })

  it("Demo.make refuses invalid limits", () => {
    expect(() =>
      Effect.runSync(Demo.make({ chatLimits: { maxRooms: 0 } }).pipe(Effect.provideService(Broker.Broker, Broker.makeMemory())))
    ).toThrow()
  })
})

describe("echo", () => {
  for (const path of ["/echo", "/", "/any/other/path"]) {
    it(`echoes text and binary on ${path}`, async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}${path}`)
      clients.add(ws)
      await withTimeout("open", new Promise((resolve, reject) => (ws.once("open", resolve), ws.once("error", reject))))
      const echo = (data: string | Buffer) =>
        withTimeout(
          "echo",
          new Promise<{ data: Buffer; isBinary: boolean }>((resolve) => {
            ws.once("message", (reply, isBinary) => resolve({ data: reply as Buffer, isBinary }))
            ws.send(data)
          })
        )
      const text = await echo("hello")
      expect([text.isBinary, text.data.toString()]).toEqual([false, "hello"])
      const binary = await echo(Buffer.from([0, 255]))
      expect([binary.isBinary, [...binary.data]]).toEqual([true, [0, 255]])
      ws.close(1000)
    })
  }
})

describe("HTTP", () => {
  it("GET / is the demo page; unknown paths 404; WebSocket-only paths 426; other methods 405", async () => {
    const page = await fetch(`${base()}/`)
    expect(page.status).toBe(200)
    expect(page.headers.get("content-type")).toMatch(/^text\/html/)
    const html = await page.text()
    expect(html).toContain("wsreactor")
    expect(html).toContain("new WebSocket")
    expect((await fetch(`${base()}/no/such/page`)).status).toBe(404)
    expect((await fetch(`${base()}/chat`)).status).toBe(426)
    expect((await fetch(`${base()}/healthz`, { method: "POST" })).status).toBe(405)
  })

  it("/healthz reports ok, uptime and the open connections", async () => {
    const a = await join("/chat/health", "A")
    const b = await join("/chat/health", "B")
    await a.next() // B's join, seen by A: both connections are registered by now
    const response = await fetch(`${base()}/healthz`)
    expect(response.status).toBe(200)
    expect(response.headers.get("content-type")).toBe("application/json")
    const body = await response.json()
    expect(body.status).toBe("ok")
    expect(body.uptimeSeconds).toBeGreaterThanOrEqual(0)
    expect(body.uptimeSeconds).toBeLessThan(600)
    expect(body.connections).toBeGreaterThanOrEqual(2)
    a.ws.close(1000)
    b.ws.close(1000)
    await withTimeout("close", Promise.all([a.closed, b.closed]))
  })

  it("/metrics is Prometheus text with handshake, connection, message and close metrics", async () => {
    const scrape = async () => {
      const response = await fetch(`${base()}/metrics`)
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8")
      return response.text()
    }
    const before = await scrape()
    const opened0 = metricValue(before, "wsreactor_connections_opened_total") ?? 0
    const in0 = metricValue(before, "wsreactor_messages_in_total") ?? 0
    const out0 = metricValue(before, "wsreactor_messages_out_total") ?? 0

    const client = await join("/chat/metrics", "Metric")
    client.send({ type: "message", text: "count me" })
    await client.next()
    const during = await scrape()
    expect(during).toContain("# TYPE wsreactor_connections_open gauge")
    expect(during).toContain("# TYPE wsreactor_handshakes_total counter")
    expect(metricValue(during, "wsreactor_connections_open")).toBeGreaterThanOrEqual(1)
    expect(metricValue(during, "wsreactor_connections_opened_total")).toBe(opened0 + 1)
    expect(metricValue(during, `wsreactor_handshakes_total{status="101"}`)).toBeGreaterThanOrEqual(1)
    expect(metricValue(during, `wsreactor_handshakes_total{status="200"}`)).toBeGreaterThanOrEqual(1) // the first scrape
    expect(metricValue(during, "wsreactor_messages_in_total")).toBe(in0 + 2) // join + message
    expect(metricValue(during, "wsreactor_messages_out_total")).toBe(out0 + 2) // joined + message
    expect(metricValue(during, "wsreactor_message_bytes_in_total")).toBeGreaterThan(20)
    expect(metricValue(during, "wsreactor_bytes_out_total")).toBeGreaterThan(20)

    client.ws.close(4001, "custom")
    await withTimeout("close", client.closed)
    await eventually(async () => {
      const after = await scrape()
      expect(metricValue(after, `wsreactor_closes_total{code="4xxx"}`)).toBe(1)
      expect(metricValue(after, "wsreactor_connections_open")).toBe(state!.connections.size)
    })
  })
})
