/**
 * WebSocket frame encoding (RFC 6455 §5.2): headers, whole frames, messages
 * split into fragments, and close/ping/pong control frames. Pure functions;
 * the caller's payload buffer is never modified (masking works on a copy).
 *
 * @example
 * import * as FrameEncoder from "./FrameEncoder.ts"
 * const buffers = FrameEncoder.encodeMessage({ binary: false, payload: new TextEncoder().encode("hi") })
 * // [81 02 68 69]: ready for a vectored write
 */
import { Opcode } from "./Opcode.ts"
import { copyMasked } from "./Mask.ts"

export { applyMask } from "./Mask.ts"

export interface FrameOptions {
  readonly opcode: number
  /** Last frame of the message (default true). */
  readonly fin?: boolean
  /** Compressed (permessage-deflate, first frame only; default false). */
  readonly rsv1?: boolean
  /** 4-byte masking key (client frames). Masks a copy of the payload. */
  readonly mask?: Uint8Array | undefined
}

// Payloads up to this size are copied behind their header into one buffer:
// one small allocation is cheaper than a second buffer in a vectored write.
const CONCAT_MAX = 4096

const EMPTY = new Uint8Array(0)

// Frames are written over every byte before anyone reads them, so they need no zeroing: on
// Node, small ones come from Buffer's shared pool (no backing store of their own), larger ones
// skip the memset; elsewhere a plain Uint8Array. Handed out as plain Uint8Array views, so
// `slice()` copies as callers expect (Buffer's `slice` would not).
const allocate: (length: number) => Uint8Array = typeof Buffer === "function" && typeof Buffer.allocUnsafe === "function"
  ? (length) => {
    const b = Buffer.allocUnsafe(length)
    return new Uint8Array(b.buffer, b.byteOffset, length)
  }
  : (length) => new Uint8Array(length)

const headerLength = (payloadLength: number, masked: boolean): number =>
  (payloadLength < 126 ? 2 : payloadLength < 0x10000 ? 4 : 10) + (masked ? 4 : 0)

// FIN, RSV1 and the opcode (RFC 6455 §5.2).
const firstByte = (opcode: number, fin: boolean, rsv1: boolean): number =>
  (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f)

// The 4-byte masking key at `at`; returns where it ends.
const writeKey = (out: Uint8Array, at: number, mask: Uint8Array): number => {
  out[at] = mask[0]!
  out[at + 1] = mask[1]!
  out[at + 2] = mask[2]!
  out[at + 3] = mask[3]!
  return at + 4
}

// The first byte, then the length in its 7-, 16- or 64-bit form, at `at`; returns where the header ends.
const writeHeaderAt = (out: Uint8Array, at: number, first: number, maskBit: number, payloadLength: number): number => {
  out[at] = first
  if (payloadLength < 126) {
    out[at + 1] = maskBit | payloadLength
    return at + 2
  }
  if (payloadLength < 0x10000) {
    out[at + 1] = maskBit | 126
    out[at + 2] = payloadLength >>> 8
    out[at + 3] = payloadLength & 0xff
    return at + 4
  }
  // 64-bit length as two 32-bit halves (no BigInt).
  out[at + 1] = maskBit | 127
  const hi = Math.floor(payloadLength / 0x100000000)
  const lo = payloadLength >>> 0
  out[at + 2] = hi >>> 24
  out[at + 3] = (hi >>> 16) & 0xff
  out[at + 4] = (hi >>> 8) & 0xff
  out[at + 5] = hi & 0xff
  out[at + 6] = lo >>> 24
  out[at + 7] = (lo >>> 16) & 0xff
  out[at + 8] = (lo >>> 8) & 0xff
  out[at + 9] = lo & 0xff
  return at + 10
}

/** Bytes a frame with this payload takes (4 more when masked). */
export const frameLength = (payloadLength: number, masked: boolean): number =>
  headerLength(payloadLength, masked) + payloadLength

/**
 * Write a whole frame into `out` at `at`, masked with `mask` when given
 * (client role: the payload is copied masked, the caller's bytes untouched);
 * returns where it ends. `out` must have `frameLength(payload.length, masked)`
 * bytes free there.
 *
 * @example
 * const end = writeFrame(out, 0, Opcode.Binary, true, false, bytes, undefined)
 */
export const writeFrame = (
  out: Uint8Array,
  at: number,
  opcode: number,
  fin: boolean,
  rsv1: boolean,
  payload: Uint8Array,
  mask: Uint8Array | undefined
): number => {
  const first = firstByte(opcode, fin, rsv1)
  if (mask === undefined) {
    const start = writeHeaderAt(out, at, first, 0, payload.length)
    out.set(payload, start)
    return start + payload.length
  }
  const start = writeKey(out, writeHeaderAt(out, at, first, 0x80, payload.length), mask)
  copyMasked(payload, out, start, mask[0]!, mask[1]!, mask[2]!, mask[3]!)
  return start + payload.length
}

/**
 * The header bytes of a frame: 2, 4 or 10 bytes, plus 4 for the mask key.
 *
 * @example
 * frameHeader({ opcode: Opcode.Binary }, 256) // 82 7e 01 00
 */
export const frameHeader = (options: FrameOptions, payloadLength: number): Uint8Array => {
  const mask = options.mask
  const out = allocate(headerLength(payloadLength, mask !== undefined))
  const at = writeHeaderAt(
    out,
    0,
    firstByte(options.opcode, options.fin !== false, options.rsv1 === true),
    mask === undefined ? 0 : 0x80,
    payloadLength
  )
  if (mask !== undefined) writeKey(out, at, mask)
  return out
}

const maskedCopy = (payload: Uint8Array, mask: Uint8Array): Uint8Array => {
  const copy = allocate(payload.length)
  copyMasked(payload, copy, 0, mask[0]!, mask[1]!, mask[2]!, mask[3]!)
  return copy
}

/**
 * A frame as `[header, payload]` for a vectored write. Unmasked, the payload
 * is the caller's buffer itself; masked, a masked copy.
 *
 * @example
 * const [header, body] = encodeFrame({ opcode: Opcode.Binary }, bytes) // body === bytes
 */
export const encodeFrame = (options: FrameOptions, payload: Uint8Array): [Uint8Array, Uint8Array] => [
  frameHeader(options, payload.length),
  options.mask === undefined ? payload : maskedCopy(payload, options.mask)
]

/**
 * A frame as one contiguous buffer (header + payload): cheaper for small frames.
 *
 * @example
 * encodeFrameConcat({ opcode: Opcode.Text }, new TextEncoder().encode("Hello"))
 * // 81 05 48 65 6c 6c 6f
 */
export const encodeFrameConcat = (options: FrameOptions, payload: Uint8Array): Uint8Array => {
  const out = allocate(frameLength(payload.length, options.mask !== undefined))
  writeFrame(out, 0, options.opcode, options.fin !== false, options.rsv1 === true, payload, options.mask)
  return out
}

const pushFrame = (out: Array<Uint8Array>, options: FrameOptions, payload: Uint8Array): void => {
  // A masked payload is copied whatever its size, so it is copied right behind its header: one
  // buffer, one plain write instead of a vectored one (a 64 KiB client echo cost 20% more CPU
  // as header + body through the socket's cork/writev path).
  if (payload.length <= CONCAT_MAX || options.mask !== undefined) {
    out.push(encodeFrameConcat(options, payload))
  } else {
    const [header, body] = encodeFrame(options, payload)
    out.push(header, body)
  }
}

/**
 * A whole data message as buffers ready for a vectored write. With
 * `fragmentSize`, payloads longer than it are split into fragments (RFC 6455
 * §5.4): Text/Binary with FIN = 0, Continuation frames, the last with FIN = 1;
 * RSV1 (`compressed`) only on the first. `maskSource` gives a fresh 4-byte key
 * per frame (client role). Small and masked frames come as one buffer each,
 * large unmasked ones as header + payload (the caller's bytes, untouched). The
 * frames are appended to `out` when given (no intermediate array).
 *
 * @example
 * encodeMessage({ binary: true, payload: bytes, fragmentSize: 16384 })
 */
export const encodeMessage = (options: {
  readonly binary: boolean
  readonly payload: Uint8Array
  readonly compressed?: boolean
  readonly fragmentSize?: number | undefined
  readonly maskSource?: (() => Uint8Array) | undefined
}, out: Array<Uint8Array> = []): Array<Uint8Array> => {
  const { payload, maskSource } = options
  const opcode = options.binary ? Opcode.Binary : Opcode.Text
  const rsv1 = options.compressed === true
  const size = options.fragmentSize
  if (size === undefined || !(size > 0) || payload.length <= size) {
    pushFrame(out, { opcode, rsv1, mask: maskSource?.() }, payload)
    return out
  }
  const step = Math.max(1, Math.floor(size))
  for (let at = 0; at < payload.length; at += step) {
    const end = Math.min(at + step, payload.length)
    pushFrame(out, {
      opcode: at === 0 ? opcode : Opcode.Continuation,
      fin: end === payload.length,
      rsv1: at === 0 && rsv1,
      mask: maskSource?.()
    }, payload.subarray(at, end))
  }
  return out
}

const textEncoder = new TextEncoder()

/**
 * A close frame payload (RFC 6455 §5.5.1): 2-byte code + UTF-8 reason, or
 * empty when `code` is undefined. The reason is cut so the payload fits in
 * 125 bytes, never in the middle of a character.
 *
 * @example
 * closePayload(1000, "bye") // 03 e8 62 79 65
 */
export const closePayload = (code?: number, reason?: string): Uint8Array => {
  if (code === undefined) return EMPTY
  let text = reason === undefined || reason === "" ? EMPTY : textEncoder.encode(reason)
  if (text.length > 123) {
    let cut = 123
    // Back up to a character boundary (not a 10xxxxxx continuation byte).
    while (cut > 0 && (text[cut]! & 0xc0) === 0x80) cut--
    text = text.subarray(0, cut)
  }
  const out = new Uint8Array(2 + text.length)
  out[0] = (code >>> 8) & 0xff
  out[1] = code & 0xff
  out.set(text, 2)
  return out
}

/**
 * A whole close frame.
 *
 * @example
 * encodeClose(1000) // 88 02 03 e8
 */
export const encodeClose = (code?: number, reason?: string, mask?: Uint8Array): Uint8Array =>
  encodeFrameConcat({ opcode: Opcode.Close, mask }, closePayload(code, reason))

// Control payloads are limited to 125 bytes (RFC 6455 §5.5): longer ones are cut.
const control = (opcode: number, payload: Uint8Array | undefined, mask: Uint8Array | undefined): Uint8Array =>
  encodeFrameConcat(
    { opcode, mask },
    payload === undefined ? EMPTY : payload.length > 125 ? payload.subarray(0, 125) : payload
  )

/**
 * A whole ping frame. Payloads over 125 bytes are cut to their first 125
 * (RFC 6455 §5.5 limit); pass at most 125 bytes to keep them intact.
 *
 * @example
 * encodePing(new TextEncoder().encode("Hello")) // 89 05 48 65 6c 6c 6f
 */
export const encodePing = (payload?: Uint8Array, mask?: Uint8Array): Uint8Array =>
  control(Opcode.Ping, payload, mask)

/**
 * A whole pong frame; same 125-byte rule as {@link encodePing}.
 *
 * @example
 * encodePong(pingData)
 */
export const encodePong = (payload?: Uint8Array, mask?: Uint8Array): Uint8Array =>
  control(Opcode.Pong, payload, mask)
