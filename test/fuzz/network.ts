/**
 * The network fuzzer: the real server (`Server.serve` on `NodeTcp`, in this
 * process, loopback only) under many hostile connections at once, each
 * sending a random or mutated byte stream (garbage, mutated upgrade requests,
 * valid handshakes then faulty frames, huge lengths, unmasked frames, deflate
 * garbage, stalls, abrupt resets), while one well-behaved `ws` client keeps
 * echoing and must get every echo back, in order.
 *
 * Each hostile connection must end, within a deadline, with what the server
 * owes it: the HTTP status or close code that the domain parsers (already
 * fuzzed on their own, see properties.ts) give for the same bytes, or a clean
 * TCP close. At the end the open fds of the process and the server's
 * connection registry are back to their baseline, and the heap has not grown.
 *
 * Deterministic per seed: connection `i` sends the scenario drawn by
 * fast-check with seed `seed + i`, so a failure prints what reproduces it.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import fc from "fast-check"
import WebSocket from "ws"
import { echoApp } from "../../src/Demo.ts"
import * as FrameDecoder from "../../src/domain/FrameDecoder.ts"
import * as Handshake from "../../src/domain/Handshake.ts"
import type { ServerState } from "../../src/services/Server.ts"
import { startServer } from "../support/TcpServer.ts"
import {
  concat,
  encodeFrame,
  type FrameSpec,
  type FrameStream,
  frameStreamArb,
  type RequestStream,
  requestBytes,
  requestStreamArb,
  requestStreamBytes,
  split,
  streamBytes,
  validHeaders
} from "./inputs.ts"

export interface NetworkFuzzOptions {
  readonly seed: number
  /** Stop starting new connections after this long. */
  readonly seconds: number
  /** ... or after this many. */
  readonly maxConnections?: number | undefined
  /** Hostile connections open at once. */
  readonly concurrency?: number | undefined
  /** Serve with permessage-deflate (hostile clients offer it half the time). */
  readonly deflate?: boolean | undefined
  readonly log?: ((line: string) => void) | undefined
}

export interface NetworkFuzzReport {
  readonly seed: number
  readonly connections: number
  readonly bytesSent: number
  /** Outcome seen by the hostile clients: `http:<status>`, `close:<code>`, `tcp-close`, `reset` (ours), `rst` (the server's). */
  readonly outcomes: Record<string, number>
  readonly echoes: { readonly sent: number; readonly received: number }
  readonly fds: { readonly before: number; readonly after: number }
  readonly heapMiB: { readonly before: number; readonly after: number }
  readonly openConnectionsAfter: number
  readonly violations: ReadonlyArray<string>
  readonly durationMs: number
}

// Server limits, small so that stalls and lies end quickly.
const SERVER = {
  maxMessageSize: 256 * 1024,
  maxHeaderBytes: 4096,
  handshakeTimeoutMs: 1500,
  closeTimeoutMs: 1000,
  heartbeatIntervalMs: 1000,
  heartbeatTimeoutMs: 1000
}
/** A hostile connection that has not ended by then hangs: a violation. */
const CONNECTION_DEADLINE_MS = 6000
const FD_TOLERANCE = 2
const HEAP_GROWTH_LIMIT_MIB = 32

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

type Action = "end" | "stall" | "reset"

/** Faults with one right answer, sent after a valid handshake. */
type Targeted = "unmasked" | "huge-length" | "rsv2" | "reserved-opcode" | "bad-utf8" | "bad-close-code" | "deflate-garbage"

export type Scenario =
  | { readonly _tag: "Garbage"; readonly bytes: Uint8Array; readonly cuts: ReadonlyArray<number>; readonly action: Action }
  | { readonly _tag: "Request"; readonly stream: RequestStream; readonly cuts: ReadonlyArray<number>; readonly action: Action }
  | {
    readonly _tag: "Frames"
    readonly offerDeflate: boolean
    readonly stream: FrameStream
    readonly cuts: ReadonlyArray<number>
    readonly action: Action
  }
  | { readonly _tag: "Targeted"; readonly offerDeflate: boolean; readonly fault: Targeted; readonly mask: Uint8Array; readonly junk: Uint8Array }

const cuts = fc.array(fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), { maxLength: 6 })
const action = (weights: [number, number, number]) =>
  fc.oneof(
    { weight: weights[0], arbitrary: fc.constant("end" as const) },
    { weight: weights[1], arbitrary: fc.constant("stall" as const) },
    { weight: weights[2], arbitrary: fc.constant("reset" as const) }
  )

const scenarioArb = (deflate: boolean): fc.Arbitrary<Scenario> =>
  fc.oneof(
    { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Garbage" as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 512 }), cuts, action: action([4, 1, 1]) }) },
    { weight: 2, arbitrary: fc.record({ _tag: fc.constant("Request" as const), stream: requestStreamArb, cuts, action: action([4, 1, 1]) }) },
    {
      weight: 4,
      arbitrary: fc.boolean().chain((offerDeflate) =>
        fc.record({
          _tag: fc.constant("Frames" as const),
          offerDeflate: fc.constant(offerDeflate),
          stream: frameStreamArb("server", deflate && offerDeflate),
          cuts,
          action: action([6, 1, 1])
        })
      )
    },
    {
      weight: 2,
      arbitrary: fc.record({
        _tag: fc.constant("Targeted" as const),
        offerDeflate: fc.boolean(),
        fault: fc.constantFrom<Targeted>("unmasked", "huge-length", "rsv2", "reserved-opcode", "bad-utf8", "bad-close-code", "deflate-garbage"),
        mask: fc.uint8Array({ minLength: 4, maxLength: 4 }),
        junk: fc.uint8Array({ minLength: 1, maxLength: 64 })
      })
    }
  )

export const scenarioAt = (seed: number, index: number, deflate: boolean): Scenario =>
  fc.sample(scenarioArb(deflate), { seed: (seed + index) | 0, numRuns: 1 })[0]!

const KEY = "dGhlIHNhbXBsZSBub25jZQ=="
const upgradeBytes = (offerDeflate: boolean) =>
  requestBytes({
    method: "GET",
    target: "/echo",
    version: "HTTP/1.1",
    headers: [...validHeaders(KEY), ...(offerDeflate ? [["Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"] as const] : [])],
    eol: "\r\n",
    leadingEmptyLines: 0
  })

const frame = (spec: Partial<FrameSpec> & { opcode: number; mask: Uint8Array | undefined }): Uint8Array =>
  encodeFrame({ fin: true, rsv: 0, payload: new Uint8Array(0), lengthForm: "minimal", declaredLength: undefined, ...spec })

/** What a scenario sends, and the outcomes that are right for it. */
interface Plan {
  readonly bytes: Uint8Array
  readonly cuts: ReadonlyArray<number>
  readonly action: Action
  /** Acceptable outcomes (with action "reset", anything is). */
  readonly expected: ReadonlySet<string>
}

const requestOracle = (bytes: Uint8Array, action: Action): Set<string> => {
  const step = Handshake.stepRequest(Handshake.initialRequestParser({ maxHeaderBytes: SERVER.maxHeaderBytes }), bytes.slice())
  if (step._tag === "Invalid") return new Set([`http:${step.error.status}`])
  // An unfinished head: the server waits for the rest until our FIN or its handshake timeout.
  if (step._tag === "NeedMore") return new Set(action === "end" ? ["tcp-close", "http:400"] : ["tcp-close", "http:408", "http:400"])
  if (!Handshake.isUpgradeAttempt(step.request)) {
    // Plain HTTP goes to the echo app's page: GET/HEAD 200, anything else 405.
    return new Set([step.request.method === "GET" || step.request.method === "HEAD" ? "http:200" : "http:405"])
  }
  const validated = Handshake.validateUpgrade(step.request)
  if (validated._tag === "Error") return new Set([`http:${validated.error.status}`])
  // Upgraded: what follows the head is frames; leave their judgement to the frame oracle.
  return new Set(["upgraded"])
}

/** The close codes the server may answer a frame stream with, from the domain decoder. */
const framesOracle = (bytes: Uint8Array, compression: boolean, action: Action): Set<string> => {
  const decoder = FrameDecoder.make({ role: "server", maxMessageSize: SERVER.maxMessageSize, allowRsv1: compression })
  const { events, error } = decoder.feed(bytes.slice())
  const out = new Set<string>()
  let compressed = false
  let closed: string | undefined
  for (const e of events) {
    if (e._tag === "Message" && e.compressed) compressed = true
    if (e._tag === "Close") closed = `close:${e.code ?? 1005}`
  }
  if (error !== undefined) out.add(`close:${error.closeCode}`)
  else if (closed !== undefined) out.add(closed)
  // No close from either side: our FIN, or (stalled) the heartbeat, ends it without a close frame.
  else out.add("tcp-close")
  // A stalled peer that is not answering pings is dropped after the heartbeat timeout.
  if (action === "stall") out.add("tcp-close")
  // Inflating happens after decoding: a compressed message that does not inflate (1007) or
  // inflates past maxMessageSize (1009) may fail the connection before a later fault is read.
  if (compressed) {
    out.add("close:1007")
    out.add("close:1009")
  }
  return out
}

const plan = (scenario: Scenario, deflate: boolean): Plan => {
  switch (scenario._tag) {
    case "Garbage":
    case "Request": {
      const bytes = scenario._tag === "Garbage" ? scenario.bytes : requestStreamBytes(scenario.stream)
      const expected = requestOracle(bytes, scenario.action)
      // The rest after a successful upgrade is judged by the frame decoder.
      if (expected.has("upgraded")) {
        expected.delete("upgraded")
        const step = Handshake.stepRequest(Handshake.initialRequestParser({ maxHeaderBytes: SERVER.maxHeaderBytes }), bytes.slice())
        const request = step._tag === "Request" ? step.request : undefined
        const offered = request !== undefined && /permessage-deflate/i.test(Handshake.header(request, "sec-websocket-extensions") ?? "")
        // The upgrade might negotiate deflate or not (offers can be malformed): accept either judgement.
        const rest = step._tag === "Request" ? step.rest : new Uint8Array(0)
        for (const o of framesOracle(rest, false, scenario.action)) expected.add(o)
        if (deflate && offered) for (const o of framesOracle(rest, true, scenario.action)) expected.add(o)
      }
      return { bytes, cuts: scenario.cuts, action: scenario.action, expected }
    }
    case "Frames": {
      const frames = streamBytes(scenario.stream)
      const compression = deflate && scenario.offerDeflate
      return {
        bytes: concat([upgradeBytes(scenario.offerDeflate), frames]),
        cuts: scenario.cuts,
        action: scenario.action,
        expected: framesOracle(frames, compression, scenario.action)
      }
    }
    case "Targeted": {
      const m = scenario.mask
      const compression = deflate && scenario.offerDeflate
      const [bytes, code] = ((): [Uint8Array, number] => {
        switch (scenario.fault) {
          case "unmasked":
            return [frame({ opcode: 0x2, payload: scenario.junk, mask: undefined }), 1002]
          case "huge-length":
            return [concat([frame({ opcode: 0x2, mask: m, declaredLength: 1n << 40n }), scenario.junk]), 1009]
          case "rsv2":
            return [frame({ opcode: 0x2, rsv: 2, payload: scenario.junk, mask: m }), 1002]
          case "reserved-opcode":
            return [frame({ opcode: 0x3, payload: scenario.junk, mask: m }), 1002]
          case "bad-utf8":
            return [frame({ opcode: 0x1, payload: concat([new Uint8Array([0x61, 0xc0, 0xaf]), scenario.junk]), mask: m }), 1007]
          case "bad-close-code":
            return [frame({ opcode: 0x8, payload: new Uint8Array([0x03, 0xed]), mask: m }), 1002]
          case "deflate-garbage":
            // 0x07 starts a deflate block of the reserved type 3 (RFC 1951 §3.2.3): never inflates.
            // Without the extension, RSV1 itself is the fault (1002).
            return [frame({ opcode: 0x2, rsv: 4, payload: concat([new Uint8Array([0x07]), scenario.junk]), mask: m }), compression ? 1007 : 1002]
        }
      })()
      return { bytes: concat([upgradeBytes(scenario.offerDeflate), bytes]), cuts: [], action: "end", expected: new Set([`close:${code}`]) }
    }
  }
}

// ---------------------------------------------------------------------------
// One hostile connection
// ---------------------------------------------------------------------------

interface Seen {
  readonly outcome: string
  /** The server reset the connection (RST) instead of closing it. */
  readonly rst: boolean
  readonly problem: string | undefined
}

/** What the server answered: an HTTP status, or after 101 its close frame, if any. */
const classify = (data: Buffer): { outcome: string; problem: string | undefined } => {
  if (data.length === 0) return { outcome: "tcp-close", problem: undefined }
  const end = data.indexOf("\r\n\r\n")
  if (end === -1) return { outcome: "bad-response", problem: `no complete response head: ${JSON.stringify(data.subarray(0, 80).toString("latin1"))}` }
  const status = /^HTTP\/1\.1 (\d{3}) /.exec(data.subarray(0, end).toString("latin1"))
  if (status === null) return { outcome: "bad-response", problem: "no status line" }
  if (status[1] !== "101") return { outcome: `http:${status[1]}`, problem: undefined }
  // Server frames (RFC 6455 §5.1: never masked). Data frames are echoes; look for the close.
  let at = end + 4
  while (at + 2 <= data.length) {
    const b0 = data[at]!
    const b1 = data[at + 1]!
    if ((b1 & 0x80) !== 0) return { outcome: "bad-frame", problem: "server frame is masked" }
    let length = b1 & 0x7f
    let head = 2
    if (length === 126) {
      if (at + 4 > data.length) break
      length = data.readUInt16BE(at + 2)
      head = 4
    } else if (length === 127) {
      if (at + 10 > data.length) break
      length = Number(data.readBigUInt64BE(at + 2))
      head = 10
    }
    if (at + head + length > data.length) {
      return { outcome: "bad-frame", problem: `truncated server frame (opcode ${b0 & 0x0f})` }
    }
    if ((b0 & 0x0f) === 0x8) {
      const code = length >= 2 ? data.readUInt16BE(at + head) : 1005
      if (at + head + length !== data.length) return { outcome: `close:${code}`, problem: "bytes after the close frame" }
      return { outcome: `close:${code}`, problem: undefined }
    }
    at += head + length
  }
  if (at !== data.length) return { outcome: "bad-frame", problem: "truncated server frame" }
  return { outcome: "tcp-close", problem: undefined }
}

const runHostile = (port: number, p: Plan): Promise<Seen> =>
  new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" })
    const received: Array<Buffer> = []
    let settled = false
    let rst = false
    const finish = (seen: Seen) => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      socket.destroy()
      resolve(seen)
    }
    const settle = () => finish({ ...classify(Buffer.concat(received)), rst })
    const deadline = setTimeout(
      () => finish({ outcome: "hang", rst, problem: `no end after ${CONNECTION_DEADLINE_MS} ms (${Buffer.concat(received).length} bytes received)` }),
      CONNECTION_DEADLINE_MS
    )
    socket.on("data", (chunk) => received.push(chunk))
    socket.on("end", settle)
    socket.on("close", settle)
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNRESET") rst = true
      else if (error.code !== "EPIPE") return finish({ outcome: `error:${error.code}`, rst, problem: error.message })
      settle()
    })
    socket.on("connect", async () => {
      // Writes as split, each on its own turn of the event loop: the server sees them as separate reads.
      for (const chunk of split(p.bytes, p.cuts)) {
        if (settled || socket.destroyed) return
        if (chunk.length > 0) socket.write(chunk)
        await new Promise((r) => setTimeout(r, 1))
      }
      if (settled) return
      if (p.action === "end") {
        // Our FIN ends the connection at once (the server then owes nothing more: with
        // permessage-deflate, an inflate failure that completes after it is not reported).
        // So when the server owes a close frame or a status, wait for it instead; otherwise
        // give it a moment to answer what it has, then end.
        if (p.expected.has("tcp-close")) setTimeout(() => settled || socket.end(), 300)
      } else if (p.action === "reset") {
        socket.resetAndDestroy()
        finish({ outcome: "reset", rst: false, problem: undefined })
      }
      // "stall": wait for the server's timeouts.
    })
  })

// ---------------------------------------------------------------------------
// The well-behaved client
// ---------------------------------------------------------------------------

interface Echoer {
  readonly stop: () => Promise<{ sent: number; received: number; problem: string | undefined }>
}

const startEchoer = async (port: number, seed: number): Promise<Echoer> => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/echo`, { perMessageDeflate: true })
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve())
    ws.once("error", reject)
  })
  let sent = 0
  let received = 0
  let problem: string | undefined
  let stopping = false
  let rng = seed >>> 0
  const next = () => (rng = (Math.imul(rng, 1664525) + 1013904223) >>> 0)
  let pending: { readonly data: Buffer; readonly binary: boolean; readonly timer: NodeJS.Timeout } | undefined
  let done: (() => void) | undefined
  const send = () => {
    if (stopping || problem !== undefined) return done?.()
    const size = next() % 8 === 0 ? next() % 100_000 : next() % 512
    const binary = next() % 2 === 0
    const data = binary ? Buffer.alloc(size, sent & 0xff) : Buffer.from(`${sent}:`.padEnd(size, "x"))
    // Every echo must come back: one message in flight, 3 s to answer it even under load.
    const timer = setTimeout(() => {
      problem = `echo ${sent} not back after 3 s`
      done?.()
    }, 3000)
    pending = { data, binary, timer }
    sent++
    ws.send(data, { binary })
  }
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    const p = pending
    if (p === undefined) return void (problem ??= "echo without a message in flight")
    clearTimeout(p.timer)
    pending = undefined
    if (isBinary !== p.binary || !data.equals(p.data)) problem ??= `echo ${received} differs from the message sent`
    received++
    send()
  })
  ws.on("close", (code) => {
    if (!stopping) problem ??= `well-behaved client closed by the server (${code})`
    done?.()
  })
  send()
  return {
    stop: () =>
      new Promise((resolve) => {
        stopping = true
        done = () => {
          done = undefined
          if (pending !== undefined) clearTimeout(pending.timer)
          ws.once("close", () => resolve({ sent, received, problem }))
          ws.close(1000)
        }
        if (pending === undefined || problem !== undefined) done()
      })
  }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

const openFds = (): number => fs.readdirSync("/proc/self/fd").length

// A full GC before reading the heap, so the figures compare live data, not garbage.
v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void
const heapMiB = (): number => {
  gc()
  gc()
  return Math.round((process.memoryUsage().heapUsed / 1048576) * 10) / 10
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export const runNetworkFuzz = async (options: NetworkFuzzOptions): Promise<NetworkFuzzReport> => {
  const { seed, seconds, maxConnections = Infinity, concurrency = 16, deflate = true, log = () => {} } = options
  const started = Date.now()
  const violations: Array<string> = []
  const outcomes: Record<string, number> = {}
  const count = (key: string) => void (outcomes[key] = (outcomes[key] ?? 0) + 1)
  let state: ServerState | undefined
  const server = await startServer(echoApp, {
    ...SERVER,
    perMessageDeflate: deflate,
    onState: (s) => (state = s)
  })
  try {
    const echoer = await startEchoer(server.port, seed)
    // Warm up (module code, zlib, the JIT), then take the baseline with the echoer connected.
    await sleep(200)
    const fdsBefore = openFds()
    const heapBefore = heapMiB()
    let index = 0
    let bytesSent = 0
    const stopAt = started + seconds * 1000
    const worker = async () => {
      while (Date.now() < stopAt && index < maxConnections) {
        const i = index++
        const scenario = scenarioAt(seed, i, deflate)
        const p = plan(scenario, deflate)
        bytesSent += p.bytes.length
        const seen = await runHostile(server.port, p)
        count(seen.outcome)
        if (seen.rst) count("rst")
        const wrong = seen.problem ?? (p.action !== "reset" && !p.expected.has(seen.outcome)
          ? `got ${seen.outcome}, expected one of ${[...p.expected].join(" ")}`
          : undefined)
        if (wrong !== undefined) {
          const line = `connection ${i} (seed ${seed}, ${scenario._tag}): ${wrong}`
          violations.push(line)
          log(line)
        }
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
    const echoes = await echoer.stop()
    if (echoes.problem !== undefined) violations.push(`well-behaved client: ${echoes.problem}`)
    if (echoes.received !== echoes.sent) violations.push(`well-behaved client: ${echoes.sent} sent, ${echoes.received} echoed`)
    // Let the server finish its closes (close timeout 1 s), then compare with the baseline
    // (the echoer's two sockets are gone now too: at most as many fds as before).
    let fdsAfter = openFds()
    for (let waited = 0; waited < 4000 && (fdsAfter > fdsBefore || (state?.connections.size ?? 0) > 0); waited += 100) {
      await sleep(100)
      fdsAfter = openFds()
    }
    const openConnectionsAfter = state?.connections.size ?? -1
    if (fdsAfter > fdsBefore + FD_TOLERANCE) violations.push(`fds: ${fdsBefore} before, ${fdsAfter} after`)
    if (openConnectionsAfter !== 0) violations.push(`${openConnectionsAfter} connections still in the server's registry`)
    // The server still serves: a fresh client gets its echo.
    const check = await startEchoer(server.port, seed + 1)
    await sleep(50)
    const last = await check.stop()
    if (last.problem !== undefined || last.received < 1) violations.push(`server does not echo after the run: ${last.problem ?? "no echo"}`)
    const heapAfter = heapMiB()
    if (heapAfter - heapBefore > HEAP_GROWTH_LIMIT_MIB) violations.push(`heap grew from ${heapBefore} MiB to ${heapAfter} MiB`)
    return {
      seed,
      connections: index,
      bytesSent,
      outcomes,
      echoes: { sent: echoes.sent, received: echoes.received },
      fds: { before: fdsBefore, after: fdsAfter },
      heapMiB: { before: heapBefore, after: heapAfter },
      openConnectionsAfter,
      violations,
      durationMs: Date.now() - started
    }
  } finally {
    await server.close()
  }
}
