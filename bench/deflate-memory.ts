/**
 * Memory (and CPU) per permessage-deflate connection through the real server.
 *
 * For each server setting (deflate off, on with defaults, on with
 * server_no_context_takeover) a fresh server child process (this file with
 * `--serve=<json>`: Server.serve + NodeTcp, an echo app) is started; N `ws`
 * clients offering permessage-deflate connect, each sends one 4 KiB
 * compressible JSON message and waits for its echo. The server's RSS is read
 * from /proc before and after (after a full GC in the server), so client-side
 * zlib memory and V8 garbage do not count.
 * Then all close (RSS once the finalizers released the zlib streams), and N
 * fresh connections echo M messages each (server CPU per echo; the clients
 * share the machine, so echoes/s is a rough figure).
 *
 *   node bench/deflate-memory.ts              N=500, M=20 (about a minute)
 *   node bench/deflate-memory.ts --conns=200 --messages=10
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import * as Effect from "effect/Effect"
import * as References from "effect/References"
import * as Stream from "effect/Stream"
import WebSocket from "ws"
import type { DeflateOptions } from "../src/domain/PerMessageDeflate.ts"
import * as NodeTcp from "../src/layers/NodeTcp.ts"
import type { App } from "../src/services/Reactor.ts"
import * as Server from "../src/services/Server.ts"
import { Transport } from "../src/services/Transport.ts"
import { cpuMicros, rssBytes } from "./proc.ts"

const arg = (name: string): string | undefined =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)

// ---------------------------------------------------------------- server child

const serve = (setting: boolean | Partial<DeflateOptions>) => {
  process.stdin.on("end", () => process.exit(0)) // never outlive the bench
  // "gc" on stdin: collect (run with --expose-gc) so RSS readings are not V8 garbage
  createInterface({ input: process.stdin }).on("line", (line) => {
    if (line !== "gc") return
    const gc = (globalThis as { gc?: () => void }).gc
    gc?.()
    gc?.()
    setTimeout(() => console.log("GC"), 200)
  })
  const echoApp: App<never> = {
    http: () => Effect.succeed({ status: 404 }),
    upgrade: () =>
      Effect.succeed({ _tag: "Accept", handler: (c) => c.messages.pipe(Stream.runForEach((m) => c.send(m))) })
  }
  Effect.runFork(
    Effect.gen(function*() {
      const transport = yield* Transport
      console.log(`READY ${transport.address.port}`)
      return yield* Server.serve(echoApp, { perMessageDeflate: setting })
    }).pipe(
      Effect.provide(NodeTcp.layer({ port: 0, host: "127.0.0.1", backlog: 2048 })),
      Effect.provideService(References.MinimumLogLevel, "Warn")
    )
  )
}

// ---------------------------------------------------------------- bench

const N = Number(arg("conns") ?? 500)
const M = Number(arg("messages") ?? 20)
const MiB = 1024 * 1024

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Compressible JSON of exactly `n` bytes, different per seed. */
const jsonOf = (n: number, seed: number): string => {
  const rows: Array<string> = []
  let length = 2
  for (let i = 0; length < n - 120; i++) {
    const row = JSON.stringify({ id: seed * 1000 + i, user: `user-${(seed + i) % 17}`, text: `message ${i}` })
    rows.push(row)
    length += row.length + 1
  }
  const body = `[${rows.join(",")}]`
  return body.slice(0, -1) + " ".repeat(n - body.length) + "]"
}

interface Child {
  readonly child: ChildProcess
  readonly port: number
  /** Full GC in the server, then resolves. */
  readonly gc: () => Promise<void>
}

const startChild = (setting: boolean | Partial<DeflateOptions>): Promise<Child> =>
  new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--expose-gc", fileURLToPath(import.meta.url), `--serve=${JSON.stringify(setting)}`],
      { stdio: ["pipe", "pipe", "inherit"] }
    )
    child.once("error", reject)
    child.once("exit", (code) => reject(new Error(`server exited early (${code})`)))
    let gcDone: (() => void) | undefined
    const gc = () =>
      new Promise<void>((done) => {
        gcDone = done
        child.stdin!.write("gc\n")
      })
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const m = /^READY (\d+)$/.exec(line)
      if (m) resolve({ child, port: Number(m[1]), gc })
      if (line === "GC") gcDone?.()
    })
  })

const openClient = (port: number): Promise<WebSocket> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: true })
    ws.once("open", () => resolve(ws))
    ws.once("error", reject)
  })

const echo = (ws: WebSocket, text: string): Promise<void> =>
  new Promise((resolve, reject) => {
    ws.once("message", (data) => {
      const got = Buffer.isBuffer(data) ? data : Buffer.concat(data as Array<Buffer>)
      if (got.toString("utf8") === text) resolve()
      else reject(new Error("echo differs"))
    })
    ws.send(text)
  })

/** Open n clients, 50 at a time, each echoing one 4 KiB message. */
const openAll = async (port: number, n: number): Promise<Array<WebSocket>> => {
  const out: Array<WebSocket> = []
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => openClient(port)))
    await Promise.all(batch.map((ws, k) => echo(ws, jsonOf(4096, i + k))))
    out.push(...batch)
  }
  return out
}

const closeAll = (clients: ReadonlyArray<WebSocket>) =>
  Promise.all(
    clients.map((ws) =>
      new Promise<void>((resolve) => {
        ws.once("close", () => resolve())
        ws.close(1000)
      })
    )
  )

interface Row {
  readonly name: string
  readonly negotiated: string
  readonly baseMiB: number
  readonly perConnKiB: number
  readonly afterCloseMiB: number
  readonly cpuPerMsgUs: number
  readonly msgsPerSec: number
}

const measure = async (name: string, setting: boolean | Partial<DeflateOptions>): Promise<Row> => {
  const { child, port, gc } = await startChild(setting)
  const pid = child.pid!
  try {
    // Warm up code paths (JIT, first zlib use) outside the measurement.
    const warm = await openAll(port, 20)
    const negotiated = warm[0]!.extensions || "(none)"
    for (let r = 0; r < 5; r++) await Promise.all(warm.map((ws, k) => echo(ws, jsonOf(4096, 1000 + k + r))))
    await closeAll(warm)
    await sleep(500)
    await gc()

    const base = rssBytes(pid)
    const clients = await openAll(port, N)
    await sleep(500)
    await gc()
    const held = rssBytes(pid)
    await closeAll(clients)
    await sleep(1000)
    await gc()
    const afterClose = rssBytes(pid)

    // Throughput, on fresh connections: each echoes M messages, one in flight per connection.
    const busy = await openAll(port, N)
    const cpu0 = cpuMicros(pid)
    const t0 = performance.now()
    await Promise.all(busy.map(async (ws, k) => {
      for (let j = 0; j < M; j++) await echo(ws, jsonOf(4096, k * M + j))
    }))
    const elapsed = (performance.now() - t0) / 1000
    const cpu = cpuMicros(pid) - cpu0
    await closeAll(busy)
    return {
      name,
      negotiated,
      baseMiB: base / MiB,
      perConnKiB: (held - base) / N / 1024,
      afterCloseMiB: (afterClose - base) / MiB,
      cpuPerMsgUs: cpu / (N * M),
      msgsPerSec: (N * M) / elapsed
    }
  } finally {
    child.stdin!.end()
    child.kill("SIGTERM")
  }
}

const main = async () => {
  console.log(`deflate memory: ${N} connections × one 4 KiB JSON message, then ${M} more each; Node ${process.version}`)
  const rows: Array<Row> = []
  rows.push(await measure("off", false))
  rows.push(await measure("deflate (defaults: level 1, window 15, memLevel 8)", true))
  rows.push(await measure("deflate, server_no_context_takeover", { serverNoContextTakeover: true }))
  const off = rows[0]!
  console.log("")
  console.log("| server | negotiated | RSS per connection | extra vs off | RSS left after close | server CPU per echo | echoes/s |")
  console.log("|---|---|---|---|---|---|---|")
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${r.negotiated} | ${r.perConnKiB.toFixed(1)} KiB | ${(r.perConnKiB - off.perConnKiB).toFixed(1)} KiB | ` +
        `${r.afterCloseMiB.toFixed(1)} MiB | ${r.cpuPerMsgUs.toFixed(0)} µs | ${r.msgsPerSec.toFixed(0)} |`
    )
  }
  console.log(`(server RSS at start of each run: ${rows.map((r) => r.baseMiB.toFixed(0) + " MiB").join(", ")})`)
}

const serveArg = arg("serve")
if (serveArg !== undefined) serve(JSON.parse(serveArg) as boolean | Partial<DeflateOptions>)
else await main()
