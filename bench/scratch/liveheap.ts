/**
 * The live heap of a Node peer after warm-up: starts bench/servers/<peer>.ts with --expose-gc,
 * runs an echo load (1 KiB, then 1 MiB messages), then asks it for `used` (bench/servers/lifeline.ts:
 * full GCs, then heapUsed). A full GC walks this heap, so it is what each large-message GC costs.
 *
 *   node bench/scratch/liveheap.ts [peer=wsreactor]
 */
import { spawn } from "node:child_process"
import { createInterface } from "node:readline"

const peer = process.argv[2] ?? "wsreactor"
const node = process.execPath
const server = spawn(node, ["--expose-gc", `bench/servers/${peer}.ts`, "--port", "0"], {
  stdio: ["pipe", "pipe", "inherit"]
})
const lines = createInterface({ input: server.stdout! })
const next = (prefix: string) =>
  new Promise<string>((resolve) => {
    const on = (line: string) => {
      if (!line.startsWith(prefix)) return
      lines.off("line", on)
      resolve(line.slice(prefix.length).trim())
    }
    lines.on("line", on)
  })
const port = Number(await next("READY"))
const load = (size: number) =>
  new Promise<void>((resolve) => {
    const options = { mode: "echo", host: "127.0.0.1", port, conns: 2, inflight: 1, size, binary: true, rampMs: 200, durationMs: 1500 }
    const lg = spawn(node, ["bench/loadgen.ts", JSON.stringify(options)], { stdio: ["pipe", "ignore", "inherit"] })
    lg.on("exit", () => resolve())
  })
await load(1024)
await load(1 << 20)
server.stdin!.write("used\n")
const used = JSON.parse(await next("USED")) as { heapUsed: number; external: number }
console.log(`${peer}: live heap ${(used.heapUsed / 1e6).toFixed(2)} MB, external ${(used.external / 1e6).toFixed(2)} MB`)
server.stdin!.end()
