/**
 * Benchmark orchestrator: starts each peer (echo server) as a child process,
 * drives it with bench/loadgen.ts in another process, samples the server's
 * CPU and memory from /proc, interleaves peers round by round and reports
 * medians with min–max.
 *
 *   npm run bench                      full run (updates docs/BENCHMARKS.md)
 *   npm run bench -- --quick           smoke run, under 2 minutes
 *   npm run bench -- --only=echo-binary,latency --peers=ws,bun
 *   npm run bench -- --only=fanout-cross,echo-workers   scale-out only (Redis, --workers)
 *   extra: --rounds=N --duration=MS --docs (also write docs/BENCHMARKS.md)
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { dirname, join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { runClientBench } from "./client.ts"
import type { LoadOptions, LoadResult } from "./loadgen.ts"
import { cpuMicros, machine, peakRssBytes, processTree, resetPeakRss, rssBytes } from "./proc.ts"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const HOST = "127.0.0.1"

// ---------------------------------------------------------------- options

const args = process.argv.slice(2)
const flag = (name: string): string | undefined =>
  args.find((a) => a === `--${name}` || a.startsWith(`--${name}=`))?.split("=")[1] ?? (args.includes(`--${name}`) ? "" : undefined)
const list = (name: string): Array<string> | undefined => flag(name)?.split(",").filter((s) => s.length > 0)

const quick = flag("quick") !== undefined
const config = {
  quick,
  rounds: Number(flag("rounds") ?? (quick ? 2 : 5)),
  durationMs: Number(flag("duration") ?? (quick ? 700 : 1500)),
  rampMs: quick ? 200 : 400,
  /** One unrecorded run per peer before a scenario's rounds (quick: the ramp of round 1 warms up). */
  warmupMs: quick ? 0 : 500,
  idleConns: quick ? 2000 : 10_000,
  subscribers: quick ? 200 : 1000,
  /** Many-to-many fan-out: this many publishers and as many subscribers. */
  manyToMany: quick ? 50 : 100
}

// ---------------------------------------------------------------- peers

interface Peer {
  readonly name: string
  /** Command line; `port` is only used by peers that cannot print READY. */
  readonly command: (port: number) => ReadonlyArray<string> | string
  /** True: prints "READY <port>" when listening; false: poll-connect the given port. */
  readonly printsReady: boolean
  readonly fanout: boolean
  /** The plain TCP ceiling: raw records, no WebSocket. */
  readonly raw?: boolean
}

const node = process.execPath
const bunBinary = [join(root, "node_modules/.bin/bun"), join(root, "node_modules/bun/bin/bun.exe")].find((p) =>
  existsSync(p) && spawnSync(p, ["--version"], { encoding: "utf8" }).status === 0
)
const bunVersion = bunBinary ? spawnSync(bunBinary, ["--version"], { encoding: "utf8" }).stdout.trim() : undefined

const PEERS: ReadonlyArray<Peer> = [
  { name: "tcp", command: () => [node, "bench/servers/tcp.ts"], printsReady: true, fanout: false, raw: true },
  { name: "ws", command: () => [node, "bench/servers/ws.ts"], printsReady: true, fanout: true },
  { name: "effect-ws", command: () => [node, "bench/servers/effect-ws.ts"], printsReady: true, fanout: true },
  {
    name: "bun",
    command: () => (bunBinary ? [bunBinary, "bench/servers/bun.ts"] : "bun binary does not run"),
    printsReady: true,
    fanout: true
  },
  {
    name: "wsreactor",
    command: () => [node, "bench/servers/wsreactor.ts"],
    printsReady: true,
    fanout: true
  }
]

// ---------------------------------------------------------------- scenarios

type Kind = "echo" | "handshake" | "idle" | "fanout"

interface Scenario {
  readonly name: string
  readonly title: string
  readonly kind: Kind
  readonly load: Partial<LoadOptions>
  /** The TCP ceiling only makes sense where there is an equivalent byte stream. */
  readonly withTcp: boolean
  readonly rounds?: number
}

const SCENARIOS: ReadonlyArray<Scenario> = [
  {
    name: "echo-text",
    title: "small echo, text: 100 conns × 10 in flight × 32 B",
    kind: "echo",
    load: { conns: 100, inflight: 10, size: 32, binary: false },
    withTcp: false
  },
  {
    name: "echo-binary",
    title: "small echo, binary: 100 conns × 10 in flight × 32 B",
    kind: "echo",
    load: { conns: 100, inflight: 10, size: 32, binary: true },
    withTcp: true
  },
  {
    name: "latency",
    title: "latency: 1 conn × 1 in flight × 32 B",
    kind: "echo",
    load: { conns: 1, inflight: 1, size: 32, binary: true },
    withTcp: true
  },
  {
    name: "echo-1k",
    title: "1 KiB echo, binary: 100 conns × 1 in flight × 1 KiB",
    kind: "echo",
    load: { conns: 100, inflight: 1, size: 1024, binary: true },
    withTcp: true
  },
  {
    name: "large-1m",
    title: "large: 2 conns × 1 in flight × 1 MiB binary",
    kind: "echo",
    load: { conns: 2, inflight: 1, size: 1 << 20, binary: true },
    withTcp: true
  },
  {
    name: "large-16m",
    title: "large: 1 conn × 1 in flight × 16 MiB binary",
    kind: "echo",
    load: { conns: 1, inflight: 1, size: 16 << 20, binary: true },
    withTcp: false
  },
  {
    name: "handshake",
    title: "handshakes: 50 parallel × (connect, upgrade, close handshake)",
    kind: "handshake",
    load: { conns: 50 },
    withTcp: false
  },
  {
    name: "idle",
    title: `idle: ${config.idleConns} open connections, RSS and server CPU per connection setup`,
    kind: "idle",
    load: { conns: config.idleConns },
    withTcp: true,
    rounds: quick ? 1 : 3
  },
  {
    name: "fanout",
    title: `fan-out: 1 publisher → ${config.subscribers} subscribers, 10 in flight × 32 B`,
    kind: "fanout",
    load: { conns: config.subscribers, inflight: 10, size: 32, binary: true, path: "/fanout" },
    withTcp: false
  },
  {
    name: "fanout-many",
    title: `fan-out: ${config.manyToMany} publishers → ${config.manyToMany} subscribers, 1 in flight each × 32 B`,
    kind: "fanout",
    load: {
      conns: config.manyToMany,
      publishers: config.manyToMany,
      inflight: 1,
      size: 32,
      binary: true,
      path: "/fanout"
    },
    withTcp: false
  }
]

// ---------------------------------------------------------------- processes

const children = new Set<ChildProcess>()
const pinning = existsSync("/usr/bin/taskset") || existsSync("/bin/taskset")
const cores = machine().cores
/** Server on core 0, load generator on core 1 (when there are two cores and taskset). */
const pinned = (core: number, argv: ReadonlyArray<string>): Array<string> =>
  pinning && cores >= 2 ? ["taskset", "-c", String(core), ...argv] : [...argv]

const start = (argv: ReadonlyArray<string>, stdout: "pipe" | "ignore"): ChildProcess => {
  const child = spawn(argv[0]!, argv.slice(1), { cwd: root, stdio: ["pipe", stdout, "pipe"] })
  children.add(child)
  child.on("exit", () => children.delete(child))
  child.stdin?.on("error", () => {})
  return child
}

const killAll = () => {
  for (const c of children) c.kill("SIGKILL")
}
process.on("exit", killAll)
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    killAll()
    process.exit(130)
  })
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
/** A timeout for races: unref'd, so it never keeps the bench alive once everything else is done. */
const after = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref())

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once("error", reject)
    s.listen(0, HOST, () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })

const canConnect = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.connect({ host: HOST, port })
    s.once("connect", () => {
      s.destroy()
      resolve(true)
    })
    s.once("error", () => resolve(false))
  })

interface Server {
  readonly child: ChildProcess
  readonly pid: number
  readonly port: number
  /** The server's stdout lines, for peers that print READY (and answer lifeline commands). */
  readonly lines: ReturnType<typeof createInterface> | undefined
}

interface HeapSpaces {
  readonly young: { readonly size: number; readonly physical: number }
  readonly old: { readonly size: number; readonly physical: number }
}

/** V8's generations in a Node peer (the lifeline's `spaces` command); undefined for others (Bun, no answer in 1 s). */
const heapSpaces = (server: Server): Promise<HeapSpaces | undefined> => {
  const lines = server.lines
  if (lines === undefined || server.child.stdin === null) return Promise.resolve(undefined)
  return new Promise((resolve) => {
    const done = (value: HeapSpaces | undefined) => {
      lines.off("line", onLine)
      resolve(value)
    }
    const onLine = (line: string) => {
      if (line.startsWith("SPACES ")) done(JSON.parse(line.slice(7)) as HeapSpaces)
    }
    lines.on("line", onLine)
    server.child.stdin!.write("spaces\n")
    void after(1000).then(() => done(undefined))
  })
}

/** The most telling line of a child's stderr: the first error line, else the last line. */
const tail = (chunks: Array<string>): string => {
  const lines = chunks.join("").split("\n").map((l) => l.trim()).filter((l) => l.length > 0)
  return (lines.find((l) => /Error\b|error:/.test(l)) ?? lines.at(-1) ?? "").replaceAll("|", "/").slice(0, 200)
}

/** Starts a peer and waits until it listens; a string is the reason it is not available. */
const startServer = async (peer: Peer): Promise<Server | string> => {
  const wanted = peer.printsReady ? 0 : await freePort()
  const command = peer.command(wanted)
  if (typeof command === "string") return command
  const child = start(pinned(0, command), peer.printsReady ? "pipe" : "ignore")
  const stderr: Array<string> = []
  child.stderr!.on("data", (d: Buffer) => {
    stderr.push(d.toString())
    if (stderr.length > 20) stderr.shift()
  })
  const exited = new Promise<string>((r) => child.once("exit", (code) => r(`exited (${code}): ${tail(stderr)}`)))
  const lines = peer.printsReady ? createInterface({ input: child.stdout! }) : undefined
  const ready = lines !== undefined
    ? new Promise<number>((resolve) => {
      lines.on("line", (line) => {
        const m = /^READY (\d+)/.exec(line)
        if (m) resolve(Number(m[1]))
      })
    })
    : (async () => {
      for (let i = 0; i < 200 && child.exitCode === null; i++) {
        if (await canConnect(wanted)) return wanted
        await sleep(50)
      }
      return -1
    })()
  const outcome = await Promise.race([ready, exited, after(15_000).then(() => "did not start in 15 s")])
  if (typeof outcome === "string" || outcome < 0) {
    child.kill("SIGKILL")
    return typeof outcome === "string" ? outcome : "port never accepted a connection"
  }
  return { child, pid: child.pid!, port: outcome, lines }
}

const stopServer = async (server: Server): Promise<void> => {
  if (server.child.exitCode !== null) return
  const gone = new Promise((r) => server.child.once("exit", r))
  server.child.kill("SIGTERM")
  await Promise.race([gone, after(2000)])
  server.child.kill("SIGKILL")
}

// ---------------------------------------------------------------- one run

interface Run {
  readonly msgsPerSec: number
  readonly mbPerSec: number
  readonly p50ms: number
  readonly p99ms: number
  /**
   * Server CPU (user+system, all threads) per message over the measured window;
   * idle: per connection, from the first connect to the RSS sample (all upgraded and settled).
   */
  readonly cpuUsPerMsg: number
  readonly peakRssMB: number
  readonly loadgenCpuPct: number
  readonly loadgenUsPerMsg: number
  readonly errors: number
  /** idle only */
  readonly kbPerConn?: number
  readonly opened?: number
  /** idle, Node peers: V8's young generation (resident MB) and old generation growth (KiB per connection) at the sample. */
  readonly youngMB?: number
  readonly oldKbPerConn?: number
}

/**
 * Runs one load generator against a live server and samples the server around the window.
 * `cpu`: the server side's CPU time in µs (default: the server process; scale-out sums several).
 */
const runLoad = async (
  server: Server,
  options: LoadOptions,
  cpu: () => number = () => cpuMicros(server.pid)
): Promise<Run | string> => {
  // Idle: V8's generations before and at the sample show where the memory per connection goes.
  const spaces0 = options.mode === "idle" ? await heapSpaces(server) : undefined
  return runLoadFrom(server, options, cpu, spaces0)
}

const runLoadFrom = (
  server: Server,
  options: LoadOptions,
  cpu: () => number,
  spaces0: HeapSpaces | undefined
): Promise<Run | string> =>
  new Promise((resolve) => {
    resetPeakRss(server.pid)
    const rss0 = rssBytes(server.pid)
    const lg = start(pinned(1, [node, "bench/loadgen.ts", JSON.stringify(options)]), "pipe")
    let cpuAtStart = NaN
    let serverCpu = NaN
    let peak = NaN
    let rssOpen = NaN
    let setupCpu = NaN
    let spacesOpen: HeapSpaces | undefined
    let opened = 0
    let result: LoadResult | undefined
    let failure: string | undefined
    const stderr: Array<string> = []
    lg.stderr!.on("data", (d: Buffer) => stderr.push(d.toString()))
    const lines = createInterface({ input: lg.stdout! })
    lines.on("line", (line) => {
      let event: { event: string; opened?: number; message?: string }
      try {
        event = JSON.parse(line)
      } catch {
        return
      }
      if (event.event === "start") cpuAtStart = cpu()
      else if (event.event === "opened") {
        opened = event.opened ?? 0
        // let the server settle, then sample and release the connections
        void sleep(500).then(async () => {
          rssOpen = rssBytes(server.pid)
          setupCpu = cpu() - cpuAtStart
          if (spaces0 !== undefined) spacesOpen = await heapSpaces(server)
          lg.stdin!.write("close\n")
        })
      } else if (event.event === "result") {
        result = event as unknown as LoadResult
        serverCpu = cpu() - cpuAtStart
        peak = peakRssBytes(server.pid)
      } else if (event.event === "error") failure = event.message
    })
    const timer = setTimeout(() => lg.kill("SIGKILL"), options.durationMs! + (options.rampMs ?? 0) + 90_000)
    lg.once("exit", () => {
      clearTimeout(timer)
      if (result === undefined) return resolve(failure ?? `load generator failed: ${tail(stderr)}`)
      const r = result
      resolve({
        msgsPerSec: r.msgsPerSec,
        mbPerSec: r.mbPerSec,
        p50ms: r.p50us / 1000,
        p99ms: r.p99us / 1000,
        cpuUsPerMsg: options.mode === "idle"
          ? (opened > 0 ? setupCpu / opened : NaN)
          : r.messages > 0
          ? serverCpu / r.messages
          : NaN,
        peakRssMB: peak / 1e6,
        loadgenCpuPct: r.loadgenCpuPct,
        loadgenUsPerMsg: r.loadgenUsPerMsg,
        errors: r.errors + (server.child.exitCode !== null ? 1 : 0), // a dead server counts as an error
        ...(options.mode === "idle" ? { kbPerConn: opened > 0 ? (rssOpen - rss0) / 1024 / opened : NaN, opened } : {}),
        ...(spaces0 !== undefined && spacesOpen !== undefined && opened > 0
          ? {
            youngMB: spacesOpen.young.physical / 1e6,
            oldKbPerConn: (spacesOpen.old.physical - spaces0.old.physical) / 1024 / opened
          }
          : {})
      })
    })
  })

const loadOptions = (scenario: Scenario, peer: Peer, server: Server, durationMs: number): LoadOptions => ({
  mode: scenario.kind,
  host: HOST,
  port: server.port,
  conns: 1,
  ...scenario.load,
  ...(peer.raw ? { raw: true } : {}),
  rampMs: config.rampMs,
  durationMs
})

// ---------------------------------------------------------------- statistics

type Stat = { readonly median: number; readonly min: number; readonly max: number }
const stat = (xs: ReadonlyArray<number>): Stat => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return { median: NaN, min: NaN, max: NaN }
  const mid = s.length >> 1
  return { median: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, min: s[0]!, max: s[s.length - 1]! }
}

const METRICS = [
  "msgsPerSec",
  "mbPerSec",
  "p50ms",
  "p99ms",
  "cpuUsPerMsg",
  "peakRssMB",
  "loadgenCpuPct",
  "loadgenUsPerMsg",
  "kbPerConn",
  "youngMB",
  "oldKbPerConn"
] as const
type Metric = (typeof METRICS)[number]

interface PeerResult {
  readonly runs: Array<Run>
  readonly failures: Array<string>
  stats?: Partial<Record<Metric, Stat>>
  errors?: number
  na?: string
}

// ---------------------------------------------------------------- scenario loop

const runScenario = async (scenario: Scenario, peers: ReadonlyArray<Peer>): Promise<Record<string, PeerResult>> => {
  const results: Record<string, PeerResult> = {}
  const eligible = peers.filter((p) => {
    const reason = p.raw && !scenario.withTcp
      ? "not applicable"
      : scenario.kind === "fanout" && !p.fanout
      ? "no fan-out route"
      : undefined
    results[p.name] = { runs: [], failures: [], ...(reason ? { na: reason } : {}) }
    return reason === undefined
  })
  const fresh = scenario.kind === "idle" // RSS per connection needs a server with no history
  const servers = new Map<string, Server>()
  const serverFor = async (peer: Peer): Promise<Server | undefined> => {
    const existing = servers.get(peer.name)
    if (existing && existing.child.exitCode === null && !fresh) return existing
    if (existing) await stopServer(existing)
    const s = await startServer(peer)
    if (typeof s === "string") {
      results[peer.name]!.na = s
      return undefined
    }
    servers.set(peer.name, s)
    if (fresh) await sleep(300)
    return s
  }
  try {
    if (!fresh) await Promise.all(eligible.map(serverFor))
    if (config.warmupMs > 0 && !fresh) {
      for (const peer of eligible) {
        const s = servers.get(peer.name)
        if (s) await runLoad(s, loadOptions(scenario, peer, s, config.warmupMs))
      }
    }
    const rounds = Math.min(config.rounds, scenario.rounds ?? config.rounds)
    for (let round = 0; round < rounds; round++) {
      for (const peer of eligible) {
        const r = results[peer.name]!
        if (r.na !== undefined && r.runs.length === 0) continue
        const s = await serverFor(peer)
        if (!s) continue
        const run = await runLoad(s, loadOptions(scenario, peer, s, config.durationMs))
        if (typeof run === "string") r.failures.push(run)
        else r.runs.push(run)
        process.stdout.write(".")
      }
    }
  } finally {
    await Promise.all([...servers.values()].map(stopServer))
  }
  for (const r of Object.values(results)) {
    if (r.runs.length === 0) {
      r.na ??= r.failures[0] ?? "no run"
      continue
    }
    delete r.na
    r.stats = Object.fromEntries(METRICS.map((m) => [m, stat(r.runs.map((run) => run[m] ?? NaN))]))
    r.errors = r.runs.reduce((n, run) => n + run.errors, 0)
  }
  return results
}

// ---------------------------------------------------------------- report

/** The metric that ranks peers in a scenario, and whether higher is better. */
const primary = (kind: Kind): { metric: Metric; label: string; higher: boolean } =>
  kind === "idle"
    ? { metric: "kbPerConn", label: "KiB/conn", higher: false }
    : kind === "handshake"
    ? { metric: "msgsPerSec", label: "handshakes/s", higher: true }
    : kind === "fanout"
    ? { metric: "msgsPerSec", label: "deliveries/s", higher: true }
    : { metric: "msgsPerSec", label: "msgs/s", higher: true }

const fmt = (x: number | undefined, digits = 3): string => {
  if (x === undefined || !Number.isFinite(x)) return "–"
  const a = Math.abs(x)
  if (a >= 1e6) return `${(x / 1e6).toFixed(2)}M`
  if (a >= 1e4) return `${(x / 1e3).toFixed(1)}k`
  return a >= 100 ? x.toFixed(0) : x.toPrecision(digits)
}
const withRange = (s: Stat | undefined): string =>
  s && Number.isFinite(s.median) ? `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})` : "–"
const ratio = (a: number | undefined, b: number | undefined): string =>
  a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : "–"

/** Load generator CPU % from which a result is marked † (load-generator-bound). */
const LOADGEN_BOUND = 90

const tableFor = (scenario: Scenario, results: Record<string, PeerResult>): Array<string> => {
  const p = primary(scenario.kind)
  const idle = scenario.kind === "idle"
  const head = [
    "peer",
    `${p.label} median (min–max)`,
    ...(idle ? ["young gen MB", "old gen KiB/conn", "srv CPU µs/conn setup"] : ["MB/s", "p50 ms", "p99 ms", "srv CPU µs/msg"]),
    "srv peak RSS MB",
    ...(idle ? ["opened", "loadgen CPU µs/conn"] : ["loadgen CPU % (µs/msg)"]),
    "vs ws",
    "vs bun",
    idle ? "CPU/conn vs ws" : "CPU/msg vs ws"
  ]
  const med = (peer: string, m: Metric) => results[peer]?.stats?.[m]?.median
  const rows = Object.entries(results).map(([peer, r]) => {
    if (r.stats === undefined) return [peer, `n/a: ${r.na ?? ""}`.slice(0, 80), ...head.slice(2).map(() => "")]
    const s = r.stats
    // A saturated load generator means the peer could go faster: the number is a lower bound.
    const bound = !idle && (s.loadgenCpuPct?.median ?? 0) >= LOADGEN_BOUND ? " †" : ""
    return [
      peer + (r.errors ? ` (${r.errors} err)` : ""),
      withRange(s[p.metric]) + bound,
      ...(idle
        ? [fmt(s.youngMB?.median), fmt(s.oldKbPerConn?.median), fmt(s.cpuUsPerMsg?.median)]
        : [fmt(s.mbPerSec?.median), fmt(s.p50ms?.median), fmt(s.p99ms?.median), fmt(s.cpuUsPerMsg?.median)]),
      fmt(s.peakRssMB?.median),
      ...(idle
        ? [fmt(r.runs[0]?.opened), fmt(s.loadgenUsPerMsg?.median)]
        : [`${fmt(s.loadgenCpuPct?.median, 2)} (${fmt(s.loadgenUsPerMsg?.median, 2)})`]),
      ratio(med(peer, p.metric), med("ws", p.metric)),
      ratio(med(peer, p.metric), med("bun", p.metric)),
      ratio(med(peer, "cpuUsPerMsg"), med("ws", "cpuUsPerMsg"))
    ]
  })
  return [
    `| ${head.join(" | ")} |`,
    `|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`)
  ]
}

// ---------------------------------------------------------------- scale-out (issue 11)
// Two scenarios outside the peer matrix: each compares wsreactor set-ups with one another
// in the same run, not with the other peers (`--only=fanout-cross,echo-workers` selects them;
// `--peers` without wsreactor skips them).
//   fanout-cross: 1 publisher on node A, subscribers spread over nodes A and B (two
//     bench/servers/wsreactor.ts processes with `--redis`, one redis-server started here on a
//     free loopback port and stopped after), against the same fan-out on one node with the
//     in-memory broker. Skipped, saying so, when redis-server is not installed.
//   echo-workers: the program (src/main.ts) with --workers 2 against --workers 1 on the small
//     echo; server CPU is the sum over the primary and its workers (/proc).

/** One set-up of a scale scenario, running: where the load generator connects, and its CPU. */
interface ScaleSetup {
  readonly server: Server
  /** Extra load options (the subscribers' ports). */
  readonly options: Partial<LoadOptions>
  /** Server-side CPU time (µs) over every process of the set-up. */
  readonly cpu: () => number
  /** Of `cpu`, the part spent by redis-server (for its share of the server side's CPU). */
  readonly redisCpu?: () => number
  readonly stop: () => Promise<void>
}

interface ScaleScenario {
  readonly name: string
  readonly title: string
  readonly kind: Kind
  readonly load: Partial<LoadOptions>
  readonly rows: ReadonlyArray<{ readonly label: string; readonly start: () => Promise<ScaleSetup | string> }>
  /** Why the scenario cannot run on this machine, else undefined. */
  readonly unavailable?: () => string | undefined
  readonly rounds?: number
  /** Printed under the table: what is measured and how. */
  readonly note: string
}

const redisAvailable = (): boolean => spawnSync("redis-server", ["--version"], { encoding: "utf8" }).status === 0

/** A redis-server of our own: free loopback port, no persistence, on the server core. */
const startRedis = async (): Promise<{ child: ChildProcess; port: number; url: string } | string> => {
  const port = await freePort()
  const child = start(
    pinned(0, ["redis-server", "--port", String(port), "--bind", HOST, "--save", "", "--appendonly", "no"]),
    "pipe"
  )
  const ready = new Promise<boolean>((resolve) => {
    let out = ""
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString()
      if (out.includes("Ready to accept connections")) resolve(true)
    })
  })
  const outcome = await Promise.race([
    ready,
    new Promise<string>((r) => child.once("exit", (code) => r(`redis-server exited (${code})`))),
    after(10_000).then(() => "redis-server did not start in 10 s")
  ])
  if (typeof outcome === "string") {
    child.kill("SIGKILL")
    return outcome
  }
  return { child, port, url: `redis://${HOST}:${port}` }
}

const benchPeer = (extra: ReadonlyArray<string> = []): Peer => ({
  name: "wsreactor",
  command: () => [node, "bench/servers/wsreactor.ts", ...extra],
  printsReady: true,
  fanout: true
})

const oneNode = async (): Promise<ScaleSetup | string> => {
  const s = await startServer(benchPeer())
  return typeof s === "string" ? s : { server: s, options: {}, cpu: () => cpuMicros(s.pid), stop: () => stopServer(s) }
}

const twoNodesOnRedis = async (): Promise<ScaleSetup | string> => {
  const redis = await startRedis()
  if (typeof redis === "string") return redis
  const killRedis = async () => {
    const gone = new Promise((r) => redis.child.once("exit", r))
    if (redis.child.exitCode === null) redis.child.kill("SIGKILL")
    await Promise.race([gone, after(2000)])
  }
  const [a, b] = await Promise.all([startServer(benchPeer(["--redis", redis.url])), startServer(benchPeer(["--redis", redis.url]))])
  if (typeof a === "string" || typeof b === "string") {
    await Promise.all([a, b].map((s) => (typeof s === "string" ? undefined : stopServer(s))))
    await killRedis()
    return `node ${typeof a === "string" ? "A" : "B"}: ${typeof a === "string" ? a : b}`
  }
  return {
    server: a,
    options: { subscriberPorts: [a.port, b.port] },
    cpu: () => cpuMicros(a.pid) + cpuMicros(b.pid) + cpuMicros(redis.child.pid!),
    redisCpu: () => cpuMicros(redis.child.pid!),
    stop: async () => {
      await Promise.all([stopServer(a), stopServer(b)])
      await killRedis()
    }
  }
}

/**
 * The program as users run it: `src/main.ts --workers N` on a free port, ready when N workers
 * log "listening on". Not pinned: two workers pinned to one core would measure nothing.
 */
const program = (workers: number) => async (): Promise<ScaleSetup | string> => {
  const port = await freePort()
  const child = start([node, "src/main.ts", "--port", String(port), "--host", HOST, "--workers", String(workers)], "pipe")
  const stderr: Array<string> = []
  let listening = 0
  const ready = new Promise<void>((resolve) => {
    const onLine = (line: string) => {
      if (line.includes("listening on") && ++listening === workers) resolve()
    }
    createInterface({ input: child.stdout! }).on("line", onLine)
    createInterface({ input: child.stderr! }).on("line", (line) => {
      stderr.push(line + "\n")
      if (stderr.length > 20) stderr.shift()
      onLine(line)
    })
  })
  const outcome = await Promise.race([
    ready,
    new Promise<string>((r) => child.once("exit", (code) => r(`exited (${code}): ${tail(stderr)}`))),
    after(30_000).then(() => `${listening} of ${workers} workers listening after 30 s`)
  ])
  const server: Server = { child, pid: child.pid!, port, lines: undefined }
  if (typeof outcome === "string") {
    await stopServer(server)
    return outcome
  }
  return {
    server,
    options: {},
    cpu: () => processTree(server.pid).reduce((sum, pid) => sum + cpuMicros(pid), 0),
    stop: () => stopServer(server)
  }
}

const SCALE_SCENARIOS: ReadonlyArray<ScaleScenario> = [
  {
    name: "fanout-cross",
    title: `cross-process fan-out: 1 publisher on node A → ${config.subscribers} subscribers over nodes A and B ` +
      "on one Redis, 10 in flight × 32 B",
    kind: "fanout",
    load: { conns: config.subscribers, inflight: 10, size: 32, binary: true, path: "/fanout" },
    rows: [
      { label: "1 node, memory broker", start: oneNode },
      { label: "2 nodes, Redis broker", start: twoNodesOnRedis }
    ],
    unavailable: () =>
      redisAvailable() ? undefined : "skipped: redis-server not installed (bash scripts/ensure-redis.sh installs Debian's package)",
    rounds: quick ? 1 : undefined,
    note:
      "bench/servers/wsreactor.ts; subscribers alternate between A and B, the publisher is on A; a message counts when every " +
      "subscriber has it. Server CPU sums node A, node B and redis-server (all on the server core); 2 nodes: 2 processes " +
      "share that one core, so deliveries/s shows the cost of the hop, not the gain of a second machine."
  },
  {
    name: "echo-workers",
    title: "cluster: small echo, binary, 100 conns × 10 in flight × 32 B against `src/main.ts --workers 1` and `--workers 2`",
    kind: "echo",
    load: { conns: 100, inflight: 10, size: 32, binary: true, path: "/echo" },
    rows: [
      { label: "program, --workers 1", start: program(1) },
      { label: "program, --workers 2", start: program(2) }
    ],
    rounds: quick ? 1 : undefined,
    note:
      "The program (metrics, admission, logging at info) unpinned, the load generator on core 1. Server CPU sums the " +
      "primary and its workers from /proc. The load generator shares the cores with the workers: on a 2-core machine " +
      "a second worker competes with it, so msgs/s is a floor for what two cores serve."
  }
]

/** Per set-up and run: redis-server's share (%) of the server side's CPU over the whole run (setup included). */
const redisShares = new Map<string, Array<number>>()

const runScale = async (scenario: ScaleScenario): Promise<Record<string, PeerResult>> => {
  const results: Record<string, PeerResult> = {}
  for (const row of scenario.rows) results[row.label] = { runs: [], failures: [] }
  const skip = scenario.unavailable?.()
  if (skip !== undefined) {
    for (const r of Object.values(results)) r.na = skip
    return results
  }
  const setups = new Map<string, ScaleSetup>()
  const options = (setup: ScaleSetup, durationMs: number): LoadOptions => ({
    mode: scenario.kind,
    host: HOST,
    port: setup.server.port,
    conns: 1,
    ...scenario.load,
    ...setup.options,
    rampMs: config.rampMs,
    durationMs
  })
  try {
    for (const row of scenario.rows) {
      const s = await row.start()
      if (typeof s === "string") results[row.label]!.na = s
      else setups.set(row.label, s)
    }
    if (config.warmupMs > 0) {
      for (const s of setups.values()) await runLoad(s.server, options(s, config.warmupMs), s.cpu)
    }
    const rounds = Math.min(config.rounds, scenario.rounds ?? config.rounds)
    for (let round = 0; round < rounds; round++) {
      for (const [label, s] of setups) {
        const cpu0 = s.cpu()
        const redis0 = s.redisCpu?.() ?? NaN
        const run = await runLoad(s.server, options(s, config.durationMs), s.cpu)
        if (typeof run === "string") results[label]!.failures.push(run)
        else results[label]!.runs.push(run)
        if (s.redisCpu !== undefined) {
          const shares = redisShares.get(label) ?? []
          shares.push(((s.redisCpu() - redis0) / (s.cpu() - cpu0)) * 100)
          redisShares.set(label, shares)
        }
        process.stdout.write(".")
      }
    }
  } finally {
    await Promise.all([...setups.values()].map((s) => s.stop()))
  }
  for (const r of Object.values(results)) {
    if (r.runs.length === 0) {
      r.na ??= r.failures[0] ?? "no run"
      continue
    }
    r.stats = Object.fromEntries(METRICS.map((m) => [m, stat(r.runs.map((run) => run[m] ?? NaN))]))
    r.errors = r.runs.reduce((n, run) => n + run.errors, 0)
  }
  return results
}

const scaleTable = (scenario: ScaleScenario, results: Record<string, PeerResult>): Array<string> => {
  const p = primary(scenario.kind)
  const base = scenario.rows[0]!.label
  const head = [
    "set-up",
    `${p.label} median (min–max)`,
    "p50 ms",
    "p99 ms",
    "srv CPU µs/msg",
    "srv CPU % of a core",
    "redis % of srv CPU",
    "loadgen CPU %",
    `vs ${base}`,
    "CPU/msg vs it"
  ]
  const med = (row: string, m: Metric) => results[row]?.stats?.[m]?.median
  const rows = Object.entries(results).map(([row, r]) => {
    if (r.stats === undefined) return [row, `n/a: ${r.na ?? ""}`.slice(0, 120), ...head.slice(2).map(() => "")]
    const s = r.stats
    const bound = (s.loadgenCpuPct?.median ?? 0) >= LOADGEN_BOUND ? " †" : ""
    const cpuPct = stat(r.runs.map((run) => (run.cpuUsPerMsg * run.msgsPerSec) / 1e4)).median
    return [
      row + (r.errors ? ` (${r.errors} err)` : ""),
      withRange(s[p.metric]) + bound,
      fmt(s.p50ms?.median),
      fmt(s.p99ms?.median),
      fmt(s.cpuUsPerMsg?.median),
      fmt(cpuPct),
      fmt(stat(redisShares.get(row) ?? []).median, 2),
      fmt(s.loadgenCpuPct?.median, 2),
      ratio(med(row, p.metric), med(base, p.metric)),
      ratio(med(row, "cpuUsPerMsg"), med(base, "cpuUsPerMsg"))
    ]
  })
  return [
    `| ${head.join(" | ")} |`,
    `|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
    "",
    scenario.note
  ]
}

const main = async () => {
  const onlyNames = list("only")
  const peerNames = list("peers")
  const scenarios = SCENARIOS.filter((s) => !onlyNames || onlyNames.includes(s.name))
  const peers = PEERS.filter((p) => !peerNames || peerNames.includes(p.name))
  const scale = SCALE_SCENARIOS.filter((s) =>
    (!onlyNames || onlyNames.includes(s.name)) && (!peerNames || peerNames.includes("wsreactor"))
  )
  // The client scenario (bench/client.ts) drives one server with two clients: it has no peers.
  const withClient = !onlyNames || onlyNames.includes("client")
  if ((scenarios.length === 0 && scale.length === 0 && !withClient) || (scenarios.length > 0 && peers.length === 0)) {
    console.error(
      `nothing to run; scenarios: ${[...SCENARIOS, ...SCALE_SCENARIOS].map((s) => s.name)}, client; peers: ${PEERS.map((p) => p.name)}`
    )
    process.exit(2)
  }
  const m = machine()
  const started = Date.now()
  const meta = {
    date: new Date().toISOString(),
    cpu: m.cpu,
    cores: m.cores,
    node: process.version,
    bun: bunVersion ?? "n/a",
    pinned: pinning && m.cores >= 2 ? "server on core 0, load generator on core 1 (taskset)" : "no pinning",
    command: `npm run bench${args.length ? ` -- ${args.join(" ")}` : ""}`,
    config
  }
  console.log(`wsreactor bench: ${meta.cpu}, ${meta.cores} cores, Node ${meta.node}, Bun ${meta.bun}; ${meta.pinned}`)
  console.log(`${config.rounds} rounds × ${config.durationMs} ms per peer and scenario, peers interleaved\n`)

  const report: Array<{ scenario: Scenario; results: Record<string, PeerResult> }> = []
  const markdown: Array<string> = []
  for (const scenario of scenarios) {
    process.stdout.write(`${scenario.name}: ${scenario.title} `)
    const results = await runScenario(scenario, peers)
    report.push({ scenario, results })
    const table = [`### ${scenario.name}: ${scenario.title}`, "", ...tableFor(scenario, results), ""]
    markdown.push(...table)
    console.log(`\n${table.slice(2).join("\n")}\n`)
  }
  const scaleReport: Array<{ scenario: ScaleScenario; results: Record<string, PeerResult> }> = []
  for (const scenario of scale) {
    process.stdout.write(`${scenario.name}: ${scenario.title} `)
    const results = await runScale(scenario)
    scaleReport.push({ scenario, results })
    const table = [`### ${scenario.name}: ${scenario.title}`, "", ...scaleTable(scenario, results), ""]
    markdown.push(...table)
    console.log(`\n${table.slice(2).join("\n")}\n`)
  }
  if (withClient) {
    const title = "client: the wsreactor client vs the ws client, against the ws echo server"
    process.stdout.write(`client: ${title}\n`)
    const { lines } = await runClientBench({ quick, rounds: flag("rounds") === undefined ? undefined : config.rounds })
    markdown.push(`### ${title}`, "", ...lines, "")
    console.log(`\n${lines.join("\n")}\n`)
  }
  const seconds = (Date.now() - started) / 1000
  console.log(`done in ${seconds.toFixed(0)} s`)

  mkdirSync(join(root, "bench/results"), { recursive: true })
  writeFileSync(
    join(root, "bench/results/latest.json"),
    JSON.stringify(
      {
        ...meta,
        seconds,
        scenarios: report.map(({ scenario, results }) => ({ ...scenario, results })),
        scaleOut: scaleReport.map(({ scenario, results }) => ({ name: scenario.name, title: scenario.title, load: scenario.load, results }))
      },
      null,
      2
    )
  )
  const doc = renderDoc(meta, markdown, seconds)
  writeFileSync(join(root, "bench/results/latest.md"), doc)
  // Only a full, unfiltered run replaces the published numbers (or --docs).
  if ((!quick && !onlyNames && !peerNames && flag("rounds") === undefined && flag("duration") === undefined) || flag("docs") !== undefined) {
    writeFileSync(join(root, "docs/BENCHMARKS.md"), doc)
    console.log("wrote docs/BENCHMARKS.md")
  }
  console.log("wrote bench/results/latest.json and bench/results/latest.md")
}

const renderDoc = (meta: Record<string, unknown>, tables: Array<string>, seconds: number): string =>
  [
    "# Benchmarks",
    "",
    "Generated by `bench/run.ts`; do not edit by hand. Every peer is an echo server started by the bench on 127.0.0.1;",
    "the load generator (`bench/loadgen.ts`) is a separate process on raw `node:net` sockets with pre-encoded masked frames.",
    "",
    `- Date: ${meta.date}`,
    `- Machine: ${meta.cpu}, ${meta.cores} logical cores; ${meta.pinned}`,
    `- Node ${meta.node}, Bun ${meta.bun}; ws 8.23 with bufferutil and utf-8-validate; no compression anywhere`,
    `- Command: \`${meta.command}\` (${(meta.config as typeof config).rounds} rounds × ${(meta.config as typeof config).durationMs} ms, peers interleaved; took ${seconds.toFixed(0)} s)`,
    "- Reproduce: `npm install && npm run bench` (full) or `npm run bench -- --quick`; filters: `--only=<scenario,...>`, `--peers=<peer,...>`",
    "",
    "How to read: medians over rounds, (min–max) for the primary metric. MB/s counts echoed payload bytes in one direction.",
    "Latency is from a timestamp written into each payload by the load generator to the reply's arrival.",
    "Server CPU µs/msg is user+system time of the server process (all threads, from /proc/PID/stat) over the measured",
    "window divided by the messages in it (handshakes, deliveries). Peak RSS is VmHWM (reset before each run).",
    "Idle: KiB/conn is the server's RSS growth with N connections open (fresh server, read 500 ms after the last upgrade),",
    "and srv CPU µs/conn setup its CPU time from the first connect to that same reading, divided by N (accept, upgrade",
    "and any deferred per-connection work, GC included); loadgen CPU µs/conn is the client's cost of opening them.",
    "Young gen MB and old gen KiB/conn (Node peers) split that memory at the same moment: V8's young generation (resident",
    "pages; it grows with what survives collections during set-up, and does not shrink while nothing allocates) and",
    "the old generation's growth per connection, which holds what each connection keeps.",
    "\"vs ws\" and \"vs bun\" are ratios of the primary metric (for idle: memory per connection, lower is better);",
    "\"CPU/msg vs ws\" below 1 means cheaper than ws. `tcp` is a plain TCP echo without WebSocket framing: the ceiling,",
    "which shows what the load generator can drive. \"loadgen CPU % (µs/msg)\" is the generator's own cost;",
    `† marks a result where the generator ran at ≥ ${LOADGEN_BOUND} % of its core: the peer may be faster than shown.`,
    "With one core per side, a Node client cannot outrun Bun, nor fan-out from ws-based servers (one segment per",
    "delivery): there, compare server CPU per message, which does not depend on the load.",
    "",
    ...tables
  ].join("\n")

main().catch((err: unknown) => {
  console.error(err)
  killAll()
  process.exit(1)
})
