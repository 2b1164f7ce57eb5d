// Scratch (issue 10, finding 10): is the RSS growth after connect/close churn a leak or allocator retention?
//   node --expose-gc bench/scratch/churn-memory.ts [cycles=5000] [rounds=2]
// Server in this process (the demo echo app, deflate on half the clients); clients in a child process.
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import WebSocket from "ws"
import { echoApp } from "../../src/Demo.ts"
import { startServer } from "../../test/support/TcpServer.ts"

if (process.argv[2] === "--client") {
  const port = Number(process.argv[3]); const cycles = Number(process.argv[4])
  let done = 0
  const one = (i: number) => new Promise<void>((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: i % 2 === 0 })
    ws.on("error", () => resolve())
    ws.on("open", () => ws.send("x".repeat(2048)))
    ws.on("message", () => ws.close())
    ws.on("close", () => resolve())
  })
  const worker = async () => { while (done < cycles) { done++; await one(done) } }
  await Promise.all(Array.from({ length: 50 }, worker))
  process.exit(0)
}
const cycles = Number(process.argv[2] ?? 5000)
const rounds = Number(process.argv[3] ?? 2)
const server = await startServer(echoApp, { perMessageDeflate: true })
const gc = (globalThis as { gc?: () => void }).gc!
const mib = (n: number) => (n / 1048576).toFixed(1)
const snap = async (label: string) => {
  for (let i = 0; i < 3; i++) { gc(); await new Promise((r) => setTimeout(r, 100)) }
  const m = process.memoryUsage()
  console.log(`${label.padEnd(18)} rss=${mib(m.rss)} heapUsed=${mib(m.heapUsed)} heapTotal=${mib(m.heapTotal)} external=${mib(m.external)} arrayBuffers=${mib(m.arrayBuffers)} MiB`)
}
await snap("baseline")
for (let r = 1; r <= rounds; r++) {
  await new Promise<void>((resolve) => spawn(process.execPath, [fileURLToPath(import.meta.url), "--client", String(server.port), String(cycles)], { stdio: "inherit" }).on("exit", () => resolve()))
  await snap(`after ${r}x${cycles}`)
  await new Promise((r) => setTimeout(r, 2000))
  await snap(`  idle 2s`)
}
await server.close()
process.exit(0)
