// Scratch: compressed echo latency of one light connection while F flood connections
// pipeline large compressed messages (issue 10, finding 4). Server in-process, loopback.
//   node bench/scratch/zlib-fairness.ts [floods=4] [seconds=5] [floodKiB=1024]
import * as net from "node:net"
import * as zlib from "node:zlib"
import { randomBytes } from "node:crypto"
import WebSocket from "ws"
import { monitorEventLoopDelay } from "node:perf_hooks"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { App } from "../../src/services/Reactor.ts"
import { startServer } from "../../test/support/TcpServer.ts"
import { encodeFrame, Opcode, Rsv } from "../../test/conformance/RawClient.ts"

const floods = Number(process.argv[2] ?? 4)
const seconds = Number(process.argv[3] ?? 5)
const floodKiB = Number(process.argv[4] ?? 1024)

const echoApp: App<never> = {
  http: () => Effect.succeed({ status: 404 }),
  upgrade: () => Effect.succeed({ _tag: "Accept", handler: (c) => c.messages.pipe(Stream.runForEach((m) => c.send(m))) })
}
const server = await startServer(echoApp, { perMessageDeflate: { level: Number(process.env.LEVEL ?? 1), concurrency: Number(process.env.CONC ?? 4) }, maxMessageSize: 64 * 1024 * 1024 })

// compressible but not trivial: hex of random bytes
const big = Buffer.from(randomBytes(floodKiB * 512).toString("hex"))
const deflated = zlib.deflateRawSync(big, { finishFlush: zlib.constants.Z_SYNC_FLUSH })
const payload = deflated.subarray(0, deflated.length - 4)
const frame = process.env.PLAIN ? encodeFrame({ opcode: Opcode.binary, payload: big, mask: true } as any) : encodeFrame({ opcode: Opcode.binary, payload, rsv: Rsv.rsv1, mask: true } as any)

const sockets: Array<net.Socket> = []
let floodEchoBytes = 0
const startFlood = () => new Promise<void>((resolve, reject) => {
  const s = net.connect(server.port, "127.0.0.1")
  sockets.push(s)
  let open = false
  s.on("error", () => {})
  s.on("connect", () => s.write(`GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n`))
  s.on("data", (d) => {
    floodEchoBytes += d.length
    if (!open) {
      if (!d.toString("latin1").includes("permessage-deflate")) reject(new Error("no deflate"))
      open = true
      const pump = () => { while (s.write(frame)) {} }
      s.on("drain", pump)
      pump()
      resolve()
    }
  })
})

const light = new WebSocket(`ws://127.0.0.1:${server.port}/`, { perMessageDeflate: { threshold: 0 } })
await new Promise((r) => light.once("open", r))
const msg = JSON.stringify(Array.from({ length: 60 }, (_, i) => ({ i, user: `u${i % 7}`, text: "hello there" })))
const measure = async (ms: number) => {
  const lat: Array<number> = []
  const end = Date.now() + ms
  while (Date.now() < end) {
    const t = performance.now()
    await new Promise((r) => { light.once("message", r); light.send(msg) })
    lat.push(performance.now() - t)
    await new Promise((r) => setTimeout(r, 10))
  }
  lat.sort((a, b) => a - b)
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!.toFixed(1)
  return `n=${lat.length} p50=${q(0.5)} p90=${q(0.9)} p99=${q(0.99)} max=${lat[lat.length - 1]!.toFixed(1)} ms`
}
console.log(`msg ${msg.length} B; flood frame ${frame.length} B -> ${big.length} B`)
console.log("idle:  ", await measure(1000))
for (let i = 0; i < floods; i++) await startFlood()
const h = monitorEventLoopDelay({ resolution: 5 }); h.enable()
console.log(`flood ${floods}:`, await measure(seconds * 1000), `flood echoed ${(floodEchoBytes / 1048576).toFixed(0)} MiB`)
console.log(`loop delay p50=${(h.percentile(50) / 1e6).toFixed(1)} p99=${(h.percentile(99) / 1e6).toFixed(1)} ms`)
for (const s of sockets) s.destroy()
light.terminate()
await server.close()
process.exit(0)
