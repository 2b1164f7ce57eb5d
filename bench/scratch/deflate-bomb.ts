// Scratch: how much memory one --deflate client can make the server hold by sending 64
// compressed messages that each inflate to 16 MiB to a handler that reads slowly.
//   node bench/scratch/deflate-bomb.ts [root of a wsreactor checkout]   (prints the server's peak RSS)
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { resolve } from "node:path"
import WebSocket from "ws"

const root = resolve(process.argv[2] ?? ".")
if (process.argv[3] === "--serve") {
  const { Effect, Stream } = await import("effect")
  const NodeTcp = await import(`${root}/src/layers/NodeTcp.ts`)
  const Server = await import(`${root}/src/services/Server.ts`)
  const { Transport } = await import(`${root}/src/services/Transport.ts`)
  const app = {
    http: () => Effect.succeed({ status: 404 }),
    upgrade: () => Effect.succeed({
      _tag: "Accept",
      // Busy for 2 s before its first read: all 64 messages are queued by then.
      handler: (conn: any) => Effect.andThen(Effect.sleep(2000), conn.messages.pipe(Stream.runForEach((m: any) => Effect.andThen(Effect.sleep(100), conn.send(new Uint8Array([m.data.length & 255]))))))
    })
  }
  await Effect.runPromise(Effect.gen(function*() {
    const t = yield* Transport
    console.log(`READY ${t.address.port}`)
    return yield* Server.serve(app as any, { perMessageDeflate: true })
  }).pipe(Effect.provide(NodeTcp.layer({ port: 0, host: "127.0.0.1" }))) as any)
} else {
  const child = spawn(process.execPath, [import.meta.filename, root, "--serve"], { stdio: ["pipe", "pipe", "inherit"] })
  const port = await new Promise<number>((ok) => child.stdout!.on("data", (d) => { const m = /READY (\d+)/.exec(String(d)); if (m) ok(Number(m[1])) }))
  const hwm = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))![1]) / 1024
  const before = hwm()
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: true })
  await new Promise((ok) => ws.on("open", ok))
  const big = new Uint8Array(16 * 1024 * 1024 - 16)
  for (let i = 0; i < 64; i++) ws.send(big, { binary: true, compress: true })
  let answers = 0
  ws.on("message", () => answers++)
  const start = Date.now()
  while (answers < 10 && Date.now() - start < 20000) await new Promise((r) => setTimeout(r, 200))
  console.log(`server peak RSS: ${before.toFixed(0)} MiB before, ${hwm().toFixed(0)} MiB after 64 compressed 16 MiB messages (${answers} answered in ${Date.now() - start} ms)`)
  ws.terminate()
  child.kill()
  process.exit(0)
}
