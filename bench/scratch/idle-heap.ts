// Scratch: heap per idle connection in-process (no sockets), by handler shape.
//   node --expose-gc bench/scratch/idle-heap.ts <never|forEach|forEachArray> [N]
import { Effect, Stream } from "effect"
import * as Clock from "effect/Clock"
import * as Deadlines from "../../src/services/Deadlines.ts"
import { decodeOptions } from "../../src/services/Options.ts"
import * as Reactor from "../../src/services/Reactor.ts"
import * as Router from "../../src/services/Router.ts"
import type { Incoming } from "../../src/services/Transport.ts"
import { writeFileSync } from "node:fs"
import { Session } from "node:inspector"
import { writeHeapSnapshot } from "node:v8"

// Heap snapshots name a closure's script by id: write "id url" lines to read them.
const scriptIds = (file: string) => new Promise<void>((resolve) => {
  const session = new Session()
  session.connect()
  const lines: Array<string> = []
  session.on("Debugger.scriptParsed", (m) => { lines.push(`${m.params.scriptId} ${m.params.url}`) })
  session.post("Debugger.enable", () => { writeFileSync(file, lines.join("\n")); session.disconnect(); resolve() })
})

const kind = process.argv[2] ?? "forEachArray"
const N = Number(process.argv[3] ?? 10000)
const upgrade = new TextEncoder().encode("GET /echo HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
const keep: Array<unknown> = []
const makeIncoming = (): [Incoming, () => (c: Uint8Array) => void] => {
  let onData: (c: Uint8Array) => void = () => {}
  const incoming: Incoming = {
    remoteAddress: "127.0.0.1", remotePort: 1,
    listen: (d) => { onData = d },
    pause: () => {}, resume: () => {}, write: () => true,
    onDrain: (cb) => queueMicrotask(cb), end: () => {}, destroy: () => {}
  }
  return [incoming, () => onData]
}
const handler = kind === "never" ? () => Effect.never
  : kind === "forEach" ? (conn: any) => conn.messages.pipe(Stream.runForEach((m: any) => conn.send(m)))
  : (conn: any) => conn.messages.pipe(Stream.runForEachArray((b: any) => conn.sendAll(b)))
const app = Router.make([Router.ws("/*", handler)])
const gc = (globalThis as any).gc as () => void
await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  const deadlines = yield* Deadlines.make
  const run = Reactor.make(app, { options: decodeOptions({}), hooks: {}, deadlines, clock: yield* Clock.Clock, log: () => {} })
  const fork = Effect.runForkWith(yield* Effect.context<never>())
  const open = (n: number) => Effect.promise(async () => {
    for (let i = 0; i < n; i++) {
      const [incoming, data] = makeIncoming()
      keep.push(incoming)
      fork(run(incoming) as Effect.Effect<void>)
      data()(upgrade.slice())
      if ((i & 255) === 255) await new Promise((r) => setImmediate(r))
    }
    await new Promise((r) => setImmediate(r))
  })
  yield* open(200)
  gc(); gc()
  if (process.env.SNAP) writeHeapSnapshot("/tmp/prof/a.heapsnapshot")
  const before = process.memoryUsage().heapUsed
  yield* open(N)
  gc(); gc()
  const after = process.memoryUsage().heapUsed
  if (process.env.SNAP) writeHeapSnapshot("/tmp/prof/b.heapsnapshot")
  console.log(`${kind}: ${((after - before) / N).toFixed(0)} B heap per idle connection`)
  if (process.env.SNAP) yield* Effect.promise(() => scriptIds("/tmp/prof/scripts.txt"))
})))
process.exit(0)
