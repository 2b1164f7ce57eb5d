/**
 * A raw-TCP WebSocket client for the conformance suite.
 *
 * It has its OWN minimal frame encoder/decoder on purpose: the suite is an
 * independent check of the server, so it must not share code with src/domain.
 *
 * @example
 * const client = await connect(port)
 * client.sendFrame({ opcode: Opcode.text, payload: "hi" })
 * await client.expectMessage(Opcode.text, "hi")
 * await client.closeCleanly()
 */
import * as net from "node:net"
import { createHash, randomBytes } from "node:crypto"

/** RFC 6455 §5.2 opcodes. */
export const Opcode = {
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa
} as const

/** RSV bits as a 3-bit number: RSV1 = 4, RSV2 = 2, RSV3 = 1. */
export const Rsv = { rsv1: 4, rsv2: 2, rsv3: 1 } as const

/** Pseudo close code meaning "a close frame with an empty payload" (RFC 6455 §7.1.5). */
export const NoStatus = 1005

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/** Default time to wait for a reply before failing the test. */
export const DEFAULT_TIMEOUT = 2_000

export interface Frame {
  readonly fin: boolean
  readonly rsv: number
  readonly opcode: number
  readonly payload: Buffer
}

export interface FrameSpec {
  readonly fin?: boolean
  readonly rsv?: number
  readonly opcode: number
  readonly payload?: Uint8Array | string
  /** Client frames must be masked (RFC 6455 §5.3); default true. */
  readonly mask?: boolean
  readonly maskKey?: Uint8Array
  /** Length encoding: minimal (default), or forced 16-bit / 64-bit extended length. */
  readonly lengthForm?: "minimal" | 16 | 64
}

export interface Message {
  readonly opcode: number
  readonly payload: Buffer
  readonly frameCount: number
}

export interface CloseInfo {
  /** The close code, or NoStatus (1005) for an empty close payload. */
  readonly code: number
  readonly reason: string
}

export interface HttpResponse {
  readonly status: number
  readonly statusLine: string
  /** Header names in lower case; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string>>
}

export interface ConnectOptions {
  readonly path?: string
  readonly headers?: Readonly<Record<string, string>>
  readonly protocols?: ReadonlyArray<string>
  readonly extensions?: ReadonlyArray<string>
  /** Bytes sent in the same write as the upgrade request (e.g. a first frame). */
  readonly trailing?: Uint8Array
}

export interface RawClient {
  readonly socket: net.Socket
  /** Writes bytes as-is. */
  readonly sendRaw: (bytes: Uint8Array) => void
  /** Writes bytes in slices of `chunkSize`, waiting `delayMs` (or a macrotask if 0) between slices. */
  readonly sendChunked: (bytes: Uint8Array, chunkSize: number, delayMs?: number) => Promise<void>
  readonly sendFrame: (spec: FrameSpec) => void
  /** Sends a masked close frame; `code` undefined means an empty payload. */
  readonly sendClose: (code?: number, reason?: string | Uint8Array) => void
  readonly nextFrame: (timeoutMs?: number) => Promise<Frame>
  /** Reads one whole data message, reassembling fragments; fails on close or control frames. */
  readonly readMessage: (timeoutMs?: number) => Promise<Message>
  readonly expectMessage: (opcode: number, payload: Uint8Array | string, timeoutMs?: number) => Promise<Message>
  readonly expectPong: (payload: Uint8Array | string, timeoutMs?: number) => Promise<void>
  /**
   * Reads until a close frame, checks its code is one of `codes` (NoStatus = empty payload),
   * answers with a close frame and waits for the server to end TCP.
   */
  readonly expectClose: (codes: ReadonlyArray<number>, timeoutMs?: number) => Promise<CloseInfo>
  /** Like expectClose, but a TCP close without a close frame is accepted too (RFC 6455 §7.1.7). */
  readonly expectCloseOrDrop: (codes: ReadonlyArray<number>, timeoutMs?: number) => Promise<CloseInfo | "dropped">
  /** Waits for the server to end TCP; fails if unread bytes are left. */
  readonly expectTcpClosed: (timeoutMs?: number) => Promise<void>
  /** Fails if any byte arrives within `ms`. */
  readonly expectSilence: (ms: number) => Promise<void>
  /** Sends close 1000, expects close 1000 (or empty) back and the TCP end. */
  readonly closeCleanly: (timeoutMs?: number) => Promise<void>
  /** Reads an HTTP response head (up to the blank line); the rest stays buffered. */
  readonly readHttpResponse: (timeoutMs?: number) => Promise<HttpResponse>
  readonly isEnded: () => boolean
  readonly buffered: () => number
  readonly destroy: () => void
}

const toBuffer = (data: Uint8Array | string | undefined): Buffer =>
  data === undefined ? Buffer.alloc(0) : typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data)

/** XOR in place with a 4-byte key (RFC 6455 §5.3). */
const applyMask = (payload: Buffer, key: Uint8Array): void => {
  for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3]!
}

/**
 * Encodes one frame, independently of src/domain.
 *
 * @example
 * encodeFrame({ opcode: Opcode.ping, payload: "x", mask: false }) // <89 01 78>
 */
export const encodeFrame = (spec: FrameSpec): Buffer => {
  const payload = Buffer.from(toBuffer(spec.payload)) // copy: masking is in place
  const fin = spec.fin ?? true
  const rsv = spec.rsv ?? 0
  const mask = spec.mask ?? true
  const n = payload.length
  const form = spec.lengthForm ?? "minimal"
  const len16 = form === 16 || (form === "minimal" && n > 125 && n <= 0xffff)
  const len64 = form === 64 || (form === "minimal" && n > 0xffff)
  const header = Buffer.alloc(2 + (len16 ? 2 : len64 ? 8 : 0) + (mask ? 4 : 0))
  header[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (spec.opcode & 0x0f)
  let offset = 2
  if (len16) {
    header[1] = 126
    header.writeUInt16BE(n, 2)
    offset = 4
  } else if (len64) {
    header[1] = 127
    header.writeBigUInt64BE(BigInt(n), 2)
    offset = 10
  } else {
    header[1] = n
  }
  if (mask) {
    header[1] |= 0x80
    const key = spec.maskKey ?? randomBytes(4)
    Buffer.from(key).copy(header, offset, 0, 4)
    applyMask(payload, key)
  }
  return Buffer.concat([header, payload])
}

/** A close frame payload from a code and reason (RFC 6455 §5.5.1); no code = empty payload. */
export const closePayload = (code?: number, reason?: string | Uint8Array): Buffer => {
  if (code === undefined) return Buffer.alloc(0)
  const head = Buffer.alloc(2)
  head.writeUInt16BE(code, 0)
  return Buffer.concat([head, toBuffer(reason)])
}

/** The Sec-WebSocket-Accept value for a key (RFC 6455 §4.2.2). */
export const acceptFor = (key: string): string => createHash("sha1").update(key + GUID).digest("base64")

/** A valid upgrade request (RFC 6455 §4.1). */
export const upgradeRequest = (port: number, key: string, options: ConnectOptions = {}): string => {
  const lines = [
    `GET ${options.path ?? "/"} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${key}`,
    "Sec-WebSocket-Version: 13"
  ]
  if (options.protocols && options.protocols.length > 0) lines.push(`Sec-WebSocket-Protocol: ${options.protocols.join(", ")}`)
  if (options.extensions && options.extensions.length > 0) lines.push(`Sec-WebSocket-Extensions: ${options.extensions.join(", ")}`)
  for (const [name, value] of Object.entries(options.headers ?? {})) lines.push(`${name}: ${value}`)
  return lines.join("\r\n") + "\r\n\r\n"
}

const utf8Fatal = new TextDecoder("utf-8", { fatal: true })
const isValidUtf8 = (bytes: Uint8Array): boolean => {
  try {
    utf8Fatal.decode(bytes)
    return true
  } catch {
    return false
  }
}

const describePayload = (b: Buffer): string =>
  b.length <= 64 ? `<${b.toString("hex")}>` : `${b.length} bytes <${b.subarray(0, 32).toString("hex")}...>`

const sameBytes = (a: Buffer, b: Buffer): boolean => a.length === b.length && a.equals(b)

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Opens a TCP connection without any handshake.
 *
 * @example
 * const client = await openRaw(port)
 * client.sendRaw(Buffer.from("GET / HTTP/1.1\r\n\r\n"))
 */
export const openRaw = (port: number): Promise<RawClient> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.setNoDelay(true)
    const chunks: Array<Buffer> = []
    let size = 0
    let ended = false
    const waiters = new Set<() => void>()
    const wake = (): void => {
      for (const w of [...waiters]) w()
    }

    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk)
      size += chunk.length
      wake()
    })
    const onEnd = (): void => {
      ended = true
      wake()
    }
    socket.on("end", onEnd)
    socket.on("close", onEnd)
    // EPIPE / ECONNRESET after the server closed are expected in failure cases.
    socket.on("error", onEnd)

    /** Resolves once `cond` holds; rejects on timeout, or on TCP end while it does not hold. */
    const waitUntil = (cond: () => boolean, timeoutMs: number, what: string): Promise<void> =>
      new Promise((res, rej) => {
        let timer: ReturnType<typeof setTimeout> | undefined
        const check = (): void => {
          if (cond()) {
            cleanup()
            res()
          } else if (ended) {
            cleanup()
            rej(new Error(`connection closed by the server while waiting for ${what}`))
          }
        }
        const cleanup = (): void => {
          if (timer !== undefined) clearTimeout(timer)
          waiters.delete(check)
        }
        waiters.add(check)
        timer = setTimeout(() => {
          cleanup()
          rej(new Error(`timeout (${timeoutMs} ms) waiting for ${what}`))
        }, timeoutMs)
        check()
      })

    const flatten = (): Buffer => {
      if (chunks.length > 1) {
        const all = Buffer.concat(chunks)
        chunks.length = 0
        chunks.push(all)
      }
      return chunks[0] ?? Buffer.alloc(0)
    }

    const peek = (n: number): Buffer => {
      if (chunks.length > 0 && chunks[0]!.length >= n) return chunks[0]!.subarray(0, n)
      return flatten().subarray(0, n)
    }

    /** Consumes n bytes without concatenating the whole inbox (16 MiB replies). */
    const take = (n: number): Buffer => {
      const out = Buffer.allocUnsafe(n)
      let filled = 0
      while (filled < n) {
        const head = chunks[0]!
        const want = n - filled
        if (head.length <= want) {
          head.copy(out, filled)
          filled += head.length
          chunks.shift()
        } else {
          head.copy(out, filled, 0, want)
          chunks[0] = head.subarray(want)
          filled += want
        }
      }
      size -= n
      return out
    }

    const sendRaw = (bytes: Uint8Array): void => {
      if (!socket.destroyed && socket.writable) socket.write(bytes)
    }

    const sendChunked = async (bytes: Uint8Array, chunkSize: number, delayMs = 0): Promise<void> => {
      for (let i = 0; i < bytes.length; i += chunkSize) {
        sendRaw(bytes.subarray(i, i + chunkSize))
        await (delayMs > 0 ? sleep(delayMs) : new Promise<void>((r) => setImmediate(r)))
      }
    }

    const sendFrame = (spec: FrameSpec): void => sendRaw(encodeFrame(spec))

    const sendClose = (code?: number, reason?: string | Uint8Array): void =>
      sendFrame({ opcode: Opcode.close, payload: closePayload(code, reason) })

    const nextFrame = async (timeoutMs = DEFAULT_TIMEOUT): Promise<Frame> => {
      const deadline = Date.now() + timeoutMs
      const left = (): number => Math.max(1, deadline - Date.now())
      await waitUntil(() => size >= 2, left(), "a frame header")
      const [b0, b1] = peek(2)
      const len7 = b1! & 0x7f
      // RFC 6455 §5.1: a server MUST NOT mask frames it sends.
      if ((b1! & 0x80) !== 0) throw new Error("server sent a masked frame (RFC 6455 §5.1)")
      const headerLen = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0)
      await waitUntil(() => size >= headerLen, left(), "an extended length")
      const header = peek(headerLen)
      let length = len7
      if (len7 === 126) length = header.readUInt16BE(2)
      else if (len7 === 127) {
        const big = header.readBigUInt64BE(2)
        if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`server frame length too large: ${big}`)
        length = Number(big)
      }
      await waitUntil(() => size >= headerLen + length, left(), `a ${length}-byte frame payload`)
      take(headerLen)
      return { fin: (b0! & 0x80) !== 0, rsv: (b0! >> 4) & 7, opcode: b0! & 0x0f, payload: take(length) }
    }

    const closeInfoOf = (frame: Frame): CloseInfo => {
      const p = frame.payload
      if (p.length === 0) return { code: NoStatus, reason: "" }
      if (p.length === 1) throw new Error("server close frame has a 1-byte payload (RFC 6455 §5.5.1)")
      if (!isValidUtf8(p.subarray(2))) throw new Error("server close reason is not valid UTF-8")
      return { code: p.readUInt16BE(0), reason: p.subarray(2).toString("utf8") }
    }

    const checkServerFrame = (frame: Frame): void => {
      if (frame.rsv !== 0) throw new Error(`server frame has RSV bits ${frame.rsv} set`)
      if (frame.opcode >= 8 && (!frame.fin || frame.payload.length > 125)) {
        throw new Error(`server sent an invalid control frame (opcode ${frame.opcode})`)
      }
    }

    const readMessage = async (timeoutMs = DEFAULT_TIMEOUT): Promise<Message> => {
      const deadline = Date.now() + timeoutMs
      const parts: Array<Buffer> = []
      let opcode = -1
      for (;;) {
        const frame = await nextFrame(Math.max(1, deadline - Date.now()))
        checkServerFrame(frame)
        if (frame.opcode === Opcode.close) {
          const info = closeInfoOf(frame)
          throw new Error(`expected a message, got close ${info.code} "${info.reason}"`)
        }
        if (frame.opcode >= 8) throw new Error(`expected a message, got control frame opcode ${frame.opcode}`)
        if (opcode === -1) {
          if (frame.opcode === Opcode.continuation) throw new Error("server sent a continuation without a start")
          opcode = frame.opcode
        } else if (frame.opcode !== Opcode.continuation) {
          throw new Error(`server started a new message (opcode ${frame.opcode}) inside a fragmented one`)
        }
        parts.push(frame.payload)
        if (frame.fin) {
          const payload = Buffer.concat(parts)
          if (opcode === Opcode.text && !isValidUtf8(payload)) throw new Error("server sent a text message that is not UTF-8")
          return { opcode, payload, frameCount: parts.length }
        }
      }
    }

    const expectMessage = async (
      opcode: number,
      payload: Uint8Array | string,
      timeoutMs = DEFAULT_TIMEOUT
    ): Promise<Message> => {
      const expected = toBuffer(payload)
      const msg = await readMessage(timeoutMs)
      if (msg.opcode !== opcode) throw new Error(`expected opcode ${opcode}, got ${msg.opcode}`)
      if (!sameBytes(msg.payload, expected)) {
        throw new Error(`echo differs: expected ${describePayload(expected)}, got ${describePayload(msg.payload)}`)
      }
      return msg
    }

    const expectPong = async (payload: Uint8Array | string, timeoutMs = DEFAULT_TIMEOUT): Promise<void> => {
      const expected = toBuffer(payload)
      const frame = await nextFrame(timeoutMs)
      checkServerFrame(frame)
      if (frame.opcode !== Opcode.pong) throw new Error(`expected a pong, got opcode ${frame.opcode}`)
      if (!sameBytes(frame.payload, expected)) {
        throw new Error(`pong payload differs: expected ${describePayload(expected)}, got ${describePayload(frame.payload)}`)
      }
    }

    const expectTcpClosed = async (timeoutMs = DEFAULT_TIMEOUT): Promise<void> => {
      await waitUntil(() => ended, timeoutMs, "the server to end TCP").catch((e: unknown) => {
        if (!ended) throw e
      })
      if (size > 0) throw new Error(`server sent ${size} unexpected bytes before ending TCP: ${describePayload(flatten())}`)
    }

    const readClose = async (
      codes: ReadonlyArray<number>,
      timeoutMs: number,
      allowDrop: boolean
    ): Promise<CloseInfo | "dropped"> => {
      const deadline = Date.now() + timeoutMs
      let frame: Frame
      try {
        frame = await nextFrame(timeoutMs)
      } catch (e) {
        if (allowDrop && ended && size === 0) return "dropped"
        throw new Error(`expected a close frame with code ${codes.join("/")}: ${(e as Error).message}`)
      }
      if (frame.opcode !== Opcode.close) {
        throw new Error(
          `expected a close frame with code ${codes.join("/")}, got opcode ${frame.opcode} ${describePayload(frame.payload)}`
        )
      }
      checkServerFrame(frame)
      const info = closeInfoOf(frame)
      if (!codes.includes(info.code)) {
        throw new Error(`expected close code ${codes.join("/")}, got ${info.code} "${info.reason}"`)
      }
      // RFC 6455 §5.5.1: answer the close, then the server closes TCP first (§7.1.1).
      sendClose(info.code === NoStatus ? undefined : info.code)
      await expectTcpClosed(Math.max(1, deadline - Date.now()))
      return info
    }

    const expectClose = async (codes: ReadonlyArray<number>, timeoutMs = DEFAULT_TIMEOUT): Promise<CloseInfo> =>
      (await readClose(codes, timeoutMs, false)) as CloseInfo

    const expectCloseOrDrop = (codes: ReadonlyArray<number>, timeoutMs = DEFAULT_TIMEOUT) =>
      readClose(codes, timeoutMs, true)

    const expectSilence = async (ms: number): Promise<void> => {
      await sleep(ms)
      if (size > 0) throw new Error(`expected no data, got ${describePayload(flatten())}`)
    }

    const closeCleanly = async (timeoutMs = DEFAULT_TIMEOUT): Promise<void> => {
      sendClose(1000)
      const frame = await nextFrame(timeoutMs)
      if (frame.opcode !== Opcode.close) throw new Error(`expected the close reply, got opcode ${frame.opcode}`)
      const info = closeInfoOf(frame)
      if (info.code !== 1000 && info.code !== NoStatus) throw new Error(`expected close 1000, got ${info.code}`)
      await expectTcpClosed(timeoutMs)
    }

    const readHttpResponse = async (timeoutMs = DEFAULT_TIMEOUT): Promise<HttpResponse> => {
      let end = -1
      await waitUntil(
        () => {
          if (size === 0) return false
          end = flatten().indexOf("\r\n\r\n")
          return end >= 0
        },
        timeoutMs,
        "an HTTP response"
      )
      const head = take(end + 4).toString("latin1")
      const [statusLine = "", ...lines] = head.slice(0, -4).split("\r\n")
      const match = /^HTTP\/1\.1 (\d{3})/.exec(statusLine)
      if (!match) throw new Error(`bad HTTP status line: ${JSON.stringify(statusLine)}`)
      const headers: Record<string, string> = {}
      for (const line of lines) {
        const colon = line.indexOf(":")
        if (colon <= 0) throw new Error(`bad HTTP header line: ${JSON.stringify(line)}`)
        const name = line.slice(0, colon).trim().toLowerCase()
        const value = line.slice(colon + 1).trim()
        headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`
      }
      return { status: Number(match[1]), statusLine, headers }
    }

    const client: RawClient = {
      socket,
      sendRaw,
      sendChunked,
      sendFrame,
      sendClose,
      nextFrame,
      readMessage,
      expectMessage,
      expectPong,
      expectClose,
      expectCloseOrDrop,
      expectTcpClosed,
      expectSilence,
      closeCleanly,
      readHttpResponse,
      isEnded: () => ended,
      buffered: () => size,
      destroy: () => {
        socket.destroy()
      }
    }
    socket.once("connect", () => resolve(client))
    socket.once("error", reject)
  })

/**
 * Opens TCP and performs the opening handshake (RFC 6455 §4.1), checking the
 * 101 response and Sec-WebSocket-Accept. Bytes after the response stay buffered.
 *
 * @example
 * const client = await connect(port, { protocols: ["chat"] })
 */
export const connect = async (
  port: number,
  options: ConnectOptions = {},
  timeoutMs = DEFAULT_TIMEOUT
): Promise<RawClient & { readonly response: HttpResponse }> => {
  const client = await openRaw(port)
  const key = randomBytes(16).toString("base64")
  const request = Buffer.from(upgradeRequest(port, key, options), "latin1")
  client.sendRaw(options.trailing ? Buffer.concat([request, options.trailing]) : request)
  const response = await client.readHttpResponse(timeoutMs).catch((e: unknown) => {
    client.destroy()
    throw e
  })
  const fail = (why: string): never => {
    client.destroy()
    throw new Error(`handshake failed: ${why} (${response.statusLine})`)
  }
  if (response.status !== 101) fail("status is not 101")
  if (response.headers["upgrade"]?.toLowerCase() !== "websocket") fail("Upgrade header is not websocket")
  if (!/(^|,)\s*upgrade\s*(,|$)/i.test(response.headers["connection"] ?? "")) fail("Connection header lacks Upgrade")
  if (response.headers["sec-websocket-accept"] !== acceptFor(key)) fail("wrong Sec-WebSocket-Accept")
  return { ...client, response }
}

/** A text payload of `n` ASCII bytes. */
export const textOf = (n: number): string => {
  const pattern = "The quick brown fox jumps over the lazy dog. 0123456789 "
  return pattern.repeat(Math.ceil(n / pattern.length)).slice(0, n)
}

/** A binary payload of `n` deterministic pseudo-random bytes. */
export const binaryOf = (n: number): Buffer => {
  const out = Buffer.allocUnsafe(n)
  let x = 0x12345678
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

/** Splits `bytes` into fragments of `size` (at least one, possibly empty, fragment). */
export const fragmentsOf = (bytes: Buffer, size: number): Array<Buffer> => {
  if (bytes.length === 0) return [bytes]
  const out: Array<Buffer> = []
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size))
  return out
}

/** Encodes a message as a sequence of frames (first frame `opcode`, the rest continuations). */
export const encodeFragmented = (opcode: number, fragments: ReadonlyArray<Uint8Array>): Buffer =>
  Buffer.concat(
    fragments.map((payload, i) =>
      encodeFrame({ opcode: i === 0 ? opcode : Opcode.continuation, fin: i === fragments.length - 1, payload })
    )
  )
