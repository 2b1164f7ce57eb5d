/**
 * CPU profile of one bench peer under one load, summarised by self time.
 *
 *   node bench/scratch/profile.ts <server.ts> '<json LoadOptions>' [seconds] [--gc]
 *   e.g. node bench/scratch/profile.ts bench/servers/wsreactor.ts '{"conns":100,"inflight":1,"size":1024,"binary":true}' 5
 *
 * The server runs on core 0 with --cpu-prof (and --trace-gc with --gc), the
 * load generator on core 1; prints the top functions by self time (with
 * their file), the share of GC / idle / program, and the messages served.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"

const [serverFile, loadJson = "{}", secondsArg = "5"] = process.argv.slice(2).filter((a) => !a.startsWith("--"))
const traceGc = process.argv.includes("--gc")
if (serverFile === undefined) throw new Error("usage: profile.ts <server.ts> '<json load>' [seconds]")
const dir = mkdtempSync(join(tmpdir(), "wsr-prof-"))
const node = process.execPath

const server = spawn("taskset", [
  "-c",
  "0",
  node,
  "--cpu-prof",
  `--cpu-prof-dir=${dir}`,
  ...(traceGc ? ["--trace-gc"] : []),
  serverFile
], { stdio: ["pipe", "pipe", "inherit"] })
let gcLines = 0
let gcMs = 0
const gcKinds = new Map<string, { n: number; ms: number }>()
const port = await new Promise<number>((resolve) => {
  createInterface({ input: server.stdout! }).on("line", (line) => {
    const m = /^READY (\d+)/.exec(line)
    if (m) return resolve(Number(m[1]))
    // V8 13: "Mark-Compact 11.9 (13.5) -> 10.8 (13.0) MB, pooled: 0.0 MB, 3.45 / 0.00 ms (...) <reason>"
    const g = /(Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Sweep)\b.*?([\d.]+) \/ [\d.]+ ms.*?\)\s*(.*)$/.exec(line)
    if (g) {
      gcLines++
      gcMs += Number(g[2])
      const key = `${g[1]}: ${g[3]!.replace(/[\d.]+/g, "#")}`
      const k = gcKinds.get(key) ?? { n: 0, ms: 0 }
      k.n++
      k.ms += Number(g[2])
      gcKinds.set(key, k)
    }
  })
})

const load = {
  mode: "echo",
  host: "127.0.0.1",
  port,
  conns: 100,
  inflight: 1,
  size: 1024,
  binary: true,
  rampMs: 300,
  durationMs: Number(secondsArg) * 1000,
  ...JSON.parse(loadJson)
}
const gen = spawn("taskset", ["-c", "1", node, "bench/loadgen.ts", JSON.stringify(load)], {
  stdio: ["pipe", "pipe", "inherit"]
})
let result: { msgsPerSec: number; messages: number } | undefined
createInterface({ input: gen.stdout! }).on("line", (line) => {
  const o = JSON.parse(line)
  if (o.event === "result") result = o
})
await new Promise((r) => gen.on("exit", r))
server.stdin!.end()
await new Promise((r) => server.on("exit", r))

const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"))!
interface Node {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount: number
}
const profile = JSON.parse(readFileSync(join(dir, file), "utf8")) as {
  nodes: Array<Node>
  samples: Array<number>
  timeDeltas: Array<number>
}
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const self = new Map<string, number>()
let total = 0
for (let i = 0; i < profile.samples.length; i++) {
  const n = byId.get(profile.samples[i]!)!
  const dt = profile.timeDeltas[i] ?? 0
  const url = n.callFrame.url.replace(/^.*\/(node_modules\/[^/]+(\/[^/]+)?|src|bench)\//, "$1/")
  const key = `${n.callFrame.functionName || "(anon)"} ${url}:${n.callFrame.lineNumber + 1}`
  self.set(key, (self.get(key) ?? 0) + dt)
  total += dt
}
// INCL=fnA,fnB: inclusive time of those functions (samples with them anywhere on the stack).
const parent = new Map<number, number>()
for (const n of profile.nodes as Array<Node & { children?: Array<number> }>) {
  for (const c of n.children ?? []) parent.set(c, n.id)
}
const inclusive = new Map<string, number>()
const wanted = (process.env.INCL ?? "").split(",").filter((s) => s.length > 0)
if (wanted.length > 0) {
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i] ?? 0
    const seen = new Set<string>()
    for (let id: number | undefined = profile.samples[i]!; id !== undefined; id = parent.get(id)) {
      const name = byId.get(id)!.callFrame.functionName
      if (wanted.includes(name) && !seen.has(name)) {
        seen.add(name)
        inclusive.set(name, (inclusive.get(name) ?? 0) + dt)
      }
    }
  }
}
const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.TOP ?? 40))
const idle = [...self.entries()].filter(([k]) => k.startsWith("(idle)")).reduce((s, [, v]) => s + v, 0)
console.log(`messages/s ${result?.msgsPerSec.toFixed(0)}; profile ${(total / 1e6).toFixed(2)} s, busy ${(100 * (1 - idle / total)).toFixed(1)} %`)
if (traceGc) {
  console.log(`gc events ${gcLines}, gc ms ${gcMs.toFixed(0)} (main thread, whole run)`)
  for (const [kind, k] of [...gcKinds].sort((a, b) => b[1].ms - a[1].ms)) {
    console.log(`  ${String(k.n).padStart(6)} × ${(k.ms / k.n).toFixed(2).padStart(7)} ms  ${kind}`)
  }
}
for (const [k, v] of top) console.log(`${(100 * v / (total - idle)).toFixed(2).padStart(6)} %  ${k}`)
const busy = total - [...self.entries()].filter(([k]) => k.startsWith("(idle)")).reduce((a, [, v]) => a + v, 0)
// Messages in the profile ≈ rate × (ramp + window): enough to compare peers per message.
const perMsg = (us: number) => result === undefined ? "?" : (us / (result.msgsPerSec * (load.rampMs + load.durationMs) / 1000)).toFixed(3)
console.log(`busy µs/msg ${perMsg(busy)}; self µs/msg: ${top.slice(0, 6).map(([k, v]) => `${k.split(" ")[0]} ${perMsg(v)}`).join(", ")}`)
for (const name of wanted) console.log(`inclusive ${name}: ${(100 * (inclusive.get(name) ?? 0) / busy).toFixed(2)} % (${perMsg(inclusive.get(name) ?? 0)} µs/msg)`)
// CALLERS=fn: who calls it (parent frames of its self time).
const callersOf = process.env.CALLERS
if (callersOf !== undefined) {
  const by = new Map<string, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    const n = byId.get(profile.samples[i]!)!
    if (n.callFrame.functionName !== callersOf) continue
    const chain: Array<string> = []
    for (let id = parent.get(n.id); id !== undefined && chain.length < 4; id = parent.get(id)) {
      const f = byId.get(id)!.callFrame
      chain.push(`${f.functionName || "(anon)"}:${f.url.split("/").pop()}:${f.lineNumber + 1}`)
    }
    const key = chain.join(" < ")
    by.set(key, (by.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  for (const [k, v] of [...by].sort((a, b) => b[1] - a[1]).slice(0, 8)) console.log(`callers ${(100 * v / busy).toFixed(2)} %  ${k}`)
}
// ROOTS=1: time under each top-level entry (the event loop's callbacks), µs per message.
if (process.env.ROOTS !== undefined) {
  const rootOf = new Map<string, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    let id: number = profile.samples[i]!
    let below = id
    for (let p = parent.get(id); p !== undefined; p = parent.get(p)) {
      below = id
      id = p
    }
    const f = byId.get(below)!.callFrame
    const key = `${f.functionName || "(anon)"} ${f.url.split("/").pop()}:${f.lineNumber + 1}`
    rootOf.set(key, (rootOf.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  for (const [k, v] of [...rootOf].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`root ${perMsg(v).padStart(8)} µs/msg  ${k}`)
}
