/**
 * What one idle connection keeps on the server's V8 heap, by constructor.
 *
 * Starts a Node peer (bench/servers/<peer>.ts, with --expose-gc), opens and
 * closes a warm-up batch (so code compiled on the first connection is not
 * counted per connection), takes a baseline heap snapshot, opens N idle
 * upgraded connections with bench/loadgen.ts (idle mode), takes a second
 * snapshot, and prints the heap growth grouped by constructor: count, self
 * size, and self size per connection (growth over the baseline ÷ N), plus the
 * totals per connection (snapshot self sizes, heapUsed, external).
 * The snapshots are taken in the server by bench/servers/lifeline.ts (a
 * `heap <file>` line on its stdin: full GC, then v8.writeHeapSnapshot) and
 * parsed here (the .heapsnapshot format: meta.node_fields, nodes, strings).
 *
 *   npm run bench:heap -- --peer=wsreactor --conns=10000
 *   options: --peer=wsreactor|ws|effect-ws|tcp  --conns=N  --warmup=N (200)  --top=N (15)
 *            --parse=<a.heapsnapshot>,<b.heapsnapshot>  only compare two existing snapshots (--conns for ÷ N)
 *
 * Writes bench/results/heap-<peer>-{0,N}.heapsnapshot and heap-<peer>-<N>.md (git-ignored).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdirSync, openSync, readSync, closeSync, fstatSync, writeFileSync } from "node:fs"
import { dirname, join, relative } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import type { LoadOptions } from "./loadgen.ts"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const HOST = "127.0.0.1"
const arg = (name: string): string | undefined =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)

const PEERS = ["wsreactor", "ws", "effect-ws", "tcp"]

// ---------------------------------------------------------------- snapshot parsing

/** Totals of one snapshot grouped by constructor (or by a DevTools-like category for non-objects). */
interface Summary {
  readonly groups: Map<string, { count: number; size: number }>
  readonly nodes: number
  readonly selfSize: number
}

/** Reads a whole file into one Buffer (snapshots can exceed the 512 MB string limit, so never as one string). */
const readAll = (file: string): Buffer => {
  const fd = openSync(file, "r")
  try {
    const size = fstatSync(fd).size
    const buf = Buffer.allocUnsafe(size)
    let at = 0
    while (at < size) at += readSync(fd, buf, at, size - at, at)
    return buf
  } finally {
    closeSync(fd)
  }
}

/** Non-negative integers of a JSON array starting at `from` (just after "["), up to its "]". */
const readIntegers = (buf: Buffer, from: number, expected: number): Float64Array => {
  const out = new Float64Array(expected)
  let n = 0
  let value = 0
  let inNumber = false
  for (let i = from; i < buf.length; i++) {
    const c = buf[i]!
    if (c >= 48 && c <= 57) {
      value = value * 10 + (c - 48)
      inNumber = true
    } else {
      if (inNumber) {
        out[n++] = value
        value = 0
        inNumber = false
      }
      if (c === 93) break // "]"
    }
  }
  if (n !== expected) throw new Error(`heap snapshot: expected ${expected} node fields, read ${n}`)
  return out
}

/** The group a node counts under: an object's constructor name; otherwise its kind, as in DevTools' summary. */
const groupOf = (type: string, name: string): string => {
  switch (type) {
    case "object":
    case "native":
      return name
    case "closure":
      return `(closure) ${name || "anonymous"}`
    case "hidden":
      return name.startsWith("system /") ? name : `(system) ${name}`
    case "array":
    case "object shape":
      return `(${type}) ${name}`
    case "string":
    case "concatenated string":
    case "sliced string":
      return "(string)"
    case "code":
      return "(compiled code)"
    case "number":
      return "(heap number)"
    default:
      return `(${type})`
  }
}

const summarize = (file: string): Summary => {
  const buf = readAll(file)
  const nodesKey = buf.indexOf('"nodes":[')
  if (nodesKey < 0) throw new Error(`${file}: not a heap snapshot (no "nodes")`)
  const head = buf.toString("utf8", 0, nodesKey).trimEnd().replace(/,$/, "") + "}"
  const snapshot = (JSON.parse(head) as {
    snapshot: { meta: { node_fields: Array<string>; node_types: [Array<string>, ...Array<unknown>] }; node_count: number }
  }).snapshot
  const fields = snapshot.meta.node_fields
  const width = fields.length
  const TYPE = fields.indexOf("type")
  const NAME = fields.indexOf("name")
  const SIZE = fields.indexOf("self_size")
  const types = snapshot.meta.node_types[0]
  const nodes = readIntegers(buf, nodesKey + 9, snapshot.node_count * width)
  const stringsKey = buf.indexOf('"strings":[', nodesKey)
  const stringsEnd = buf.lastIndexOf("]")
  const strings = JSON.parse(buf.toString("utf8", stringsKey + 10, stringsEnd + 1)) as Array<string>
  const groups = new Map<string, { count: number; size: number }>()
  let selfSize = 0
  for (let i = 0; i < nodes.length; i += width) {
    const size = nodes[i + SIZE]!
    const key = groupOf(types[nodes[i + TYPE]!] ?? "?", strings[nodes[i + NAME]!] ?? "?")
    const g = groups.get(key)
    if (g) {
      g.count++
      g.size += size
    } else groups.set(key, { count: 1, size })
    selfSize += size
  }
  return { groups, nodes: snapshot.node_count, selfSize }
}

// ---------------------------------------------------------------- report

interface Memory {
  readonly heapUsed: number
  readonly external: number
  readonly arrayBuffers: number
}

const fmt = (x: number, digits = 1): string =>
  Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(digits) : x.toFixed(digits + 1)

const report = (
  peer: string,
  conns: number,
  base: Summary,
  loaded: Summary,
  top: number,
  memory?: { base: Memory; loaded: Memory }
): string => {
  const per = (a: number, b: number) => (a - b) / conns
  const rows = [...loaded.groups].map(([key, g]) => {
    const b = base.groups.get(key) ?? { count: 0, size: 0 }
    return { key, count: g.count, size: g.size, dCount: per(g.count, b.count), dSize: per(g.size, b.size) }
  })
  rows.sort((a, b) => b.dSize - a.dSize)
  const cell = (s: string) => s.replaceAll("|", "\\|").slice(0, 70)
  const lines = [
    `### ${peer}: ${conns} idle connections, heap growth over a baseline with 0 connections`,
    "",
    `Snapshot self sizes: ${fmt(base.selfSize / 1e6)} MB (${base.nodes} nodes) → ${fmt(loaded.selfSize / 1e6)} MB (${loaded.nodes} nodes): ` +
      `**${fmt(per(loaded.selfSize, base.selfSize))} B per connection**, ${fmt(per(loaded.nodes, base.nodes))} heap objects per connection.`,
    ...(memory
      ? [
        `process.memoryUsage() after GC, per connection: heapUsed ${fmt(per(memory.loaded.heapUsed, memory.base.heapUsed))} B, ` +
        `external ${fmt(per(memory.loaded.external, memory.base.external))} B ` +
        `(of which ArrayBuffers ${fmt(per(memory.loaded.arrayBuffers, memory.base.arrayBuffers))} B). ` +
        "(RSS per connection: `npm run bench -- --only=idle`.)"
      ]
      : []),
    "",
    `| # | constructor | count | Δ count / conn | self size MB | Δ self B / conn |`,
    `|---:|---|---:|---:|---:|---:|`,
    ...rows.slice(0, top).map((r, i) =>
      `| ${i + 1} | ${cell(r.key)} | ${r.count} | ${fmt(r.dCount, 2)} | ${fmt(r.size / 1e6, 2)} | ${fmt(r.dSize)} |`
    ),
    ""
  ]
  return lines.join("\n")
}

// ---------------------------------------------------------------- processes

const node = process.execPath
const children = new Set<ChildProcess>()
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL")
})
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

const spawnChild = (argv: Array<string>): { child: ChildProcess; line: (test: RegExp) => Promise<string> } => {
  const child = spawn(argv[0]!, argv.slice(1), { cwd: root, stdio: ["pipe", "pipe", "inherit"] })
  children.add(child)
  child.on("exit", () => children.delete(child))
  const waiting: Array<{ test: RegExp; resolve: (l: string) => void }> = []
  createInterface({ input: child.stdout! }).on("line", (l) => {
    const i = waiting.findIndex((w) => w.test.test(l))
    if (i >= 0) waiting.splice(i, 1)[0]!.resolve(l)
  })
  const died = new Promise<never>((_, reject) =>
    child.once("exit", (code) => reject(new Error(`${argv.slice(1).join(" ")} exited (${code})`)))
  )
  died.catch(() => {})
  return { child, line: (test) => Promise.race([new Promise<string>((resolve) => waiting.push({ test, resolve })), died]) }
}

const snapshot = async (server: ReturnType<typeof spawnChild>, file: string): Promise<Memory> => {
  const t0 = Date.now()
  server.child.stdin!.write(`heap ${file}\n`)
  const reply = await server.line(/^HEAP /)
  process.stdout.write(` snapshot ${relative(root, file)} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`)
  return JSON.parse(reply.slice(5)) as Memory
}

/** Opens `conns` idle connections from a load generator process; `release` closes them. */
const openIdle = async (port: number, conns: number, raw: boolean): Promise<{ opened: number; release: () => Promise<void> }> => {
  const options: LoadOptions = { mode: "idle", host: HOST, port, conns, raw, durationMs: 0, holdMs: 30 * 60_000 }
  const lg = spawnChild([node, "bench/loadgen.ts", JSON.stringify(options)])
  const opened = JSON.parse(await lg.line(/"event":"opened"/)) as { opened: number; failed: number }
  if (opened.failed > 0) console.log(` (${opened.failed} connections failed)`)
  return {
    opened: opened.opened,
    release: async () => {
      const gone = new Promise((r) => lg.child.once("exit", r))
      lg.child.stdin!.write("close\n")
      await gone
    }
  }
}

const main = async () => {
  const peer = arg("peer") ?? "wsreactor"
  const conns = Number(arg("conns") ?? 10_000)
  const warmup = Number(arg("warmup") ?? 200)
  const top = Number(arg("top") ?? 15)
  const parse = arg("parse")?.split(",")
  if (parse) {
    console.log(report(peer, conns, summarize(parse[0]!), summarize(parse[1]!), top))
    return
  }
  if (!PEERS.includes(peer)) throw new Error(`--peer: one of ${PEERS.join(", ")} (Node peers only)`)
  const dir = join(root, "bench/results")
  mkdirSync(dir, { recursive: true })
  const server = spawnChild([node, "--expose-gc", `bench/servers/${peer}.ts`])
  const port = Number((await server.line(/^READY \d+/)).split(" ")[1])
  console.log(`${peer} on port ${port}; ${warmup} warm-up connections, then ${conns}`)
  if (warmup > 0) {
    const w = await openIdle(port, warmup, peer === "tcp")
    await sleep(300)
    await w.release()
    await sleep(1000) // let the server run every close and finalizer
  }
  const baseFile = join(dir, `heap-${peer}-0.heapsnapshot`)
  const baseMemory = await snapshot(server, baseFile)
  const t0 = Date.now()
  const held = await openIdle(port, conns, peer === "tcp")
  console.log(` ${held.opened} connections open in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  await sleep(1000)
  const loadedFile = join(dir, `heap-${peer}-${conns}.heapsnapshot`)
  const loadedMemory = await snapshot(server, loadedFile)
  await held.release()
  server.child.kill("SIGTERM")
  const t1 = Date.now()
  const text = report(peer, held.opened, summarize(baseFile), summarize(loadedFile), top, {
    base: baseMemory,
    loaded: loadedMemory
  })
  console.log(` parsed in ${((Date.now() - t1) / 1000).toFixed(1)} s\n\n${text}`)
  const out = join(dir, `heap-${peer}-${conns}.md`)
  writeFileSync(out, text)
  console.log(`wrote ${relative(root, out)}`)
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err)
    process.exit(1)
  }
)
