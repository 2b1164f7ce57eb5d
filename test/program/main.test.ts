/**
 * The real program (`npm start` = `node src/main.ts`) as a child process:
 * flags, env, the HTTP page, echo over `ws`, the chat, /healthz and /metrics,
 * logs, graceful shutdown on signals.
 */
import { afterEach, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { cleanup, spawnProgram as spawn, startProgram as start } from "../support/Program.ts"
import { withTimeout as boundedWait } from "../support/Timeout.ts"

/** Longest any single wait may take before the test fails. */
const WAIT_MS = 5_000

const withTimeout = <A>(what: string, promise: Promise<A>, ms = WAIT_MS): Promise<A> => boundedWait(what, promise, ms)

const clients = new Set<WebSocket>()

afterEach(() => {
  for (const ws of clients) ws.terminate()
  clients.clear()
  cleanup()
})

/** Start the server (on a free port by default) and learn its port from the "listening on" line. */
const startProgram = async (
  args: ReadonlyArray<string> = ["--port", "0", "--host", "127.0.0.1"],
  env: NodeJS.ProcessEnv = {}
) => {
  const program = await start(args, { env })
  expect(program.port).toBeGreaterThan(0)
  return program
}

const spawnProgram = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}) => spawn(args, { env })

const open = (port: number, path: string): Promise<WebSocket> => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`)
  clients.add(ws)
  return withTimeout(
    `open ${path}`,
    new Promise<WebSocket>((resolve, reject) => {
      ws.once("open", () => resolve(ws))
      ws.once("error", reject)
    })
  )
}

const echoOnce = (ws: WebSocket, data: string | Buffer): Promise<{ data: Buffer; isBinary: boolean }> =>
  withTimeout(
    "echo",
    new Promise((resolve) => {
      ws.once("message", (reply, isBinary) => resolve({ data: reply as Buffer, isBinary }))
      ws.send(data)
    })
  )

const closed = (ws: WebSocket): Promise<{ code: number; reason: string }> =>
  withTimeout(
    "close",
    new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString("utf8") })))
  )

describe("node src/main.ts", () => {
  it("answers a plain GET / with the HTML page", async () => {
    const program = await startProgram()
    const response = await withTimeout("GET /", fetch(`http://127.0.0.1:${program.port}/`))
    expect(response.status).toBe(200)
    expect(response.headers.get("content-type")).toMatch(/^text\/html/)
    expect(await response.text()).toMatch(/wsreactor/)
  })

  it("serves the favicon the page links (an SVG, also on /favicon.ico)", async () => {
    const program = await startProgram()
    const page = await (await withTimeout("GET /", fetch(`http://127.0.0.1:${program.port}/`))).text()
    expect(page).toContain(`<link rel="icon" type="image/svg+xml" href="/favicon.svg">`)
    for (const path of ["/favicon.svg", "/favicon.ico"]) {
      const response = await withTimeout(`GET ${path}`, fetch(`http://127.0.0.1:${program.port}${path}`))
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toBe("image/svg+xml")
      expect(await response.text()).toMatch(/^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/)
    }
  })

  it("echoes over WebSocket on /echo and /anything, and logs open and close with the code", async () => {
    const program = await startProgram()
    for (const path of ["/echo", "/anything"]) {
      const ws = await open(program.port, path)
      const text = await echoOnce(ws, `hello ${path}`)
      expect(text.isBinary).toBe(false)
      expect(text.data.toString("utf8")).toBe(`hello ${path}`)
      const binary = await echoOnce(ws, Buffer.from([0, 1, 2, 255]))
      expect(binary.isBinary).toBe(true)
      expect([...binary.data]).toEqual([0, 1, 2, 255])
      const done = closed(ws)
      ws.close(1000, "done")
      expect((await done).code).toBe(1000)
    }
    // One open line and one close line per connection, the close line with the code.
    await program.waitForStdout(/close #\d+[^\n]*code=1000[\s\S]*close #\d+[^\n]*code=1000/)
    expect(program.stdout()).toMatch(/open #\d+[^\n]*\/echo/)
    expect(program.stdout()).toMatch(/open #\d+[^\n]*\/anything/)
    expect(program.stdout()).toContain("close #")
    expect(program.stdout()).toContain("code=1000")
  })

  it("serves the chat on /chat, /healthz with the open connections and /metrics from the live server", async () => {
    const program = await startProgram()
    const ws = await open(program.port, "/chat")
    const joined = await echoOnce(ws, JSON.stringify({ type: "join", name: "Ada" }))
    expect(JSON.parse(joined.data.toString("utf8"))).toEqual({ type: "joined", name: "Ada", members: ["Ada"] })

    const health = await withTimeout("GET /healthz", fetch(`http://127.0.0.1:${program.port}/healthz`))
    expect(health.status).toBe(200)
    expect(await health.json()).toMatchObject({ status: "ok", connections: 1 })

    const metrics = await withTimeout("GET /metrics", fetch(`http://127.0.0.1:${program.port}/metrics`))
    expect(metrics.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/)
    const text = await metrics.text()
    expect(text).toMatch(/^wsreactor_connections_open 1$/m)
    expect(text).toMatch(/^wsreactor_handshakes_total\{status="101"\} 1$/m)
    expect(text).toMatch(/^wsreactor_messages_in_total 1$/m)
  })

  it("--deflate: a ws client with perMessageDeflate negotiates it and echoes compressible text", async () => {
    const program = await startProgram(["--port", "0", "--host", "127.0.0.1", "--deflate"])
    const ws = new WebSocket(`ws://127.0.0.1:${program.port}/echo`, { perMessageDeflate: true })
    clients.add(ws)
    await withTimeout("open", new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject)))
    expect(ws.extensions).toBe("permessage-deflate")
    const text = JSON.stringify(Array.from({ length: 500 }, (_, i) => ({ i, name: `item ${i}` })))
    expect((await echoOnce(ws, text)).data.toString("utf8")).toBe(text)
  })

  it("without --deflate, permessage-deflate is not offered back", async () => {
    const program = await startProgram()
    const ws = new WebSocket(`ws://127.0.0.1:${program.port}/echo`, { perMessageDeflate: true })
    clients.add(ws)
    await withTimeout("open", new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject)))
    expect(ws.extensions).toBe("")
  })

  it("--help prints the flags and exits 0", async () => {
    const program = spawnProgram(["--help"])
    const { code } = await withTimeout("exit", program.exited)
    expect(code).toBe(0)
    expect(program.stdout()).toContain("--port")
    expect(program.stdout()).toContain("--host")
    expect(program.stdout()).toContain("default 8888")
    expect(program.stdout()).toContain("default 0.0.0.0")
  })

  // One clear line on stderr and exit 2: no help dump, no SchemaError, no stack.
  const freePort = ["--port", "0", "--host", "127.0.0.1"] as const
  for (
    const [label, args, env, line] of [
      ["PORT=abc", [], { PORT: "abc" }, `wsreactor: PORT must be an integer from 0 to 65535 (0 picks a free port), got "abc"`],
      ["--port 99999", ["--port", "99999"], {}, "wsreactor: --port must be an integer from 0 to 65535 (0 picks a free port), got 99999"],
      // A chat cap of 0 is refused, not raised to 1 (a free port: a regression must not take 8888).
      [
        "--max-room-members 0",
        ["--max-room-members", "0", ...freePort],
        {},
        "wsreactor: --max-room-members (env MAX_ROOM_MEMBERS) must be an integer from 1 to 10000000, got 0"
      ],
      ["--max-rooms 0", ["--max-rooms", "0", ...freePort], {}, "wsreactor: --max-rooms (env MAX_ROOMS) must be an integer from 1 to 10000000, got 0"],
      ["MAX_ROOMS=0", freePort, { MAX_ROOMS: "0" }, "wsreactor: --max-rooms (env MAX_ROOMS) must be an integer from 1 to 10000000, got 0"]
    ] as const
  ) {
    it(`${label}: one line on stderr, exit 2`, async () => {
      const program = spawnProgram(args, env)
      const { code } = await withTimeout("exit", program.exited)
      expect(code).toBe(2)
      expect(program.stderr()).toBe(`${line}\n`)
      expect(program.stdout()).toBe(program.stderr()) // nothing else was printed
    })
  }

  it("a port in use: one line on stderr naming it, exit 1", async () => {
    const first = await startProgram()
    const second = spawnProgram(["--port", String(first.port), "--host", "127.0.0.1"])
    const { code } = await withTimeout("exit", second.exited)
    expect(code).toBe(1)
    expect(second.stderr()).toBe(
      `wsreactor: cannot listen on 127.0.0.1:${first.port}: listen EADDRINUSE: address already in use 127.0.0.1:${first.port}\n`
    )
  })

  it("honours the PORT environment variable (PORT=0 picks a free port)", async () => {
    const program = await startProgram(["--host", "127.0.0.1"], { PORT: "0" })
    const ws = await open(program.port, "/")
    expect((await echoOnce(ws, "via PORT")).data.toString("utf8")).toBe("via PORT")
  })

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`on ${signal}: closes every connection with 1001 and exits 0`, async () => {
      const program = await startProgram()
      const a = await open(program.port, "/a")
      const b = await open(program.port, "/b")
      // Make sure both connections are registered before the signal.
      await echoOnce(a, "a")
      await echoOnce(b, "b")
      const closes = Promise.all([closed(a), closed(b)])
      program.child.kill(signal)
      const [closeA, closeB] = await closes
      expect(closeA.code).toBe(1001)
      expect(closeB.code).toBe(1001)
      const exit = await withTimeout("exit", program.exited)
      expect(exit).toEqual({ code: 0, signal: null })
    })
  }
})
