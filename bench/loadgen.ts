/**
 * Load generator: a separate process on raw node:net sockets. It does the
 * HTTP upgrade itself, sends pre-encoded masked frames (only the timestamp is
 * patched per send), parses the replies and measures latency from the
 * timestamp carried in each payload.
 *
 * Usage: node bench/loadgen.ts '<json LoadOptions>'
 * Talks to the orchestrator with JSON lines on stdout:
 *   {"event":"start"}                 measured window begins (idle: before the first connect)
 *   {"event":"opened",...}            (idle) all connections open; waits for "close" on stdin
 *   {"event":"result",...}            final numbers, then exit
 */
import { createHash, randomBytes } from "node:crypto"
import * as net from "node:net"
import { performance } from "node:perf_hooks"
import {
  type ClientFrame,
  closeFrame,
  encodeClientFrame,
  makeFrameReader,
  makePayload,
  makeRecordReader,
  OP_BINARY,
  OP_CLOSE,
  OP_CONT,
  OP_PING,
  OP_PONG,
  OP_TEXT,
  rawFrame,
  readStamp,
  readTag,
  STAMP_BYTES,
  stampFrame,
  writeTag
} from "./frames.ts"

export type LoadMode = "echo" | "handshake" | "idle" | "fanout"

export interface LoadOptions {
  readonly mode: LoadMode
  readonly host: string
  readonly port: number
  readonly path?: string
  /** Plain TCP (the ceiling peer): no upgrade, fixed-size records instead of frames. */
  readonly raw?: boolean
  /** echo/tcp: connections; handshake: parallel workers; idle: connections to hold; fanout: subscribers. */
  readonly conns: number
  /** Messages in flight per connection (fanout: per publisher). */
  readonly inflight?: number
  /** fanout: publisher connections (default 1); each keeps `inflight` messages outstanding. */
  readonly publishers?: number
  /** fanout: subscriber i connects to `subscriberPorts[i % n]` (default: `port`); publishers always to `port`. */
  readonly subscriberPorts?: ReadonlyArray<number>
  readonly size?: number
  readonly binary?: boolean
  /** Unmeasured traffic before the window, then the measured window. */
  readonly rampMs?: number
  readonly durationMs?: number
  /** idle: how long to hold the connections at most when no "close" comes (default 60 s). */
  readonly holdMs?: number
}

export interface LoadResult {
  readonly event: "result"
  readonly messages: number
  readonly bytes: number
  readonly seconds: number
  readonly msgsPerSec: number
  readonly mbPerSec: number
  readonly p50us: number
  readonly p99us: number
  /** The load generator's own CPU use in the window, % of one core. */
  readonly loadgenCpuPct: number
  /** Its CPU per message: compare with the server's to see who runs out first. */
  readonly loadgenUsPerMsg: number
  readonly errors: number
  readonly note?: string
}

const nowMicros = (): number => performance.now() * 1000
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const emit = (o: object): void => void process.stdout.write(JSON.stringify(o) + "\n")

// ---------------------------------------------------------------- histogram

/** Latency histogram: 1 µs buckets below 2 ms, then 128 buckets per doubling (≈0.5 %). */
const makeHistogram = () => {
  const LINEAR = 2048
  const buckets = new Uint32Array(LINEAR + 128 * 24)
  let count = 0
  return {
    add(us: number): void {
      const i = us < LINEAR ? Math.max(0, Math.floor(us)) : LINEAR + Math.floor(Math.log2(us / LINEAR) * 128)
      buckets[Math.min(i, buckets.length - 1)]!++
      count++
    },
    percentile(p: number): number {
      if (count === 0) return NaN
      const target = Math.ceil((p / 100) * count)
      let seen = 0
      for (let i = 0; i < buckets.length; i++) {
        seen += buckets[i]!
        if (seen >= target) return i < LINEAR ? i : LINEAR * 2 ** ((i - LINEAR) / 128)
      }
      return NaN
    }
  }
}

// ---------------------------------------------------------------- window

/** Shared measurement state: counts only while `measuring`. */
const makeWindow = () => {
  const hist = makeHistogram()
  const w = {
    measuring: false,
    stopping: false,
    messages: 0,
    bytes: 0,
    errors: 0,
    record(stampUs: number, bytes: number): void {
      if (!w.measuring) return
      w.messages++
      w.bytes += bytes
      hist.add(nowMicros() - stampUs)
    },
    /** Waits `rampMs`, measures for `durationMs`, then stops the senders. */
    async run(rampMs: number, durationMs: number, note?: string): Promise<LoadResult> {
      await sleep(rampMs)
      w.measuring = true
      const cpu0 = process.cpuUsage()
      const t0 = performance.now()
      emit({ event: "start" })
      await sleep(durationMs)
      w.measuring = false
      w.stopping = true
      const seconds = (performance.now() - t0) / 1000
      const cpu = process.cpuUsage(cpu0)
      return {
        event: "result",
        messages: w.messages,
        bytes: w.bytes,
        seconds,
        msgsPerSec: w.messages / seconds,
        mbPerSec: w.bytes / seconds / 1e6,
        p50us: hist.percentile(50),
        p99us: hist.percentile(99),
        loadgenCpuPct: ((cpu.user + cpu.system) / 1e6 / seconds) * 100,
        loadgenUsPerMsg: (cpu.user + cpu.system) / w.messages,
        errors: w.errors,
        ...(note === undefined ? {} : { note })
      }
    }
  }
  return w
}

// ---------------------------------------------------------------- connecting

const wsAccept = (key: string): string =>
  createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64")

// RFC 6455 §4.1 wants a random key per handshake; a pool of 64 keeps SHA-1 off the load generator's hot path.
const KEYS = Array.from({ length: 64 }, () => {
  const key = randomBytes(16).toString("base64")
  return { key, accept: wsAccept(key) }
})
let nextKey = 0
const CLOSE = closeFrame()

/**
 * An open connection. Reads go through `onread` into one shared buffer (no
 * Buffer and no "data" event per read): `read` gets a view valid only during
 * the call. Until a scenario sets `read`, bytes are kept in `rest`.
 */
interface Link {
  readonly socket: net.Socket
  rest: Buffer
  read: (chunk: Buffer) => void
}

const READ_BUFFER = Buffer.allocUnsafe(256 * 1024)

/** Opens a TCP connection (and, unless `raw`, performs the RFC 6455 §4.1 opening handshake). */
const connect = (o: LoadOptions, path: string, raw: boolean): Promise<Link> =>
  new Promise((resolve, reject) => {
    const keep = (chunk: Buffer) => {
      link.rest = Buffer.concat([link.rest, chunk])
    }
    const socket = net.connect({
      host: o.host,
      port: o.port,
      noDelay: true,
      onread: {
        buffer: READ_BUFFER,
        callback: (n: number) => {
          link.read(READ_BUFFER.subarray(0, n))
          return true
        }
      }
    })
    const link: Link = { socket, rest: Buffer.alloc(0), read: keep }
    const fail = (err: Error) => {
      socket.destroy()
      reject(err)
    }
    socket.once("error", fail)
    socket.once("connect", () => {
      if (raw) {
        socket.off("error", fail)
        return resolve(link)
      }
      const { key, accept } = KEYS[nextKey++ & 63]!
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: ${o.host}:${o.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
      )
      const onEnd = () => fail(new Error("closed during upgrade"))
      socket.once("end", onEnd)
      link.read = (chunk) => {
        keep(chunk)
        const head = link.rest
        const end = head.indexOf("\r\n\r\n")
        if (end < 0) return head.length > 8192 ? fail(new Error("response head too large")) : undefined
        socket.off("error", fail)
        socket.off("end", onEnd)
        const text = head.subarray(0, end).toString("latin1")
        if (!text.startsWith("HTTP/1.1 101") || !text.includes(accept)) {
          return fail(new Error(`bad upgrade response: ${text.split("\r\n")[0]}`))
        }
        link.rest = head.subarray(end + 4)
        link.read = keep
        resolve(link)
      }
    })
  })

/** Opens `n` connections, at most `parallel` at a time (a burst of 10k SYNs would overflow the backlog). */
const openMany = async (
  n: number,
  parallel: number,
  open: () => Promise<Link>
): Promise<{ links: Array<Link>; failed: number }> => {
  const links: Array<Link> = []
  let next = 0
  let failed = 0
  const worker = async () => {
    while (next++ < n) {
      try {
        links.push(await open())
      } catch {
        failed++
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker))
  return { links, failed }
}

/** Wires a WebSocket reader that reassembles messages and answers pings. */
const onMessages = (
  link: Link,
  onMessage: (stampUs: number, bytes: number, tag: number) => void,
  onError: () => void,
  afterChunk?: () => void
): void => {
  const socket = link.socket
  let stamp = 0
  let tag = 0
  let bytes = 0
  let inMessage = false
  const feed = makeFrameReader(
    (fin, opcode, payload) => {
      if (opcode === OP_TEXT || opcode === OP_BINARY || (opcode === OP_CONT && inMessage)) {
        if (!inMessage) {
          stamp = payload.length >= STAMP_BYTES ? readStamp(payload, 0) : 0
          tag = readTag(payload)
          bytes = 0
          inMessage = true
        }
        bytes += payload.length
        if (fin) {
          inMessage = false
          onMessage(stamp, bytes, tag)
        }
      } else if (opcode === OP_PING) {
        socket.write(encodeClientFrame(OP_PONG, payload).bytes)
      } else if (opcode === OP_CLOSE) {
        socket.end()
      }
    },
    () => {
      onError()
      socket.destroy()
    }
  )
  link.read = (chunk) => {
    feed(chunk)
    afterChunk?.()
  }
  socket.on("error", onError)
  if (link.rest.length > 0) link.read(link.rest)
}

/**
 * `n` pre-encoded frames laid out back to back in one buffer. Replies come back
 * in order, so the slots of the k replies just received are the next k to send:
 * one write covers them (two at the wrap), and a slot is never patched while a
 * write of it may still be queued (its reply proves the server has read it).
 */
const makeSender = (o: LoadOptions, n: number, socket: () => net.Socket, tag?: number) => {
  const payload = makePayload(o.size ?? 32)
  if (tag !== undefined) writeTag(payload, tag)
  const frames = Array.from({ length: n }, () =>
    o.raw ? rawFrame(payload) : encodeClientFrame(o.binary ? OP_BINARY : OP_TEXT, payload))
  const frameLen = frames[0]!.bytes.length
  const buf = n === 1 ? frames[0]!.bytes : Buffer.concat(frames.map((f) => f.bytes))
  const slots: Array<ClientFrame> = frames.map((f, i) => ({ bytes: buf, stampAt: i * frameLen + f.stampAt, mask: f.mask }))
  let next = 0
  let owed = 0
  const writeRange = (from: number, count: number, now: number) => {
    for (let i = from; i < from + count; i++) stampFrame(slots[i]!, now)
    socket().write(buf.subarray(from * frameLen, (from + count) * frameLen))
  }
  return {
    /** One more frame may be sent (a reply arrived, or at start). */
    owe(): void {
      owed++
    },
    /** Sends everything owed, stamped with the current time. */
    flush(): void {
      if (owed === 0) return
      const now = nowMicros()
      const first = Math.min(owed, n - next)
      writeRange(next, first, now)
      if (owed > first) writeRange(0, owed - first, now)
      next = (next + owed) % n
      owed = 0
    }
  }
}

const closeAll = (sockets: ReadonlyArray<net.Socket>, graceful: boolean): void => {
  for (const s of sockets) {
    if (graceful && s.writable) s.end(CLOSE)
    else s.destroy()
  }
}

// ---------------------------------------------------------------- scenarios

/** Closed-loop echo: every reply triggers the next send on the same connection. */
const runEcho = async (o: LoadOptions): Promise<LoadResult> => {
  const raw = o.raw === true
  const inflight = o.inflight ?? 1
  const size = o.size ?? 32
  const { links, failed } = await openMany(o.conns, 50, () => connect(o, o.path ?? "/", raw))
  const w = makeWindow()
  w.errors += failed
  for (const link of links) {
    const socket = link.socket
    const sender = makeSender(o, inflight, () => socket)
    const onMessage = (stampUs: number, bytes: number) => {
      if (bytes !== size) w.errors++
      w.record(stampUs, bytes)
      if (!w.stopping) sender.owe()
    }
    if (raw) {
      const feed = makeRecordReader(size, (head) => onMessage(readStamp(head, 0), size))
      link.read = (chunk) => {
        feed(chunk)
        sender.flush()
      }
      socket.on("error", () => w.errors++)
    } else onMessages(link, onMessage, () => w.errors++, sender.flush)
    for (let i = 0; i < inflight; i++) sender.owe()
    sender.flush()
  }
  const note = links.length === 0 ? "no connection" : undefined
  const result = await w.run(o.rampMs ?? 300, o.durationMs ?? 2000, note)
  closeAll(
    links.map((l) => l.socket),
    !raw
  )
  return result
}

/** Handshakes: connect, upgrade, close handshake (client close, server close, server FIN), repeat. */
const runHandshakes = async (o: LoadOptions): Promise<LoadResult> => {
  const w = makeWindow()
  const cycle = async () => {
    const t = nowMicros()
    const link = await connect(o, o.path ?? "/", false)
    const socket = link.socket
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        w.errors++
        socket.destroy()
      }, 2000)
      let closed = false
      const feed = makeFrameReader(
        (_fin, opcode) => {
          if (opcode === OP_CLOSE && !closed) {
            closed = true
            w.record(t, 0)
          }
        },
        () => socket.destroy()
      )
      link.read = feed
      socket.on("error", () => {})
      // RFC 6455 §7.1.1: the server closes the TCP connection first; wait for it.
      socket.on("close", () => {
        clearTimeout(timer)
        if (!closed) w.errors++
        resolve()
      })
      if (link.rest.length > 0) feed(link.rest)
      socket.end(CLOSE)
    })
  }
  const workers = Array.from({ length: o.conns }, async () => {
    while (!w.stopping) {
      try {
        await cycle()
      } catch {
        w.errors++
        await sleep(10)
      }
    }
  })
  const result = await w.run(o.rampMs ?? 300, o.durationMs ?? 2000)
  await Promise.race([Promise.all(workers), sleep(3000)])
  return result
}

/** Idle: open N upgraded connections, report, hold until told to close. */
const runIdle = async (o: LoadOptions): Promise<LoadResult> => {
  emit({ event: "start" }) // the orchestrator counts the server's CPU for connection setup from here
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const { links, failed } = await openMany(o.conns, 100, () => connect(o, o.path ?? "/", o.raw === true))
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  let dropped = 0
  for (const link of links) {
    link.socket.on("error", () => {})
    link.socket.on("close", () => dropped++)
    link.read = () => {}
  }
  emit({ event: "opened", opened: links.length, failed })
  await new Promise<void>((resolve) => {
    let buf = ""
    process.stdin.on("data", (d) => {
      buf += d
      if (buf.includes("close")) resolve()
    })
    setTimeout(resolve, o.holdMs ?? 60_000)
  })
  closeAll(
    links.map((l) => l.socket),
    false
  )
  return {
    event: "result",
    messages: links.length,
    bytes: 0,
    seconds,
    msgsPerSec: links.length / seconds,
    mbPerSec: 0,
    p50us: NaN,
    p99us: NaN,
    loadgenCpuPct: ((cpu.user + cpu.system) / 1e6 / seconds) * 100,
    loadgenUsPerMsg: links.length > 0 ? (cpu.user + cpu.system) / links.length : NaN,
    errors: failed + dropped
  }
}

/**
 * Fan-out: subscribers connect to /fanout, `publishers` publishers (default 1)
 * to /fanout?pub=1. Each publisher keeps `inflight` messages outstanding; a
 * message is done when every subscriber got it. Payloads carry their
 * publisher's index (after the timestamp): a subscriber sees each publisher's
 * messages in order, interleaved with the others'. Counts deliveries.
 */
const runFanout = async (o: LoadOptions): Promise<LoadResult> => {
  const base = o.path ?? "/fanout"
  const inflight = o.inflight ?? 10
  const size = o.size ?? 32
  const publishers = Math.max(1, o.publishers ?? 1)
  const w = makeWindow()
  const ports = o.subscriberPorts ?? [o.port]
  let nth = 0
  const { links, failed } = await openMany(o.conns, 50, () => connect({ ...o, port: ports[nth++ % ports.length]! }, base, false))
  w.errors += failed
  const subscribers = links.length
  // Deliveries of publisher p's message m live in done[p * inflight + m % inflight].
  const done = new Uint32Array(publishers * inflight)
  const pubs: Array<net.Socket | undefined> = Array.from({ length: publishers }, () => undefined)
  const senders = pubs.map((_, p) => makeSender(o, inflight, () => pubs[p]!, p))
  // Publishers owed a send since the last flush (each listed once).
  const owing: Array<number> = []
  const isOwing = new Uint8Array(publishers)
  const flushOwing = () => {
    if (pubs[publishers - 1] === undefined) return
    for (let i = 0; i < owing.length; i++) {
      senders[owing[i]!]!.flush()
      isOwing[owing[i]!] = 0
    }
    owing.length = 0
  }
  links.forEach((link) => {
    const received = new Uint32Array(publishers) // per publisher: messages seen by this subscriber
    onMessages(
      link,
      (stampUs, bytes, tag) => {
        if (bytes !== size || tag >= publishers) return void w.errors++
        w.record(stampUs, bytes)
        const slot = tag * inflight + (received[tag]!++ % inflight)
        if (++done[slot]! === subscribers) {
          done[slot] = 0
          if (!w.stopping) {
            senders[tag]!.owe()
            if (isOwing[tag] === 0) {
              isOwing[tag] = 1
              owing.push(tag)
            }
          }
        }
      },
      () => w.errors++,
      flushOwing
    )
  })
  await sleep(200) // let the server finish registering the last subscribers
  for (let p = 0; p < publishers; p++) {
    const link = await connect(o, `${base}?pub=1`, false)
    pubs[p] = link.socket
    onMessages(link, () => {}, () => w.errors++)
  }
  if (subscribers > 0) {
    for (const sender of senders) {
      for (let i = 0; i < inflight; i++) sender.owe()
      sender.flush()
    }
  }
  const result = await w.run(o.rampMs ?? 300, o.durationMs ?? 2000, subscribers === 0 ? "no subscriber" : undefined)
  closeAll([...pubs.filter((s) => s !== undefined), ...links.map((l) => l.socket)], true)
  return result
}

// ---------------------------------------------------------------- main

const main = async () => {
  const o = JSON.parse(process.argv[2] ?? "{}") as LoadOptions
  // Lifeline: exit when the orchestrator goes away; bounded even if it does not.
  process.stdin.on("end", () => process.exit(3))
  process.stdin.resume()
  setTimeout(() => process.exit(4), (o.durationMs ?? 2000) + (o.holdMs ?? 0) + 120_000).unref()
  const run =
    o.mode === "handshake" ? runHandshakes : o.mode === "idle" ? runIdle : o.mode === "fanout" ? runFanout : runEcho
  const result = await run(o)
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0))
}

main().catch((err: unknown) => {
  emit({ event: "error", message: String(err) })
  process.exit(1)
})
