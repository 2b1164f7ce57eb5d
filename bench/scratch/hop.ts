// Scratch: JS cost of one message round trip through Session + handler, no sockets.
import { Effect, Stream } from "effect"
import * as FrameEncoder from "../../src/domain/FrameEncoder.ts"
import * as Reactor from "../../src/services/Reactor.ts"
import * as Deadlines from "../../src/services/Deadlines.ts"
import { decodeOptions } from "../../src/services/Options.ts"
import * as Clock from "effect/Clock"
import type { Incoming } from "../../src/services/Transport.ts"

const handlerKind = process.argv[2] ?? "forEachArray"
const N = 200_000
const payload = new Uint8Array(1024)
const mask = new Uint8Array([1, 2, 3, 4])
const frame = FrameEncoder.encodeFrameConcat({ opcode: 2, mask }, payload)
const upgrade = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

let onData: (c: Uint8Array) => void = () => {}
let written = 0
let wake: (() => void) | undefined
const incoming: Incoming = {
  remoteAddress: "x", remotePort: 1,
  listen: (d) => { onData = d },
  pause: () => {}, resume: () => {},
  write: (chunks) => { written++; const w = wake; wake = undefined; w?.(); return true },
  onDrain: (cb) => queueMicrotask(cb), end: () => {}, destroy: () => {}
}
const handler = handlerKind === "forEach"
  ? (conn: any) => conn.messages.pipe(Stream.runForEach((m: any) => conn.send(m)))
  : (conn: any) => conn.messages.pipe(Stream.runForEachArray((b: any) => conn.sendAll(b)))
const app: Reactor.App<never> = {
  http: () => Effect.succeed({ status: 404 }),
  upgrade: () => Effect.succeed({ _tag: "Accept", handler })
}
await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  const deadlines = yield* Deadlines.make
  const run = Reactor.make(app, { options: decodeOptions({ heartbeatIntervalMs: 0 }), hooks: {}, deadlines, clock: yield* Clock.Clock, log: () => {} })
  yield* Effect.forkChild(run(incoming))
  yield* Effect.sleep(10)
  onData(upgrade.slice())
  yield* Effect.sleep(10)
  const once = () => new Promise<void>((r) => { wake = r; onData(process.env.NOCOPY ? frame : frame.slice()) })
  yield* Effect.promise(async () => {
    for (let i = 0; i < 20000; i++) await once()
    const t0 = performance.now()
    for (let i = 0; i < N; i++) await once()
    const t1 = performance.now()
    console.log(handlerKind, ((t1 - t0) * 1e6 / N).toFixed(0), "ns per round trip", written)
  })
})))
process.exit(0)
