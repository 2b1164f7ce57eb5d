// Scratch: JS cost of accepting one connection (handshake parse, app.upgrade via Router, 101,
// session open with a handler waiting on `messages`), no sockets.
import { Effect, Stream } from "effect"
import * as Clock from "effect/Clock"
import * as Deadlines from "../../src/services/Deadlines.ts"
import { decodeOptions } from "../../src/services/Options.ts"
import * as Reactor from "../../src/services/Reactor.ts"
import * as Router from "../../src/services/Router.ts"
import type { Incoming } from "../../src/services/Transport.ts"

const N = Number(process.argv[2] ?? 20000)
const upgrade = new TextEncoder().encode("GET /echo HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUser-Agent: bench\r\n\r\n")
let opened = 0
const makeIncoming = (): [Incoming, () => (c: Uint8Array) => void] => {
  let onData: (c: Uint8Array) => void = () => {}
  return [{
    remoteAddress: "127.0.0.1", remotePort: 1,
    listen: (d) => { onData = d },
    pause: () => {}, resume: () => {},
    write: (chunks) => { if (chunks[0]![9] === 0x31 && chunks[0]![10] === 0x30 && chunks[0]![11] === 0x31) opened++; return true },
    onDrain: (cb) => queueMicrotask(cb), end: () => {}, destroy: () => {}
  }, () => onData]
}
const app = Router.make([Router.ws("/*", (conn) => conn.messages.pipe(Stream.runForEachArray((b) => conn.sendAll(b))))])
await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  const deadlines = yield* Deadlines.make
  const run = Reactor.make(app, { options: decodeOptions({}), hooks: {}, deadlines, clock: yield* Clock.Clock, log: () => {} })
  const ctx = yield* Effect.context<never>()
  const fork = Effect.runForkWith(ctx)
  const t0 = performance.now()
  for (let i = 0; i < N; i++) {
    const [incoming, data] = makeIncoming()
    fork(run(incoming))
    data()(upgrade.slice())
    if ((i & 255) === 255) yield* Effect.promise(() => new Promise((r) => setImmediate(r)))
  }
  yield* Effect.promise(() => new Promise((r) => setImmediate(r)))
  const t1 = performance.now()
  console.log(`${((t1 - t0) * 1000 / N).toFixed(1)} µs per accepted connection (${opened} opened)`)
})))
process.exit(0)
