/**
 * `npm run soak -- [--duration 30] [--clients 40]`: a bounded soak on loopback.
 *
 * Starts the program (`src/main.ts --deflate`) as a child process, then for
 * `--duration` seconds runs `--clients` echo clients (a third of them with
 * permessage-deflate) with mixed sizes and types, pings and churn (each
 * connection closes cleanly after a random number of messages and reconnects),
 * while fault injectors reset connections mid-frame and leave readers stalled.
 * Every message carries a sequence number and a checksum; the report gives
 * sent, received, lost, duplicated, out of order, corrupt, closes by code,
 * faults injected, and the server's descriptors and RSS at start and end.
 * Exits 1 on any loss, duplicate, reordering or corruption, or if the server died.
 */
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import { readdirSync } from "node:fs"
import * as Net from "node:net"
import { fileURLToPath } from "node:url"
import WebSocket from "ws"
import { rssBytes } from "./proc.ts"

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`)
  return value
}
const durationMs = Math.min(arg("duration", 30), 3600) * 1000
const clientCount = Math.min(arg("clients", 40), 500)
const WINDOW = 8 // messages in flight per connection
const CLOSE_WAIT_MS = 10_000

const repoRoot = fileURLToPath(new URL("..", import.meta.url))
const fds = (pid: number) => {
  try {
    return readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return NaN
  }
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const digest = (bytes: Uint8Array) => createHash("sha1").update(bytes).digest("hex").slice(0, 16)

const stats = {
  connections: 0,
  sent: 0,
  received: 0,
  lost: 0,
  duplicated: 0,
  outOfOrder: 0,
  corrupt: 0,
  pings: 0,
  pongs: 0,
  closes: new Map<number, number>(),
  faults: { resetMidFrame: 0, stalledReader: 0 },
  unexpectedCloses: 0
}
const countClose = (code: number) => stats.closes.set(code, (stats.closes.get(code) ?? 0) + 1)

// A message: "seq:checksum:payload" as text, or 4-byte seq + 8-byte checksum + payload as binary.
const makeMessage = (seq: number, binary: boolean): { data: string | Buffer; sum: string } => {
  const size = [16, 200, 1_500, 16_000, 70_000][Math.floor(Math.random() * 5)]!
  if (binary) {
    const payload = Buffer.alloc(size)
    for (let i = 0; i < size; i += 4096) payload[i] = Math.floor(Math.random() * 256)
    payload.writeUInt32BE(seq, 0)
    const sum = digest(payload)
    return { data: payload, sum }
  }
  const payload = `${seq}:` + "abcdefghij".repeat(Math.ceil(size / 10)).slice(0, size)
  return { data: payload, sum: digest(Buffer.from(payload)) }
}

const runConnection = (port: number, deflate: boolean, until: number): Promise<void> =>
  new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/echo`, { perMessageDeflate: deflate })
    stats.connections++
    const expected: Array<{ seq: number; sum: string }> = []
    const seen = new Set<number>()
    let seq = 0
    const budget = 20 + Math.floor(Math.random() * 200)
    let closing = false
    const pump = () => {
      while (!closing && expected.length < WINDOW && seq < budget && Date.now() < until && ws.readyState === WebSocket.OPEN) {
        const message = makeMessage(seq, seq % 2 === 1)
        expected.push({ seq, sum: message.sum })
        ws.send(message.data)
        stats.sent++
        seq++
        if (seq % 25 === 0) (ws.ping(), stats.pings++)
      }
      if (!closing && expected.length === 0 && (seq >= budget || Date.now() >= until)) {
        closing = true
        ws.close(1000, "churn")
      }
    }
    ws.on("open", pump)
    ws.on("pong", () => stats.pongs++)
    ws.on("message", (data, isBinary) => {
      const bytes = Buffer.isBuffer(data) ? data : Buffer.concat(data as Array<Buffer>)
      const got = isBinary ? bytes.readUInt32BE(0) : Number(bytes.toString("utf8", 0, 12).split(":")[0])
      stats.received++
      if (seen.has(got)) return void stats.duplicated++
      seen.add(got)
      const head = expected.shift()
      if (head === undefined || head.seq !== got) return void stats.outOfOrder++
      if (digest(bytes) !== head.sum) stats.corrupt++
      pump()
    })
    const timer = setTimeout(() => ws.terminate(), until - Date.now() + CLOSE_WAIT_MS)
    ws.on("error", () => {})
    ws.on("close", (code) => {
      clearTimeout(timer)
      countClose(code)
      if (!closing) stats.unexpectedCloses++
      stats.lost += expected.length
      resolve()
    })
  })

// A client that upgrades, sends half a frame and resets the connection.
const resetMidFrame = (port: number): Promise<void> =>
  new Promise((resolve) => {
    const socket = Net.connect(port, "127.0.0.1")
    socket.on("error", () => {})
    socket.on("close", () => resolve())
    socket.write(
      `GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`
    )
    socket.once("data", () => {
      // A masked binary frame announcing 1000 bytes, then 10 of them, then a reset.
      socket.write(Buffer.from([0x82, 0xfe, 0x03, 0xe8, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
      stats.faults.resetMidFrame++
      setTimeout(() => socket.resetAndDestroy(), 20)
    })
  })

// A client that asks for large echoes and never reads them, for a while.
const stalledReader = (port: number, holdMs: number): Promise<void> =>
  new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/echo`)
    ws.on("error", () => {})
    ws.on("open", () => {
      stats.faults.stalledReader++
      ;(ws as unknown as { _socket: Net.Socket })._socket.pause()
      for (let i = 0; i < 20; i++) ws.send(Buffer.alloc(256 * 1024))
      setTimeout(() => ws.terminate(), holdMs)
    })
    ws.on("close", () => resolve())
  })

const main = async () => {
  const child = spawn(process.execPath, ["src/main.ts", "--port", "0", "--host", "127.0.0.1", "--deflate"], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, NO_COLOR: "1", MAX_CONNECTIONS_PER_IP: "0" }
  })
  let exited = false
  child.on("exit", () => (exited = true))
  const port = await new Promise<number>((resolve, reject) => {
    let out = ""
    // Read stdout to the end (a line per connection), keeping only what comes before "listening".
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      if (out === undefined) return
      out += chunk
      const m = /listening on [^\s]+:(\d+)/.exec(out)
      if (m) (resolve(Number(m[1])), (out = undefined as unknown as string))
    })
    child.once("exit", () => reject(new Error(`server exited before listening:\n${out}`)))
  })
  const pid = child.pid!
  await sleep(200)
  const start = { fds: fds(pid), rss: rssBytes(pid) }
  const until = Date.now() + durationMs

  const clientLoops = Array.from({ length: clientCount }, async (_, i) => {
    while (Date.now() < until && !exited) await runConnection(port, i % 3 === 0, until)
  })
  // Two injectors: resets mid-frame and readers that stall for 0.5-2 s, one every ~100 ms each.
  // Stalled readers run alongside (at most 8 at once), not one after the other.
  const stalled = new Set<Promise<void>>()
  const faultLoops = [0, 1].map(async () => {
    while (Date.now() < until && !exited) {
      if (Math.random() < 0.5 || stalled.size >= 8) await resetMidFrame(port)
      else {
        const reader = stalledReader(port, 500 + Math.random() * 1500)
        stalled.add(reader)
        void reader.then(() => stalled.delete(reader))
      }
      await sleep(50 + Math.random() * 100)
    }
  })
  await Promise.all([...clientLoops, ...faultLoops])
  await Promise.all([...stalled])
  await sleep(1_500) // let the server finish closing the last connections
  const end = { fds: fds(pid), rss: rssBytes(pid) }
  const alive = !exited
  child.kill("SIGTERM")

  const report = {
    durationSeconds: durationMs / 1000,
    clients: clientCount,
    connections: stats.connections,
    messages: { sent: stats.sent, received: stats.received, lost: stats.lost, duplicated: stats.duplicated, outOfOrder: stats.outOfOrder, corrupt: stats.corrupt },
    pings: { sent: stats.pings, pongs: stats.pongs },
    closesByCode: Object.fromEntries([...stats.closes].sort(([a], [b]) => a - b)),
    unexpectedCloses: stats.unexpectedCloses,
    faultsInjected: stats.faults,
    server: { alive, fds: { start: start.fds, end: end.fds }, rssMiB: { start: +(start.rss / 2 ** 20).toFixed(1), end: +(end.rss / 2 ** 20).toFixed(1) } }
  }
  console.log(JSON.stringify(report, null, 2))
  const failed = !alive || stats.lost > 0 || stats.duplicated > 0 || stats.outOfOrder > 0 || stats.corrupt > 0 ||
    stats.unexpectedCloses > 0 || stats.received !== stats.sent
  if (failed) {
    console.error("soak FAILED: see the report above")
    process.exit(1)
  }
  console.log("soak passed: nothing lost, duplicated, reordered or corrupted")
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
