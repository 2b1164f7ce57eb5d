/**
 * permessage-deflate (RFC 7692) against real peers and on the wire:
 * - the `ws` client with several option sets against servers with several
 *   option sets: the negotiated response and exact echoes over many messages;
 * - a raw client with its own codec: RSV1 placement, the 00 00 ff ff tail,
 *   the 1002/1007 failures, declined offers;
 * - a decompression bomb through the real server: 1009, bounded memory, and
 *   other connections keep working.
 */
import { randomBytes } from "node:crypto"
import * as zlib from "node:zlib"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import type { DeflateOptions } from "../../src/domain/PerMessageDeflate.ts"
import { liveZlibStreams } from "../../src/services/Compression.ts"
import type { CloseInfo } from "../../src/services/Connection.ts"
import type { App } from "../../src/services/Reactor.ts"
import { connect, encodeFrame, Opcode, type RawClient, Rsv, textOf } from "../conformance/RawClient.ts"
import { type RunningServer, startServer } from "../support/TcpServer.ts"
import { withTimeout as boundedWait } from "../support/Timeout.ts"

const WAIT_MS = 10_000
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff])

// A plain echo, independent of the demo app (which may change).
const echoApp: App<never> = {
  http: () => Effect.succeed({ status: 404 }),
  upgrade: () =>
    Effect.succeed({ _tag: "Accept", handler: (c) => c.messages.pipe(Stream.runForEach((m) => c.send(m))) })
}

// ---------------------------------------------------------------- helpers

const clients = new Set<WebSocket>()
const raws = new Set<RawClient>()
afterEach(() => {
  for (const ws of clients) ws.terminate()
  clients.clear()
  for (const raw of raws) raw.destroy()
  raws.clear()
})

const withTimeout = <A>(what: string, promise: Promise<A>, ms = WAIT_MS): Promise<A> => boundedWait(what, promise, ms)

interface Opened {
  readonly ws: WebSocket
  /** The server's Sec-WebSocket-Extensions response header, if any. */
  readonly extensions: string | undefined
}

/** A `ws` client; resolves on 'open' with the extensions header the server answered. */
const open = (port: number, perMessageDeflate: WebSocket.ClientOptions["perMessageDeflate"]): Promise<Opened> => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate })
  clients.add(ws)
  let extensions: string | undefined
  ws.once("upgrade", (response) => {
    const value = response.headers["sec-websocket-extensions"]
    extensions = Array.isArray(value) ? value.join(", ") : value
  })
  return withTimeout(
    "open",
    new Promise<Opened>((resolve, reject) => {
      ws.once("open", () => resolve({ ws, extensions }))
      ws.once("error", reject)
      ws.once("close", (code) => reject(new Error(`closed before open (code ${code})`)))
    })
  )
}

interface Received {
  readonly data: Buffer
  readonly isBinary: boolean
}

const toBuffer = (data: WebSocket.RawData): Buffer =>
  Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)

const receiveOne = (ws: WebSocket): Promise<Received> =>
  withTimeout(
    "a message",
    new Promise<Received>((resolve, reject) => {
      const onClose = (code: number, reason: Buffer) => reject(new Error(`closed ${code} ${reason.toString()}`))
      ws.once("message", (data, isBinary) => {
        ws.off("close", onClose)
        resolve({ data: toBuffer(data), isBinary })
      })
      ws.once("close", onClose)
    })
  )

const closedWith = (ws: WebSocket): Promise<number> =>
  withTimeout("close", new Promise<number>((resolve) => ws.once("close", (code) => resolve(code))))

/** An extension header as a comparable value: the name, then its parameters sorted (RFC 7692 §7: order is free). */
const normalize = (header: string | undefined): string | undefined => {
  if (header === undefined) return undefined
  const [name, ...params] = header.split(";").map((s) => s.trim().toLowerCase())
  return [name, ...params.sort()].join("; ")
}

/** Compressible JSON text of exactly `n` bytes that differs with `seed`. */
const jsonOf = (n: number, seed: number): string => {
  const rows: Array<string> = []
  let length = 2
  for (let i = 0; length < n - 200; i++) {
    const row = JSON.stringify({ id: seed * 10_000 + i, user: `user-${(seed + i) % 37}`, kind: "chat", text: `message ${i} of round ${seed}` })
    rows.push(row)
    length += row.length + 1
  }
  const body = `[${rows.join(",")}]`
  return body.slice(0, -1) + " ".repeat(n - body.length) + "]" // JSON allows the padding
}

/** Random printable ASCII: a valid text message that barely compresses. */
const randomText = (n: number): string => {
  const bytes = randomBytes(n)
  for (let i = 0; i < n; i++) bytes[i] = 0x20 + (bytes[i]! % 95)
  return bytes.toString("latin1")
}

const MiB = 1024 * 1024
const sizes = [0, 100, 2048, 64 * 1024]

/** Round `i`'s message: cycles the sizes and alternates text/binary; rounds 24 and 49 are 1 MiB random. */
const messageFor = (i: number): { readonly data: string | Buffer; readonly binary: boolean } => {
  const binary = Math.floor(i / sizes.length) % 2 === 1
  if (i === 24) return { data: randomText(MiB), binary: false }
  if (i === 49) return { data: randomBytes(MiB), binary: true }
  const size = sizes[i % sizes.length]!
  const text = size === 64 * 1024 ? jsonOf(size, i) : (`#${i} ` + textOf(size)).slice(0, size)
  return { data: binary ? Buffer.from(text) : text, binary }
}

const expectEcho = async (ws: WebSocket, data: string | Buffer, binary: boolean) => {
  const reply = receiveOne(ws)
  ws.send(data, { binary })
  const got = await reply
  expect(got.isBinary).toBe(binary)
  const expected = typeof data === "string" ? Buffer.from(data) : data
  expect(got.data.length).toBe(expected.length)
  expect(got.data.equals(expected)).toBe(true)
}

// ---------------------------------------------------------------- 1. ws client × server options

const clientOptions: ReadonlyArray<readonly [string, WebSocket.PerMessageDeflateOptions | true]> = [
  ["true", true],
  ["clientNoContextTakeover", { clientNoContextTakeover: true }],
  ["serverNoContextTakeover", { serverNoContextTakeover: true }],
  ["serverMaxWindowBits 10, clientMaxWindowBits 9", { serverMaxWindowBits: 10, clientMaxWindowBits: 9 }],
  ["threshold 0", { threshold: 0 }]
]

/**
 * The response RFC 7692 §7.1 calls for, per server setting and client offer. The offers `ws` sends:
 *   true, threshold 0:        permessage-deflate; client_max_window_bits
 *   clientNoContextTakeover:  permessage-deflate; client_no_context_takeover; client_max_window_bits
 *   serverNoContextTakeover:  permessage-deflate; server_no_context_takeover; client_max_window_bits
 *   window bits:              permessage-deflate; server_max_window_bits=10; client_max_window_bits=9
 * A bare client_max_window_bits needs no answer (the client keeps 15, §7.1.2.2); an offered
 * server_no_context_takeover or server_max_window_bits must be answered (§7.1.1.1, §7.1.2.1).
 */
const serverCases: ReadonlyArray<{
  readonly name: string
  readonly options: true | Partial<DeflateOptions>
  readonly expected: ReadonlyArray<string>
}> = [
  {
    name: "true",
    options: true,
    expected: [
      "permessage-deflate",
      "permessage-deflate; client_no_context_takeover",
      "permessage-deflate; server_no_context_takeover",
      "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
      "permessage-deflate"
    ]
  },
  {
    // §7.1.1.1: the server may add server_no_context_takeover on its own
    name: "serverNoContextTakeover",
    options: { serverNoContextTakeover: true },
    expected: [
      "permessage-deflate; server_no_context_takeover",
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
      "permessage-deflate; server_no_context_takeover",
      "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9",
      "permessage-deflate; server_no_context_takeover"
    ]
  },
  {
    // §7.1.2.1: the server may limit its own window even when the client did not ask
    name: "serverMaxWindowBits 9",
    options: { serverMaxWindowBits: 9 },
    expected: [
      "permessage-deflate; server_max_window_bits=9",
      "permessage-deflate; client_no_context_takeover; server_max_window_bits=9",
      "permessage-deflate; server_no_context_takeover; server_max_window_bits=9",
      "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
      "permessage-deflate; server_max_window_bits=9"
    ]
  },
  {
    name: "threshold 0",
    options: { threshold: 0 },
    expected: [
      "permessage-deflate",
      "permessage-deflate; client_no_context_takeover",
      "permessage-deflate; server_no_context_takeover",
      "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
      "permessage-deflate"
    ]
  }
]

describe("ws client with perMessageDeflate against wsreactor", () => {
  for (const server of serverCases) {
    describe(`server perMessageDeflate: ${server.name}`, () => {
      let running: RunningServer
      let bytesOut = 0
      beforeAll(async () => {
        running = await startServer(echoApp, {
          perMessageDeflate: server.options,
          hooks: { onBytesOut: (n) => (bytesOut += n) }
        })
      })
      afterAll(async () => {
        await running?.close()
      })

      clientOptions.forEach(([clientName, clientOption], c) => {
        it(`client ${clientName}: negotiates ${server.expected[c]}, 50 round trips and fragmented sends echo exactly`, async () => {
          const { ws, extensions } = await open(running.port, clientOption)
          expect(normalize(extensions)).toBe(normalize(server.expected[c]))
          expect(ws.extensions).toBe("permessage-deflate") // ws accepted the response

          // 50 round trips on one connection: context takeover (or its reset) across messages.
          for (let i = 0; i < 50; i++) {
            const { data, binary } = messageFor(i)
            await expectEcho(ws, data, binary)
          }

          // The server compressed: a 64 KiB JSON echo costs a fraction of its size on the wire.
          const before = bytesOut
          await expectEcho(ws, jsonOf(64 * 1024, 99), false)
          expect(bytesOut - before).toBeLessThan(16 * 1024)

          // Fragmented sends: the first frame carries RSV1 (when ws compresses), the rest are continuations.
          const json = jsonOf(64 * 1024, 7)
          const reply = receiveOne(ws)
          const cuts = [0, 10_000, 30_000, 50_000, json.length]
          for (let k = 0; k < cuts.length - 1; k++) {
            ws.send(json.slice(cuts[k], cuts[k + 1]), { fin: k === cuts.length - 2 })
          }
          const got = await reply
          expect(got.isBinary).toBe(false)
          expect(got.data.toString("utf8") === json).toBe(true)

          const bin = randomBytes(3000)
          const binReply = receiveOne(ws)
          ws.send(bin.subarray(0, 1000), { binary: true, fin: false })
          ws.send(bin.subarray(1000, 1001), { binary: true, fin: false })
          ws.send(bin.subarray(1001), { binary: true, fin: true })
          const gotBin = await binReply
          expect(gotBin.isBinary).toBe(true)
          expect(gotBin.data.equals(bin)).toBe(true)

          const done = closedWith(ws)
          ws.close(1000)
          expect(await done).toBe(1000)
        }, 60_000)
      })
    })
  }
})

// ---------------------------------------------------------------- 2. on the wire

/** inflate one message payload as RFC 7692 §7.2.2 says: append 00 00 ff ff. */
const inflate = (payload: Buffer): Buffer => inflateSync(Buffer.concat([payload, TAIL]))

/**
 * The client side of the server's context takeover: each payload continues the deflate stream of the
 * ones before, so inflate them all and keep what the last one added (quadratic, fine for a few KiB).
 */
const makeInflater = () => {
  const history: Array<Buffer> = []
  let emitted = 0
  return (payload: Buffer): Buffer => {
    history.push(payload, TAIL)
    const all = inflateSync(Buffer.concat(history))
    const out = all.subarray(emitted)
    emitted = all.length
    return out
  }
}

// a sync-flushed stream has no final block: do not ask zlib to finish it
const inflateSync = (data: Buffer): Buffer => zlib.inflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH })

/** deflate one message as a client would: sync flush, tail removed (§7.2.1). */
const deflate = (data: string | Buffer): Buffer => {
  const out = zlib.deflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH })
  expect(out.subarray(-4).equals(TAIL)).toBe(true)
  return out.subarray(0, -4)
}

const rawConnect = async (port: number, extensions?: ReadonlyArray<string>) => {
  const client = await connect(port, extensions === undefined ? {} : { extensions })
  raws.add(client)
  return client
}

describe("permessage-deflate on the wire (raw client)", () => {
  let server: RunningServer
  let plain: RunningServer
  beforeAll(async () => {
    server = await startServer(echoApp, { perMessageDeflate: true })
    plain = await startServer(echoApp)
  })
  afterAll(async () => {
    await server?.close()
    await plain?.close()
  })

  it("a compressible 4 KiB text comes back with RSV1 on a single frame, smaller, and inflates with the tail", async () => {
    const client = await rawConnect(server.port, ["permessage-deflate"])
    expect(client.response.headers["sec-websocket-extensions"]).toBe("permessage-deflate")
    const text = textOf(4096)
    client.sendFrame({ opcode: Opcode.text, payload: text })
    const first = await client.nextFrame()
    expect(first).toMatchObject({ fin: true, rsv: Rsv.rsv1, opcode: Opcode.text })
    expect(first.payload.length).toBeLessThan(4096)
    // §7.2.1: the sender removed the 00 00 ff ff of its sync flush
    expect(first.payload.subarray(-4).equals(TAIL)).toBe(false)
    expect(inflate(first.payload).toString("utf8")).toBe(text)

    // Context takeover (§7.1.1.1 not negotiated): the same text again is mostly a back-reference
    // into the previous message, and only inflates with that message's history.
    client.sendFrame({ opcode: Opcode.text, payload: text })
    const second = await client.nextFrame()
    expect(second.rsv).toBe(Rsv.rsv1)
    expect(second.payload.length).toBeLessThan(first.payload.length)
    const both = inflateSync(Buffer.concat([first.payload, TAIL, second.payload, TAIL]))
    expect(both.toString("utf8")).toBe(text + text)

    // Below the 1 KiB threshold: sent as is, RSV1 = 0 (§6.1 allows uncompressed messages).
    const small = textOf(100)
    client.sendFrame({ opcode: Opcode.text, payload: small })
    const third = await client.nextFrame()
    expect(third).toMatchObject({ fin: true, rsv: 0, opcode: Opcode.text })
    expect(third.payload.toString("utf8")).toBe(small)

    // Control frames are never compressed (§6.1): the pong has RSV1 = 0 (expectPong checks it).
    client.sendFrame({ opcode: Opcode.ping, payload: textOf(100) })
    await client.expectPong(textOf(100))
    await client.closeCleanly()
  })

  it("compressed client messages are inflated: single frame, fragmented, empty, BFINAL set, binary", async () => {
    const client = await rawConnect(server.port, ["permessage-deflate; client_max_window_bits"])
    expect(client.response.headers["sec-websocket-extensions"]).toBe("permessage-deflate")
    const inflateNext = makeInflater()
    const readInflated = async () => {
      const frame = await client.nextFrame()
      expect(frame.fin).toBe(true)
      return { opcode: frame.opcode, data: frame.rsv === Rsv.rsv1 ? inflateNext(frame.payload) : frame.payload }
    }

    const text = textOf(3000)
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: deflate(text) })
    expect(await readInflated()).toEqual({ opcode: Opcode.text, data: Buffer.from(text) })

    // Fragmented: RSV1 on the first frame only (§6.1), the compressed bytes split anywhere.
    const wire = deflate(jsonOf(20_000, 1))
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, fin: false, payload: wire.subarray(0, 5) })
    client.sendFrame({ opcode: Opcode.continuation, fin: false, payload: wire.subarray(5, 6) })
    client.sendFrame({ opcode: Opcode.continuation, fin: true, payload: wire.subarray(6) })
    expect(await readInflated()).toEqual({ opcode: Opcode.text, data: Buffer.from(jsonOf(20_000, 1)) })

    // An empty compressed message: the single byte 0x00 (§7.2.3.6) and a zero-length payload.
    client.sendFrame({ opcode: Opcode.binary, rsv: Rsv.rsv1, payload: Buffer.from([0x00]) })
    expect(await readInflated()).toEqual({ opcode: Opcode.binary, data: Buffer.alloc(0) })
    client.sendFrame({ opcode: Opcode.binary, rsv: Rsv.rsv1, payload: Buffer.alloc(0) })
    expect(await readInflated()).toEqual({ opcode: Opcode.binary, data: Buffer.alloc(0) })

    // §7.2.3: a message may end the DEFLATE stream (BFINAL = 1); the next one starts a new one.
    const finished = zlib.deflateRawSync(Buffer.from(textOf(2000)))
    client.sendFrame({ opcode: Opcode.binary, rsv: Rsv.rsv1, payload: finished })
    expect(await readInflated()).toEqual({ opcode: Opcode.binary, data: Buffer.from(textOf(2000)) })
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: deflate("after a final block") })
    expect(await readInflated()).toEqual({ opcode: Opcode.text, data: Buffer.from("after a final block") })

    // Context takeover from the client: two messages out of one deflate stream.
    const stream = zlib.createDeflateRaw()
    const flushOne = (data: string) =>
      new Promise<Buffer>((resolve) => {
        const chunks: Array<Buffer> = []
        const onData = (chunk: Buffer) => chunks.push(chunk)
        stream.on("data", onData)
        stream.write(data)
        stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
          stream.off("data", onData)
          resolve(Buffer.concat(chunks).subarray(0, -4))
        })
      })
    const m1 = await flushOne(textOf(5000))
    const m2 = await flushOne(textOf(5000))
    expect(m2.length).toBeLessThan(m1.length) // m2 refers back into m1
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: m1 })
    expect((await readInflated()).data.toString()).toBe(textOf(5000))
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: m2 })
    expect((await readInflated()).data.toString()).toBe(textOf(5000))
    stream.close()
    await client.closeCleanly()
  })

  it("RSV1 on a ping is a 1002 (RFC 7692 §6.1: control frames are never compressed)", async () => {
    const client = await rawConnect(server.port, ["permessage-deflate"])
    client.sendFrame({ opcode: Opcode.ping, rsv: Rsv.rsv1, payload: "x" })
    await client.expectClose([1002])
  })

  it("RSV1 on a continuation frame is a 1002 (§6.1: first frame only)", async () => {
    const client = await rawConnect(server.port, ["permessage-deflate"])
    const wire = deflate(textOf(2000))
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, fin: false, payload: wire.subarray(0, 10) })
    client.sendFrame({ opcode: Opcode.continuation, rsv: Rsv.rsv1, fin: true, payload: wire.subarray(10) })
    await client.expectClose([1002])
  })

  it("RSV1 without the extension negotiated is a 1002 (deflate server, no offer)", async () => {
    const client = await rawConnect(server.port)
    expect(client.response.headers["sec-websocket-extensions"]).toBeUndefined()
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: deflate("hello") })
    await client.expectClose([1002])
  })

  it("RSV1 without the extension negotiated is a 1002 (server without deflate ignores the offer)", async () => {
    const client = await rawConnect(plain.port, ["permessage-deflate"])
    expect(client.response.headers["sec-websocket-extensions"]).toBeUndefined()
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: deflate("hello") })
    await client.expectClose([1002])
  })

  it("corrupt deflate data fails the connection with 1007", async () => {
    const client = await rawConnect(server.port, ["permessage-deflate"])
    // BTYPE = 11 is reserved (RFC 1951 §3.2.3): an error at the first byte
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: Buffer.from([0xff, 0xff, 0xff, 0xff]) })
    await client.expectClose([1007])
  })

  it("corrupt deflate data after good messages fails with 1007 (a bad dynamic block header)", async () => {
    const client = await rawConnect(server.port, ["permessage-deflate"])
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: deflate(textOf(2000)) })
    const frame = await client.nextFrame()
    expect(inflate(frame.payload).toString()).toBe(textOf(2000))
    // 0x04: BFINAL 0, BTYPE 10 (dynamic); then HDIST = 31, i.e. 32 distance codes, more than 30 (RFC 1951 §3.2.7)
    client.sendFrame({ opcode: Opcode.binary, rsv: Rsv.rsv1, payload: Buffer.from([0x04, 0xff, 0xff, 0xff, 0xff, 0xff]) })
    await client.expectClose([1007])
  })

  it("compressed text that inflates to invalid UTF-8 is a 1007 (RFC 7692 §8.1)", async () => {
    const client = await rawConnect(server.port, ["permessage-deflate"])
    client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: deflate(Buffer.from([0x68, 0x69, 0xc3, 0x28])) })
    await client.expectClose([1007])
  })

  describe("offers the server must decline: 101 without Sec-WebSocket-Extensions, then plain frames", () => {
    const declined = [
      "permessage-deflate; server_max_window_bits=8", // zlib cannot deflate with a 256-byte window
      "permessage-deflate; server_max_window_bits=16", // §7.1.2.1: 8..15
      "permessage-deflate; server_max_window_bits", // §7.1.2.1: a value is required
      "permessage-deflate; client_max_window_bits=7",
      "permessage-deflate; client_max_window_bits=010", // no leading zeros
      "permessage-deflate; server_no_context_takeover=1", // §7.1.1.1: no value
      "permessage-deflate; foo", // §7: unknown parameter
      "permessage-deflate; client_no_context_takeover; client_no_context_takeover", // §7: duplicate
      "x-webkit-deflate-frame"
    ]
    for (const offer of declined) {
      it(offer, async () => {
        const client = await rawConnect(server.port, [offer])
        expect(client.response.status).toBe(101)
        expect(client.response.headers["sec-websocket-extensions"]).toBeUndefined()
        const text = textOf(4096)
        client.sendFrame({ opcode: Opcode.text, payload: text })
        const frame = await client.nextFrame()
        expect(frame).toMatchObject({ fin: true, rsv: 0, opcode: Opcode.text })
        expect(frame.payload.toString("utf8")).toBe(text)
        client.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: deflate("hello") })
        await client.expectClose([1002])
      })
    }

    it("a declined offer followed by an acceptable one: the second is accepted (§5)", async () => {
      const client = await rawConnect(server.port, [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; client_max_window_bits"
      ])
      expect(client.response.headers["sec-websocket-extensions"]).toBe("permessage-deflate")
      client.sendFrame({ opcode: Opcode.text, payload: textOf(4096) })
      const frame = await client.nextFrame()
      expect(frame.rsv).toBe(Rsv.rsv1)
      expect(inflate(frame.payload).toString()).toBe(textOf(4096))
      await client.closeCleanly()
    })
  })
})

describe("a bad compressed message followed at once by the peer's FIN", () => {
  // The inflate error comes after zlib, when the peer's EOF may already be read: our write side is
  // still open, so the close frame 1007 must still go out (RFC 6455 §7.1.7, §8.1).
  let server: RunningServer
  const closes: Array<CloseInfo> = []
  beforeAll(async () => {
    server = await startServer(echoApp, { perMessageDeflate: true, hooks: { onClose: (_, info) => closes.push(info) } })
  })
  afterAll(async () => {
    await server?.close()
  })

  const cases = [
    ["corrupt deflate data", Buffer.from([0xff, 0xff, 0xff, 0xff])],
    ["deflated invalid UTF-8", Buffer.from([0x68, 0x69, 0xc3, 0x28])]
  ] as const
  for (const [what, bytes] of cases) {
    for (const sameWrite of [false, true]) {
      it(`${what}, then FIN ${sameWrite ? "in the same TCP write" : "right after"}: close 1007, reported as 1007`, async () => {
        const client = await rawConnect(server.port, ["permessage-deflate"])
        const before = closes.length
        const payload = what === "corrupt deflate data" ? bytes : deflate(bytes)
        const frame = encodeFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload })
        if (sameWrite) client.socket.end(frame)
        else {
          client.sendRaw(frame)
          client.socket.end()
        }
        const close = await client.nextFrame()
        expect(close.opcode).toBe(Opcode.close)
        expect(close.payload.readUInt16BE(0)).toBe(1007)
        await client.expectTcpClosed()
        await expect.poll(() => closes.length, { timeout: WAIT_MS }).toBe(before + 1)
        expect(closes[before]).toMatchObject({ code: 1007, wasClean: false, initiatedBy: "local" })
      })
    }
  }
})

// ---------------------------------------------------------------- 3. decompression bomb

/** `total` zero bytes deflated in 1 MiB steps (never holding them), sync-flushed, tail stripped. */
const bombOf = async (total: number): Promise<Buffer> => {
  const stream = zlib.createDeflateRaw({ level: 9, memLevel: 9 })
  const chunks: Array<Buffer> = []
  stream.on("data", (chunk: Buffer) => chunks.push(chunk))
  const zeros = Buffer.alloc(MiB)
  for (let written = 0; written < total; written += MiB) {
    if (!stream.write(zeros)) await new Promise((resolve) => stream.once("drain", resolve))
  }
  await new Promise<void>((resolve) => stream.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()))
  stream.close()
  const out = Buffer.concat(chunks)
  expect(out.subarray(-4).equals(TAIL)).toBe(true)
  return out.subarray(0, -4)
}

describe("decompression bomb through the real server", () => {
  let server: RunningServer
  let bomb: Buffer
  beforeAll(async () => {
    server = await startServer(echoApp, { perMessageDeflate: true, maxMessageSize: MiB })
    bomb = await bombOf(256 * MiB)
  }, 60_000)
  afterAll(async () => {
    await server?.close()
  })

  it("~250 KiB that inflates to 256 MiB: close 1009, RSS grows < 64 MiB, another connection keeps echoing", async () => {
    expect(bomb.length).toBeLessThan(300 * 1024) // well under maxMessageSize on the wire
    expect(bomb.length).toBeGreaterThan(200 * 1024)

    // A bystander echoing all along, compressed too.
    const { ws: bystander } = await open(server.port, { threshold: 0 })
    let echoes = 0
    let stop = false
    const chatter = (async () => {
      while (!stop) {
        await expectEcho(bystander, jsonOf(4096, echoes), false)
        echoes++
      }
    })()

    const rssBefore = process.memoryUsage().rss
    let rssPeak = rssBefore
    const sampler = setInterval(() => {
      rssPeak = Math.max(rssPeak, process.memoryUsage().rss)
    }, 2)
    try {
      const client = await rawConnect(server.port, ["permessage-deflate"])
      const echoesBefore = echoes
      client.sendFrame({ opcode: Opcode.binary, rsv: Rsv.rsv1, payload: bomb })
      const close = await client.expectClose([1009], WAIT_MS)
      expect(close.code).toBe(1009)
      // Three more at once: the limiter queues them, each stops at the limit.
      const more = await Promise.all([0, 1, 2].map(() => rawConnect(server.port, ["permessage-deflate"])))
      for (const c of more) c.sendFrame({ opcode: Opcode.text, rsv: Rsv.rsv1, payload: bomb })
      await Promise.all(more.map((c) => c.expectClose([1009], WAIT_MS)))
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect(echoes).toBeGreaterThan(echoesBefore)
    } finally {
      clearInterval(sampler)
      stop = true
      await chatter
    }
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss)
    const grewMiB = (rssPeak - rssBefore) / MiB
    console.log(`bomb: ${bomb.length} B on the wire, RSS +${grewMiB.toFixed(1)} MiB at peak, ${echoes} bystander echoes`)
    expect(grewMiB).toBeLessThan(64)

    // The bystander still works afterwards.
    await expectEcho(bystander, jsonOf(4096, 1234), false)
  }, 60_000)

  it("every zlib stream is released once the connections end (finalizers)", async () => {
    // the bomb connections and the bystander (terminated after the previous test) release theirs
    await expect.poll(() => liveZlibStreams(), { timeout: WAIT_MS }).toBe(0)
    const { ws } = await open(server.port, true)
    expect(liveZlibStreams()).toBe(0) // created on first use, not per connection
    await expectEcho(ws, jsonOf(4096, 1), false)
    await expectEcho(ws, Buffer.from(jsonOf(4096, 2)), true)
    expect(liveZlibStreams()).toBe(2) // one deflater, one inflater
    const done = closedWith(ws)
    ws.close(1000)
    await done
    await expect.poll(() => liveZlibStreams(), { timeout: WAIT_MS }).toBe(0)
  })
})
