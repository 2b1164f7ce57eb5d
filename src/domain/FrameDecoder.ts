/**
 * Sans-I/O WebSocket frame decoder (RFC 6455 §5): feed it the bytes read from
 * the socket, get back whole messages, pings, pongs, the close frame, or the
 * first protocol violation with the close code to fail the connection with.
 *
 * Built for throughput: headers are parsed straight out of the incoming
 * chunks, a payload lying in one chunk is unmasked in place and returned as a
 * subarray (no copy), and text is UTF-8 checked as each frame (or piece of a
 * frame) arrives so invalid text fails fast.
 *
 * @example
 * import * as FrameDecoder from "./FrameDecoder.ts"
 * const decoder = FrameDecoder.make()
 * const { events, error } = decoder.feed(bytesFromSocket)
 * // events: [{ _tag: "Message", binary: false, data, compressed: false }], error: undefined
 */
import * as CloseCode from "./CloseCode.ts"
import { copyMasked, maskRange } from "./Mask.ts"
import { type ProtocolError, protocolError } from "./ProtocolError.ts"
import * as Utf8 from "./Utf8.ts"
import { Opcode } from "./Opcode.ts"

export { Opcode }

export interface DecoderOptions {
  /** "server": peer frames MUST be masked; "client": they MUST NOT be (RFC 6455 §5.1). */
  readonly role: "server" | "client"
  /** Largest frame or reassembled message accepted, in bytes (else 1009). */
  readonly maxMessageSize: number
  /** permessage-deflate negotiated: RSV1 allowed on the first frame of a data message (RFC 7692 §6). */
  readonly allowRsv1: boolean
}

export const defaultDecoderOptions: DecoderOptions = {
  role: "server",
  maxMessageSize: 16 * 1024 * 1024,
  allowRsv1: false
}

export type DecoderEvent =
  | {
    readonly _tag: "Message"
    readonly binary: boolean
    readonly data: Uint8Array
    /** RSV1 was set: `data` is deflated, and text is not UTF-8 checked yet. */
    readonly compressed: boolean
  }
  | { readonly _tag: "Ping"; readonly data: Uint8Array }
  | { readonly _tag: "Pong"; readonly data: Uint8Array }
  | { readonly _tag: "Close"; readonly code: number | undefined; readonly reason: string }

/**
 * One connection's frame decoder. It mutates itself as bytes arrive (`feed`),
 * and it takes ownership of the chunks it is fed: payloads are unmasked in
 * place and handed out as views of them, which is what makes decoding
 * copy-free. The fields are its state machine: where reading stands in the
 * input, the current frame's header, and the message being assembled.
 *
 * @example
 * const decoder = FrameDecoder.make({ role: "server", maxMessageSize: 1 << 20 })
 * const { events, error } = decoder.feed(bytesFromSocket)
 */
// Never pushed to (see fragmentsOf): every decoder starts with and returns to this one.
const NO_FRAGMENTS: Array<Uint8Array> = []

export class Decoder {
  readonly options: DecoderOptions
  /** Unconsumed input; reading starts at `offset` in `chunks[0]`. */
  chunks: Array<Uint8Array> = []
  offset = 0
  /** Unconsumed input bytes (sum over `chunks`, minus `offset`). */
  available = 0
  /** A Close frame or an error was seen: all further input is ignored. */
  finished = false
  /** Current frame: header read, payload not started yet (waiting for bytes). */
  awaitingPayload = false
  length = 0
  masked = false
  fin = false
  opcode = 0
  rsv1 = false
  m0 = 0
  m1 = 0
  m2 = 0
  m3 = 0
  /** Payload of a frame spanning chunks, filled as chunks arrive; undefined otherwise. */
  partial: Uint8Array | undefined = undefined
  partialFilled = 0
  /** Uncompressed text: the partial payload is UTF-8 checked as it arrives (fail fast). */
  partialChecked = false
  /** Fragmented data message in progress: its first opcode, or 0 for none. */
  messageOpcode = 0
  messageCompressed = false
  /** Shared and empty until a fragmented message needs its own (most connections never do). */
  fragments: Array<Uint8Array> = NO_FRAGMENTS
  /** Small fragments of the current message, copied together (see addFragment). */
  small: Uint8Array | undefined = undefined
  smallLength = 0
  messageLength = 0
  /** UTF-8 state of the text message so far (across frames and chunks). */
  utf8: Utf8.Utf8State = Utf8.UTF8_ACCEPT

  constructor(options: DecoderOptions) {
    this.options = options
  }

  /**
   * Decode one chunk from the peer, updating this decoder. The chunk now
   * belongs to the decoder: it may be unmasked in place and event data may be
   * views of it. After a Close event or an error, input is ignored.
   *
   * @example
   * const { events, error } = decoder.feed(chunk)
   * if (error !== undefined) failConnection(error.closeCode)
   */
  feed(chunk: Uint8Array): FeedResult {
    return decode(this, chunk, false)
  }

  /**
   * Decode bytes that stay the caller's: valid during this call only (a read
   * buffer reused for the next read). A payload that spans reads is filled
   * straight from them; whatever the decoder hands out or keeps (a payload
   * in this chunk, a fragment, an unfinished header) is copied out first.
   * Masked payloads are still unmasked in place, in the caller's bytes.
   *
   * @example
   * const { events } = decoder.feedBorrowed(readBuffer.subarray(0, bytesRead))
   * readBuffer.fill(0) // the events are unaffected
   */
  feedBorrowed(chunk: Uint8Array): FeedResult {
    return decode(this, chunk, true)
  }

  /**
   * Bytes held: unparsed input, a partly received frame and the fragments of
   * an unfinished message. Lets the caller bound memory.
   */
  get bufferedBytes(): number {
    return this.available + this.partialFilled + this.messageLength
  }
}

type DecoderState = Decoder

/**
 * A fresh decoder.
 *
 * @example
 * const decoder = make({ role: "server", maxMessageSize: 1 << 20 })
 */
export const make = (options?: Partial<DecoderOptions>): Decoder => {
  if (options === undefined) return new Decoder(defaultDecoderOptions)
  const role = options.role ?? defaultDecoderOptions.role
  const maxMessageSize = options.maxMessageSize ?? defaultDecoderOptions.maxMessageSize
  const allowRsv1 = options.allowRsv1 ?? defaultDecoderOptions.allowRsv1
  // A server makes every decoder with the same options: they share one object instead of
  // holding a copy each (48 bytes per idle connection).
  const last = lastOptions
  if (last.role === role && last.maxMessageSize === maxMessageSize && last.allowRsv1 === allowRsv1) {
    return new Decoder(last)
  }
  return new Decoder(lastOptions = { role, maxMessageSize, allowRsv1 })
}

let lastOptions: DecoderOptions = defaultDecoderOptions

export interface FeedResult {
  /** In wire order; events decoded before an error in the same chunk are included. */
  readonly events: ReadonlyArray<DecoderEvent>
  /** First violation; the decoder is finished after it. */
  readonly error: ProtocolError | undefined
}

const EMPTY = new Uint8Array(0)

// Payload buffers are always filled completely before anyone reads them, so they need no
// zeroing: on Node, Buffer.allocUnsafeSlow skips the memset (a measurable cost on large
// messages) and the shared pool; elsewhere a plain Uint8Array.
const allocate: (length: number) => Uint8Array = typeof Buffer === "function" && typeof Buffer.allocUnsafeSlow === "function"
  ? (length) => (length < 1024 ? new Uint8Array(length) : Buffer.allocUnsafeSlow(length))
  : (length) => new Uint8Array(length)
const NOTHING: FeedResult = Object.freeze({ events: Object.freeze([]) as ReadonlyArray<DecoderEvent>, error: undefined })
const textDecoder = new TextDecoder("utf-8")

const decode = (s: DecoderState, chunk: Uint8Array, borrowed: boolean): FeedResult => {
  if (s.finished) return NOTHING
  if (chunk.length > 0) {
    s.chunks.push(chunk)
    s.available += chunk.length
  }
  const events: Array<DecoderEvent> = []
  const error = run(s, events)
  if (error !== undefined) finish(s)
  if (borrowed) detach(s, chunk.buffer, events)
  // Most reads of a large message complete nothing: no result object for them.
  return events.length === 0 && error === undefined ? NOTHING : { events, error }
}

// After a borrowed chunk: nothing the decoder keeps or returns may still point into `buffer`.
// `partial` and `small` are the decoder's own allocations already.
const detach = (s: DecoderState, buffer: ArrayBufferLike, events: Array<DecoderEvent>): void => {
  const chunks = s.chunks
  for (let i = 0; i < chunks.length; i++) {
    const c = chunks[i]!
    if (c.buffer !== buffer) continue
    // The consumed head of the first chunk is not kept.
    if (i === 0 && s.offset > 0) {
      chunks[0] = copyOf(c.subarray(s.offset))
      s.offset = 0
    } else {
      chunks[i] = copyOf(c)
    }
  }
  const fragments = s.fragments
  for (let i = 0; i < fragments.length; i++) {
    if (fragments[i]!.buffer === buffer) fragments[i] = copyOf(fragments[i]!)
  }
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!
    if (e._tag === "Close" || e.data.buffer !== buffer) continue
    events[i] = e._tag === "Message" ? { ...e, data: copyOf(e.data) } : { _tag: e._tag, data: copyOf(e.data) }
  }
}

// A copy to keep: on Node small ones are carved from the Buffer pool (a Uint8Array of its own
// costs a backing store each), no zeroing for the rest.
const copyOf: (bytes: Uint8Array) => Uint8Array = typeof Buffer === "function" && typeof Buffer.allocUnsafe === "function"
  ? (bytes) => {
    const out = Buffer.allocUnsafe(bytes.length)
    out.set(bytes)
    return out
  }
  : (bytes) => bytes.slice()

// Byte `k` positions after the read offset, walking the chunk list (slow path:
// only used when a frame header straddles chunks).
const peek = (s: DecoderState, k: number): number => {
  let i = s.offset + k
  const chunks = s.chunks
  for (let c = 0; c < chunks.length; c++) {
    const chunk = chunks[c]!
    if (i < chunk.length) return chunk[i]!
    i -= chunk.length
  }
  return 0
}

// Drop `n` bytes of input (only for a header that straddles chunks).
const skip = (s: DecoderState, n: number): void => {
  s.available -= n
  const chunks = s.chunks
  let off = s.offset + n
  let c = 0
  while (c < chunks.length && off >= chunks[c]!.length) off -= chunks[c++]!.length
  if (c > 0) dropFirst(chunks, c)
  s.offset = off
}

// Drop the first `n` chunks: usually all of them (popped: the array keeps its backing store
// for the next read, where `length = 0` or `splice` would allocate).
const dropFirst = (chunks: Array<Uint8Array>, n: number): void => {
  if (n === chunks.length) {
    while (chunks.length > 0) chunks.pop()
  } else {
    chunks.splice(0, n)
  }
}

// Copy input into the partial payload, unmasking as it goes (one pass per byte
// with the native mask) and (for text) checking what arrived. Returns an error
// on invalid UTF-8, else undefined.
const fillPartial = (s: DecoderState): ProtocolError | undefined => {
  const dest = s.partial!
  const chunks = s.chunks
  const from = s.partialFilled
  let filled = from
  let used = 0
  while (filled < dest.length && used < chunks.length) {
    const chunk = chunks[used]!
    const take = Math.min(chunk.length - s.offset, dest.length - filled)
    const piece = take === chunk.length ? chunk : chunk.subarray(s.offset, s.offset + take)
    if (s.masked) {
      // Mask byte for payload position p is m[p % 4]: rotate to start at `filled`.
      const r = filled & 3
      const m0 = s.m0, m1 = s.m1, m2 = s.m2, m3 = s.m3
      if (r === 0) copyMasked(piece, dest, filled, m0, m1, m2, m3)
      else if (r === 1) copyMasked(piece, dest, filled, m1, m2, m3, m0)
      else if (r === 2) copyMasked(piece, dest, filled, m2, m3, m0, m1)
      else copyMasked(piece, dest, filled, m3, m0, m1, m2)
    } else {
      dest.set(piece, filled)
    }
    filled += take
    s.available -= take
    if (s.offset + take === chunk.length) {
      used++
      s.offset = 0
    } else {
      s.offset += take
    }
  }
  if (used > 0) dropFirst(chunks, used)
  if (filled === from) return undefined
  s.partialFilled = filled
  if (s.partialChecked) {
    // RFC 6455 §8.1 + Autobahn 6.4.3/6.4.4: fail as soon as invalid text arrives.
    s.utf8 = Utf8.validate(s.utf8, dest, from, filled)
    if (s.utf8 === Utf8.UTF8_REJECT) return protocolError("InvalidUtf8", "invalid UTF-8 in text message")
  }
  return undefined
}

const concat = (parts: Array<Uint8Array>, length: number): Uint8Array => {
  const out = allocate(length)
  let at = 0
  for (let i = 0; i < parts.length; i++) {
    out.set(parts[i]!, at)
    at += parts[i]!.length
  }
  return out
}

// RFC 6455 §5.5.1: empty, or a 2-byte code then a UTF-8 reason.
const closeEvent = (payload: Uint8Array): DecoderEvent | ProtocolError => {
  if (payload.length === 0) return { _tag: "Close", code: undefined, reason: "" }
  if (payload.length === 1) return protocolError("InvalidClosePayload", "1-byte close payload")
  const code = (payload[0]! << 8) | payload[1]!
  if (!CloseCode.isValidOnWire(code)) return protocolError("InvalidClosePayload", `close code ${code}`)
  const reasonBytes = payload.subarray(2)
  if (!Utf8.isValid(reasonBytes)) return protocolError("InvalidUtf8", "close reason is not UTF-8")
  return { _tag: "Close", code, reason: reasonBytes.length === 0 ? "" : textDecoder.decode(reasonBytes) }
}

// A frame's payload is complete: emit or accumulate. `checked`: UTF-8 of the
// payload was already validated into `s.utf8` (partial frames).
const onPayload = (
  s: DecoderState,
  payload: Uint8Array,
  checked: boolean,
  events: Array<DecoderEvent>
): ProtocolError | undefined => {
  const opcode = s.opcode
  if (opcode >= Opcode.Close) {
    if (opcode === Opcode.Ping) events.push({ _tag: "Ping", data: payload })
    else if (opcode === Opcode.Pong) events.push({ _tag: "Pong", data: payload })
    else {
      const close = closeEvent(payload)
      if (close._tag === "ProtocolError") return close
      events.push(close)
      // RFC 6455 §5.5.1: nothing after a close frame is processed.
      finish(s)
    }
    return undefined
  }
  // Data frame. Message kind and compression come from the first frame.
  const first = opcode !== Opcode.Continuation
  const text = first ? opcode === Opcode.Text : s.messageOpcode === Opcode.Text
  const compressed = first ? s.rsv1 : s.messageCompressed
  if (first && s.fin) {
    // Unfragmented message: the common case, no copy.
    if (text && !compressed) {
      const ok = checked ? s.utf8 === Utf8.UTF8_ACCEPT : Utf8.isValid(payload)
      s.utf8 = Utf8.UTF8_ACCEPT
      if (!ok) return protocolError("InvalidUtf8", "invalid UTF-8 in text message")
    }
    events.push({ _tag: "Message", binary: !text, data: payload, compressed })
    return undefined
  }
  if (text && !compressed && !checked) {
    // §8.1 fail-fast per fragment: do not wait for the rest of the message.
    s.utf8 = Utf8.validate(s.utf8, payload)
    if (s.utf8 === Utf8.UTF8_REJECT) return protocolError("InvalidUtf8", "invalid UTF-8 in text message")
  }
  if (first) {
    s.messageOpcode = opcode
    s.messageCompressed = compressed
  }
  if (payload.length > 0) addFragment(s, payload)
  s.messageLength += payload.length
  if (!s.fin) return undefined
  if (text && !compressed && s.utf8 !== Utf8.UTF8_ACCEPT) {
    return protocolError("InvalidUtf8", "text message ends inside a UTF-8 sequence")
  }
  flushSmall(s)
  const fragments = s.fragments
  const data = fragments.length === 0
    ? EMPTY
    : fragments.length === 1
    ? fragments[0]!
    : concat(fragments, s.messageLength)
  s.fragments = NO_FRAGMENTS
  s.messageLength = 0
  s.messageOpcode = 0
  s.utf8 = Utf8.UTF8_ACCEPT
  events.push({ _tag: "Message", binary: !text, data, compressed })
  return undefined
}

// Many tiny fragments must not cost an object each (the memory attack behind ws's
// GHSA-96hv-2xvq-fx4p): small ones are copied into one growing buffer, so a message
// costs at most about twice its size whatever its fragmentation.
const SMALL_FRAGMENT = 4096

const fragmentsOf = (s: DecoderState): Array<Uint8Array> =>
  s.fragments === NO_FRAGMENTS ? (s.fragments = []) : s.fragments

const addFragment = (s: DecoderState, payload: Uint8Array): void => {
  if (payload.length >= SMALL_FRAGMENT) {
    flushSmall(s)
    fragmentsOf(s).push(payload)
    return
  }
  let acc = s.small
  if (acc === undefined || s.smallLength + payload.length > acc.length) {
    const grown = new Uint8Array(Math.max(SMALL_FRAGMENT, 2 * (s.smallLength + payload.length)))
    if (acc !== undefined) grown.set(acc.subarray(0, s.smallLength))
    s.small = acc = grown
  }
  acc.set(payload, s.smallLength)
  s.smallLength += payload.length
}

const flushSmall = (s: DecoderState): void => {
  if (s.small === undefined) return
  fragmentsOf(s).push(s.small.subarray(0, s.smallLength))
  s.small = undefined
  s.smallLength = 0
}

const finish = (s: DecoderState): void => {
  s.small = undefined
  s.smallLength = 0
  s.finished = true
  s.chunks = []
  s.offset = 0
  s.available = 0
  s.partial = undefined
  s.partialFilled = 0
  s.fragments = NO_FRAGMENTS
  s.messageLength = 0
}

// Header checks that need only bytes 0 and 1 (RFC 6455 §5.2, §5.4, §5.5, §5.1).
const checkHeader = (s: DecoderState, b0: number, b1: number): ProtocolError | undefined => {
  const opcode = b0 & 0x0f
  if ((b0 & 0x30) !== 0) return protocolError("ReservedBits", "RSV2/RSV3 set")
  if (opcode >= Opcode.Close) {
    if (opcode > Opcode.Pong) return protocolError("ReservedOpcode", `opcode 0x${opcode.toString(16)}`)
    if ((b0 & 0x40) !== 0) return protocolError("ReservedBits", "RSV1 on a control frame")
    if ((b0 & 0x80) === 0) return protocolError("FragmentedControlFrame", "control frame with FIN = 0")
    if ((b1 & 0x7f) > 125) return protocolError("ControlFrameTooLong", "control frame payload over 125 bytes")
  } else if (opcode === Opcode.Continuation) {
    if (s.messageOpcode === 0) return protocolError("UnexpectedContinuation", "no message in progress")
    if ((b0 & 0x40) !== 0) return protocolError("ReservedBits", "RSV1 on a continuation frame")
  } else {
    if (opcode > Opcode.Binary) return protocolError("ReservedOpcode", `opcode 0x${opcode.toString(16)}`)
    if (s.messageOpcode !== 0) return protocolError("ExpectedContinuation", "new data frame inside a fragmented message")
    if ((b0 & 0x40) !== 0 && !s.options.allowRsv1) return protocolError("ReservedBits", "RSV1 without an extension")
  }
  if (s.options.role === "server") {
    if ((b1 & 0x80) === 0) return protocolError("UnmaskedFrame", "client frame is not masked")
  } else if ((b1 & 0x80) !== 0) return protocolError("MaskedFrame", "server frame is masked")
  return undefined
}

// Parse the next frame header if it is all there: checks it, records the frame
// in `s` and consumes it. Returns an error, true (header read) or false (wait).
const readHeader = (s: DecoderState): ProtocolError | boolean => {
  if (s.available < 2) return false
  const chunk = s.chunks[0]!
  const off = s.offset
  const inChunk = chunk.length - off
  const b0 = inChunk >= 2 ? chunk[off]! : peek(s, 0)
  const b1 = inChunk >= 2 ? chunk[off + 1]! : peek(s, 1)
  const error = checkHeader(s, b0, b1)
  if (error !== undefined) return error
  const len7 = b1 & 0x7f
  const masked = (b1 & 0x80) !== 0
  const extra = len7 < 126 ? 0 : len7 === 126 ? 2 : 8
  const headerLength = 2 + extra + (masked ? 4 : 0)
  if (s.available < 2 + extra) return false
  const direct = inChunk >= headerLength
  let length = len7
  if (extra === 2) {
    length = direct ? (chunk[off + 2]! << 8) | chunk[off + 3]! : (peek(s, 2) << 8) | peek(s, 3)
  } else if (extra === 8) {
    // 64-bit length as two 32-bit halves (RFC 6455 §5.2: MSB must be 0).
    let hi = 0
    let lo = 0
    for (let k = 2; k < 10; k++) {
      const b = direct ? chunk[off + k]! : peek(s, k)
      if (k < 6) hi = hi * 256 + b
      else lo = lo * 256 + b
    }
    if (hi >= 0x80000000) return protocolError("InvalidLength", "64-bit length with the MSB set")
    length = hi * 0x100000000 + lo
  }
  // §7.4.1 1009: refuse before buffering anything of the payload.
  const opcode = b0 & 0x0f
  const maxSize = s.options.maxMessageSize
  if (opcode === Opcode.Continuation ? s.messageLength + length > maxSize : length > maxSize) {
    return protocolError("MessageTooBig", `message over ${maxSize} bytes`)
  }
  if (s.available < headerLength) return false
  s.fin = (b0 & 0x80) !== 0
  s.opcode = opcode
  s.rsv1 = (b0 & 0x40) !== 0
  s.length = length
  s.masked = masked
  if (masked) {
    const k = headerLength - 4
    if (direct) {
      s.m0 = chunk[off + k]!
      s.m1 = chunk[off + k + 1]!
      s.m2 = chunk[off + k + 2]!
      s.m3 = chunk[off + k + 3]!
    } else {
      s.m0 = peek(s, k)
      s.m1 = peek(s, k + 1)
      s.m2 = peek(s, k + 2)
      s.m3 = peek(s, k + 3)
    }
  } else {
    s.m0 = s.m1 = s.m2 = s.m3 = 0
  }
  if (direct) {
    s.offset = off + headerLength
    s.available -= headerLength
  } else {
    skip(s, headerLength)
  }
  return true
}

// Parse frames out of the pending chunks until input runs out, a Close frame,
// or an error.
const run = (s: DecoderState, events: Array<DecoderEvent>): ProtocolError | undefined => {
  for (;;) {
    let payload: Uint8Array
    let checked = false
    if (s.partial !== undefined) {
      const error = fillPartial(s)
      if (error !== undefined) return error
      if (s.partialFilled < s.partial.length) return undefined
      payload = s.partial
      checked = s.partialChecked
      s.partial = undefined
      s.partialFilled = 0
    } else {
      if (!s.awaitingPayload) {
        const header = readHeader(s)
        if (header === false) return undefined
        if (header !== true) return header
        s.awaitingPayload = true
      }
      const length = s.length
      if (length === 0) {
        payload = EMPTY
      } else {
        // Wait for payload bytes before deciding: a payload arriving whole in
        // the next chunk is then still handed out without a copy.
        if (s.available === 0) return undefined
        let chunk = s.chunks[0]!
        if (s.offset === chunk.length) {
          s.chunks.shift()
          s.offset = 0
          chunk = s.chunks[0]!
        }
        const off = s.offset
        if (chunk.length - off >= length) {
          // Whole payload in this chunk: unmask in place, hand out a view.
          payload = chunk.subarray(off, off + length)
          if (s.masked) maskRange(chunk, off, off + length, s.m0, s.m1, s.m2, s.m3)
          s.available -= length
          if (off + length === chunk.length) {
            s.chunks.shift()
            s.offset = 0
          } else {
            s.offset = off + length
          }
        } else {
          // Payload spans chunks: one allocation of the known size, filled as bytes arrive.
          s.awaitingPayload = false
          s.partial = allocate(length)
          s.partialFilled = 0
          s.partialChecked = !s.rsv1 && (s.opcode === Opcode.Text ||
            (s.opcode === Opcode.Continuation && s.messageOpcode === Opcode.Text && !s.messageCompressed))
          continue
        }
      }
      s.awaitingPayload = false
    }
    const error = onPayload(s, payload, checked, events)
    if (error !== undefined) return error
    if (s.finished) return undefined
  }
}
