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
 *   options: --peer=wsreactor|ws|effect-ws|tcp  --conns=N  --warmup=N (200)  --top=N (15)  --closures=N (50)
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
  /** Closures by name and source location (`locations` gives script id, line, column; the script's name is its node's). */
  readonly closures: Map<string, { count: number; size: number }>
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
const readIntegers = <A extends Float64Array | Uint32Array>(buf: Buffer, from: number, out: A): A => {
  const expected = out.length
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
  if (n !== expected) throw new Error(`heap snapshot: expected ${expected} numbers, read ${n}`)
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
      return `(${type}) ${name}`.trim()
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
    snapshot: {
      meta: {
        node_fields: Array<string>
        node_types: [Array<string>, ...Array<unknown>]
        edge_fields: Array<string>
        edge_types: [Array<string>, ...Array<unknown>]
        location_fields: Array<string>
      }
      node_count: number
      edge_count: number
    }
  }).snapshot
  const fields = snapshot.meta.node_fields
  const width = fields.length
  const TYPE = fields.indexOf("type")
  const NAME = fields.indexOf("name")
  const SIZE = fields.indexOf("self_size")
  const types = snapshot.meta.node_types[0]
  const nodes = readIntegers(buf, nodesKey + 9, new Float64Array(snapshot.node_count * width))
  const edgesKey = buf.indexOf('"edges":[', nodesKey)
  const edges = readIntegers(buf, edgesKey + 9, new Uint32Array(snapshot.edge_count * snapshot.meta.edge_fields.length))
  const locationsKey = buf.indexOf('"locations":[', edgesKey)
  const locations = locationsKey < 0 ? new Float64Array(0) : (() => {
    const end = buf.indexOf("]", locationsKey)
    let commas = 0
    for (let i = locationsKey + 13; i < end; i++) if (buf[i] === 44) commas++
    return readIntegers(buf, locationsKey + 13, new Float64Array(end > locationsKey + 13 ? commas + 1 : 0))
  })()
  const stringsKey = buf.indexOf('"strings":[', locationsKey < 0 ? edgesKey : locationsKey)
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
  return { groups, closures: closuresByLocation(snapshot.meta, nodes, edges, locations, strings), nodes: snapshot.node_count, selfSize }
}

/** Closures grouped by `name file:line:column`; the file is the name of the script node reached by closure → shared → script. */
const closuresByLocation = (
  meta: {
    node_fields: Array<string>
    node_types: [Array<string>, ...Array<unknown>]
    edge_fields: Array<string>
    edge_types: [Array<string>, ...Array<unknown>]
    location_fields: Array<string>
  },
  nodes: Float64Array,
  edges: Uint32Array,
  locations: Float64Array,
  strings: Array<string>
): Map<string, { count: number; size: number }> => {
  const width = meta.node_fields.length
  const [TYPE, NAME, SIZE, EDGES] = ["type", "name", "self_size", "edge_count"].map((f) => meta.node_fields.indexOf(f))
  const edgeWidth = meta.edge_fields.length
  const [ETYPE, ENAME, ETO] = ["type", "name_or_index", "to_node"].map((f) => meta.edge_fields.indexOf(f))
  const numericEdge = new Set(["element", "hidden"].map((t) => meta.edge_types[0].indexOf(t)))
  const closureType = meta.node_types[0].indexOf("closure")
  // first edge of every node: edges are laid out node after node
  const firstEdge = new Uint32Array(nodes.length / width + 1)
  for (let n = 0; n < nodes.length / width; n++) firstEdge[n + 1] = firstEdge[n]! + nodes[n * width + EDGES!]! * edgeWidth
  const follow = (node: number, name: string): number | undefined => {
    const n = node / width
    for (let e = firstEdge[n]!; e < firstEdge[n + 1]!; e += edgeWidth) {
      if (!numericEdge.has(edges[e + ETYPE!]!) && strings[edges[e + ENAME!]!] === name) return edges[e + ETO!]!
    }
    return undefined
  }
  const scripts = new Map<number, string>()
  const fileOf = (scriptId: number, closure: number): string => {
    let file = scripts.get(scriptId)
    if (file === undefined) {
      const shared = follow(closure, "shared")
      const script = shared === undefined ? undefined : follow(shared, "script")
      file = script === undefined ? `script ${scriptId}` : shortFile(strings[nodes[script + NAME!]!] ?? "")
      scripts.set(scriptId, file)
    }
    return file
  }
  const locWidth = meta.location_fields.length
  const [OBJ, SCRIPT, LINE, COLUMN] = ["object_index", "script_id", "line", "column"].map((f) => meta.location_fields.indexOf(f))
  const closures = new Map<string, { count: number; size: number }>()
  for (let l = 0; l < locations.length; l += locWidth) {
    const node = locations[l + OBJ!]!
    if (nodes[node + TYPE!] !== closureType) continue
    const name = strings[nodes[node + NAME!]!] || "anonymous"
    const key = `${name} ${fileOf(locations[l + SCRIPT!]!, node)}:${locations[l + LINE!]! + 1}:${locations[l + COLUMN!]! + 1}`
    const size = nodes[node + SIZE!]!
    const g = closures.get(key)
    if (g) {
      g.count++
      g.size += size
    } else closures.set(key, { count: 1, size })
  }
  return closures
}

/** A script name as a reader wants it: relative to the repository, node_modules/ dropped. */
const shortFile = (name: string): string => {
  const path = name.startsWith("file://") ? fileURLToPath(name) : name
  const rel = path.startsWith(root) ? relative(root, path) : path
  const modules = rel.lastIndexOf("node_modules/")
  return modules >= 0 ? rel.slice(modules + 13) : rel
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
  topClosures: number,
  memory?: { base: Memory; loaded: Memory }
): string => {
  const per = (a: number, b: number) => (a - b) / conns
  const growth = (before: Summary["groups"], after: Summary["groups"], top: number) => {
    const rows = [...after].map(([key, g]) => {
      const b = before.get(key) ?? { count: 0, size: 0 }
      return { key, count: g.count, size: g.size, dCount: per(g.count, b.count), dSize: per(g.size, b.size) }
    })
    return rows.filter((r) => r.dSize > 0).sort((a, b) => b.dSize - a.dSize).slice(0, top)
  }
  const cell = (s: string) => s.replaceAll("|", "\\|").slice(0, 110)
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
    ...growth(base.groups, loaded.groups, top).map((r, i) =>
      `| ${i + 1} | ${cell(r.key)} | ${r.count} | ${fmt(r.dCount, 2)} | ${fmt(r.size / 1e6, 2)} | ${fmt(r.dSize)} |`
    ),
    "",
    `Closures by source location (self size only; each also holds a share of its \`system / Context\`):`,
    "",
    `| # | closure | count | Δ count / conn | Δ self B / conn |`,
    `|---:|---|---:|---:|---:|`,
    ...growth(base.closures, loaded.closures, topClosures).map((r, i) =>
      `| ${i + 1} | ${cell(r.key)} | ${r.count} | ${fmt(r.dCount, 2)} | ${fmt(r.dSize)} |`
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
  const topClosures = Number(arg("closures") ?? 50)
  const parse = arg("parse")?.split(",")
  if (parse) {
    console.log(report(peer, conns, summarize(parse[0]!), summarize(parse[1]!), top, topClosures))
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
  const text = report(peer, held.opened, summarize(baseFile), summarize(loadedFile), top, topClosures, {
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
