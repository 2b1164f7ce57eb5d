/**
 * Client scenario: wsreactor's client (`Client.connect`) against the `ws`
 * client, both driving the same `ws` echo server (bench/servers/ws.ts, core 0)
 * from a separate process (core 1), rounds interleaved. Reports messages per
 * second and the client process's CPU time per message (user + system, from
 * `process.cpuUsage` over the measured window), and their ratios to the `ws`
 * client in the same run.
 *
 * Usage: node bench/client.ts [--quick] [--rounds=N] [--duration=MS]   (orchestrator; prints a markdown table)
 *        node bench/client.ts --role=ws|wsreactor '<json options>'    (one client run; prints a JSON line)
 * `npm run bench` runs it as the "client" scenario (`--only=client`).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import WebSocket from "ws"
import * as Client from "../src/services/Client.ts"

const root = fileURLToPath(new URL("../", import.meta.url))
const node = process.execPath
const HOST = "127.0.0.1"
const flag = (name: string) => process.argv.find((a) => a.startsWith(`--${name}`))?.split("=")[1] ?? (process.argv.includes(`--${name}`) ? "" : undefined)

interface RunOptions {
  readonly port: number
  /** wss:// to the server's node:https (the test certificate, trusted by both clients). */
  readonly tls: boolean
  readonly conns: number
  readonly inflight: number
  readonly size: number
  readonly rampMs: number
  readonly durationMs: number
}
interface RunResult {
  readonly msgsPerSec: number
  readonly cpuUsPerMsg: number
  readonly errors: number
}

// ---------------------------------------------------------------- one client run (child process)

/** Counts echoes; the window opens after the ramp and closes after `durationMs`. */
const makeWindow = (o: RunOptions) => {
  let counting = false
  let count = 0
  let stopping = false
  return {
    get stopping() {
      return stopping
    },
    record: () => {
      if (counting) count++
    },
    run: async (): Promise<RunResult & { readonly errors: number }> => {
      await new Promise((r) => setTimeout(r, o.rampMs))
      const cpu0 = process.cpuUsage()
      const t0 = performance.now()
      counting = true
      await new Promise((r) => setTimeout(r, o.durationMs))
      counting = false
      const cpu = process.cpuUsage(cpu0)
      const seconds = (performance.now() - t0) / 1000
      stopping = true
      return { msgsPerSec: count / seconds, cpuUsPerMsg: count > 0 ? (cpu.user + cpu.system) / count : NaN, errors: 0 }
    }
  }
}

const ca = readFileSync(new URL("../test/support/tls/cert.pem", import.meta.url))
const urlOf = (o: RunOptions) => `${o.tls ? "wss" : "ws"}://${HOST}:${o.port}/`

const runWs = async (o: RunOptions): Promise<RunResult> => {
  const w = makeWindow(o)
  const payload = new Uint8Array(o.size).fill(7)
  let errors = 0
  const sockets = await Promise.all(
    Array.from({ length: o.conns }, () =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(urlOf(o), { perMessageDeflate: false, ...(o.tls ? { ca } : {}) })
        ws.binaryType = "nodebuffer"
        ws.once("open", () => resolve(ws))
        ws.once("error", reject)
      }))
  )
  for (const ws of sockets) {
    ws.on("error", () => errors++)
    ws.on("message", (data: Buffer) => {
      if (data.length !== o.size) errors++
      w.record()
      if (!w.stopping) ws.send(data)
    })
    for (let i = 0; i < o.inflight; i++) ws.send(payload)
  }
  const result = await w.run()
  for (const ws of sockets) ws.terminate()
  return { ...result, errors }
}

const runWsreactor = (o: RunOptions): Promise<RunResult> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const w = makeWindow(o)
    const payload = new Uint8Array(o.size).fill(7)
    let errors = 0
    const conns = yield* Effect.forEach(
      Array.from({ length: o.conns }),
      () => Client.connect(urlOf(o), { heartbeatIntervalMs: 0, ...(o.tls ? { tls: { ca } } : {}) }),
      { concurrency: 50 }
    )
    for (const conn of conns) {
      yield* conn.messages.pipe(
        Stream.runForEach((m) => {
          if (m.data.length !== o.size) errors++
          w.record()
          return w.stopping ? Effect.void : Effect.ignore(conn.send(m.data))
        }),
        Effect.forkScoped
      )
      yield* Effect.ignore(conn.sendAll(Array.from({ length: o.inflight }, () => payload)))
    }
    const result = yield* Effect.promise(() => w.run())
    return { ...result, errors }
  })).pipe(Effect.timeout("60 seconds")))

// ---------------------------------------------------------------- orchestrator

interface Case {
  readonly name: string
  readonly title: string
  readonly conns: number
  readonly inflight: number
  readonly size: number
  readonly tls: boolean
}
const CASES: ReadonlyArray<Case> = [
  { name: "small", title: "100 conns × 10 in flight × 32 B binary", conns: 100, inflight: 10, size: 32, tls: false },
  { name: "1k", title: "100 conns × 1 in flight × 1 KiB binary", conns: 100, inflight: 1, size: 1024, tls: false },
  { name: "64k", title: "4 conns × 1 in flight × 64 KiB binary", conns: 4, inflight: 1, size: 65536, tls: false },
  { name: "wss-1k", title: "wss://, 100 conns × 1 in flight × 1 KiB binary", conns: 100, inflight: 1, size: 1024, tls: true },
  { name: "wss-64k", title: "wss://, 4 conns × 1 in flight × 64 KiB binary", conns: 4, inflight: 1, size: 65536, tls: true }
]
const CLIENTS = ["ws", "wsreactor"] as const

const pinning = existsSync("/usr/bin/taskset") || existsSync("/bin/taskset")
const pinned = (core: number, argv: ReadonlyArray<string>): Array<string> =>
  pinning ? ["taskset", "-c", String(core), ...argv] : [...argv]

const children = new Set<ChildProcess>()
const start = (argv: ReadonlyArray<string>): ChildProcess => {
  const child = spawn(argv[0]!, argv.slice(1), { cwd: root, stdio: ["pipe", "pipe", "pipe"] }) // the servers exit when their stdin closes (lifeline.ts)
  children.add(child)
  child.on("exit", () => children.delete(child))
  return child
}
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL")
})

const firstLine = (child: ChildProcess, timeoutMs: number): Promise<string> =>
  new Promise((resolve, reject) => {
    let out = ""
    let err = ""
    const timer = setTimeout(() => reject(new Error(`no output within ${timeoutMs} ms: ${err}`)), timeoutMs)
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()))
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString()
      const nl = out.indexOf("\n")
      if (nl >= 0) {
        clearTimeout(timer)
        resolve(out.slice(0, nl))
      }
    })
    child.once("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`exited (${code}): ${err.slice(-500)}`))
    })
  })

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)]!
}
const fmt = (x: number, digits = 0) => (Number.isFinite(x) ? x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "–")

/** Runs every case, both clients interleaved; returns the markdown lines (table and notes). */
export const runClientBench = async (options: { readonly quick: boolean; readonly rounds?: number; readonly durationMs?: number }) => {
  const rounds = options.rounds ?? (options.quick ? 1 : 3)
  const durationMs = options.durationMs ?? (options.quick ? 600 : 1500)
  const rampMs = options.quick ? 200 : 400
  const server = start(pinned(0, [node, "bench/servers/ws.ts"]))
  const tlsServer = start(pinned(0, [node, "bench/servers/ws.ts", "--tls"]))
  const port = Number((await firstLine(server, 15_000)).replace(/^READY\s+/, ""))
  const tlsPort = Number((await firstLine(tlsServer, 15_000)).replace(/^READY\s+/, ""))
  const lines = [
    "| case | client | msgs/s | client CPU µs/msg | msgs/s vs ws | CPU/msg vs ws | errors |",
    "|---|---|---:|---:|---:|---:|---:|"
  ]
  const ratios: Array<string> = []
  try {
    for (const c of CASES) {
      const runs: Record<string, Array<RunResult>> = { ws: [], wsreactor: [] }
      for (let r = 0; r < rounds; r++) {
        for (const client of r % 2 === 0 ? CLIENTS : [...CLIENTS].reverse()) {
          const o: RunOptions = {
            port: c.tls ? tlsPort : port,
            tls: c.tls,
            conns: c.conns,
            inflight: c.inflight,
            size: c.size,
            rampMs,
            durationMs
          }
          const child = start(pinned(1, [node, "bench/client.ts", `--role=${client}`, JSON.stringify(o)]))
          const line = await firstLine(child, durationMs + rampMs + 60_000)
          runs[client]!.push(JSON.parse(line) as RunResult)
          await new Promise((resolve) => (child.exitCode === null ? child.once("exit", resolve) : resolve(undefined)))
        }
      }
      const ws = { rate: median(runs.ws!.map((x) => x.msgsPerSec)), cpu: median(runs.ws!.map((x) => x.cpuUsPerMsg)) }
      for (const client of CLIENTS) {
        const rate = median(runs[client]!.map((x) => x.msgsPerSec))
        const cpu = median(runs[client]!.map((x) => x.cpuUsPerMsg))
        const errors = runs[client]!.reduce((n, x) => n + x.errors, 0)
        lines.push(`| ${c.name}: ${c.title} | ${client} | ${fmt(rate)} | ${fmt(cpu, 2)} | ${fmt(rate / ws.rate, 2)}x | ${fmt(cpu / ws.cpu, 2)}x | ${errors} |`)
        if (client === "wsreactor") ratios.push(`${c.name} ${fmt(rate / ws.rate, 2)}x msgs/s, ${fmt(cpu / ws.cpu, 2)}x CPU/msg`)
      }
    }
  } finally {
    server.kill("SIGKILL")
    tlsServer.kill("SIGKILL")
  }
  return {
    lines: [
      ...lines,
      "",
      `Server: the \`ws\` echo server (core 0; for wss://, on node:https with the test certificate); each client in its own process (core 1); ${rounds} round(s) × ${durationMs} ms, clients interleaved, medians.`,
      "\"CPU/msg vs ws\" below 1 means the wsreactor client is cheaper per echoed message than the `ws` client.",
      `wsreactor client vs ws client: ${ratios.join("; ")}`
    ]
  }
}

const role = flag("role")
if (role !== undefined) {
  const o = JSON.parse(process.argv[process.argv.length - 1]!) as RunOptions
  const result = await (role === "ws" ? runWs(o) : runWsreactor(o))
  console.log(JSON.stringify(result))
  process.exit(0)
} else if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { lines } = await runClientBench({
    quick: flag("quick") !== undefined,
    rounds: flag("rounds") === undefined ? undefined : Number(flag("rounds")),
    durationMs: flag("duration") === undefined ? undefined : Number(flag("duration"))
  })
  console.log(lines.join("\n"))
}
