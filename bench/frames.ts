/**
 * The load generator's own WebSocket codec (client side): masked frames out,
 * unmasked frames in. Independent of src/ on purpose: the benchmark must not
 * trust the code it measures.
 */
import { randomBytes } from "node:crypto"

export const OP_CONT = 0x0
export const OP_TEXT = 0x1
export const OP_BINARY = 0x2
export const OP_CLOSE = 0x8
export const OP_PING = 0x9
export const OP_PONG = 0xa

/** Bytes of the ASCII timestamp at the start of every payload. */
export const STAMP_BYTES = 12

/**
 * A masked client frame, built once and patched in place per send.
 * `stampAt` is where the payload starts, so `stampFrame` can write the time.
 *
 * @example
 * const f = encodeClientFrame(OP_BINARY, Buffer.alloc(32, 120))
 * socket.write(f.bytes)
 */
export interface ClientFrame {
  readonly bytes: Buffer
  readonly stampAt: number
  /** Undefined for raw TCP records (no framing, no mask). */
  readonly mask: Buffer | undefined
}

/** RFC 6455 §5.2: FIN, opcode, MASK bit, 7/16/64-bit length, 4-byte key, masked payload. */
export const encodeClientFrame = (opcode: number, payload: Uint8Array, fin = true): ClientFrame => {
  const len = payload.length
  const lenBytes = len < 126 ? 0 : len < 65536 ? 2 : 8
  const head = 2 + lenBytes + 4
  const bytes = Buffer.allocUnsafe(head + len)
  bytes[0] = (fin ? 0x80 : 0) | opcode
  if (lenBytes === 0) bytes[1] = 0x80 | len
  else if (lenBytes === 2) {
    bytes[1] = 0x80 | 126
    bytes.writeUInt16BE(len, 2)
  } else {
    bytes[1] = 0x80 | 127
    bytes.writeBigUInt64BE(BigInt(len), 2)
  }
  // RFC 6455 §5.3: a fresh random key per frame (here: per pre-encoded frame).
  const mask = randomBytes(4)
  mask.copy(bytes, head - 4)
  for (let i = 0; i < len; i++) bytes[head + i] = payload[i]! ^ mask[i & 3]!
  return { bytes, stampAt: head, mask }
}

/** A raw record for the TCP ceiling: the payload itself, stamped unmasked. */
export const rawFrame = (payload: Uint8Array): ClientFrame => ({ bytes: Buffer.from(payload), stampAt: 0, mask: undefined })

/** Writes `micros` as STAMP_BYTES ASCII digits (valid UTF-8 for text frames), masked if a key is given. */
export const writeStamp = (buf: Buffer, at: number, micros: number, mask?: Buffer): void => {
  let v = Math.floor(micros)
  for (let i = STAMP_BYTES - 1; i >= 0; i--) {
    const digit = 48 + (v % 10)
    v = Math.floor(v / 10)
    buf[at + i] = mask === undefined ? digit : digit ^ mask[i & 3]!
  }
}

/** Reads the ASCII timestamp written by `writeStamp` (unmasked). */
export const readStamp = (buf: Uint8Array, at: number): number => {
  let v = 0
  for (let i = 0; i < STAMP_BYTES; i++) v = v * 10 + (buf[at + i]! - 48)
  return v
}

/** Patches the payload timestamp of a pre-encoded frame. */
export const stampFrame = (frame: ClientFrame, micros: number): void =>
  writeStamp(frame.bytes, frame.stampAt, micros, frame.mask)

/** A payload of `size` bytes of ASCII filler with room for the timestamp. */
export const makePayload = (size: number): Buffer => {
  const p = Buffer.alloc(size, 0x61)
  if (size >= STAMP_BYTES) writeStamp(p, 0, 0)
  return p
}

/** Digits of the publisher tag written after the timestamp (fan-out with many publishers). */
export const TAG_BYTES = 4

/** Writes `tag` as TAG_BYTES ASCII digits right after the timestamp (unmasked payload). */
export const writeTag = (payload: Buffer, tag: number): void => {
  let v = tag
  for (let i = TAG_BYTES - 1; i >= 0; i--) {
    payload[STAMP_BYTES + i] = 48 + (v % 10)
    v = Math.floor(v / 10)
  }
}

/** Reads the tag written by `writeTag`; 0 when the payload is too short to hold one. */
export const readTag = (payload: Uint8Array): number => {
  if (payload.length < STAMP_BYTES + TAG_BYTES) return 0
  let v = 0
  for (let i = 0; i < TAG_BYTES; i++) v = v * 10 + (payload[STAMP_BYTES + i]! - 48)
  return v
}

/** Masked close frame with status 1000 (RFC 6455 §5.5.1). */
export const closeFrame = (): Buffer => {
  const body = Buffer.alloc(2)
  body.writeUInt16BE(1000, 0)
  return encodeClientFrame(OP_CLOSE, body).bytes
}

/** Called once per complete frame; `payload` is a view valid only during the call. */
export type OnFrame = (fin: boolean, opcode: number, payload: Buffer) => void

/**
 * A push parser for server frames: handles 7-, 16- and 64-bit lengths, frames
 * split across chunks and many frames per chunk. Chunks may be views of a reused
 * read buffer: the reader copies what it keeps, and only when a frame spans chunks.
 *
 * @example
 * const feed = makeFrameReader((fin, op, p) => console.log(op, p.length))
 * socket.on("data", feed)
 */
export const makeFrameReader = (onFrame: OnFrame, onError: (msg: string) => void): ((chunk: Buffer) => void) => {
  let pending: Array<Buffer> = []
  let pendingBytes = 0
  let need = 0
  return (chunk) => {
    if (pendingBytes > 0) {
      pending.push(Buffer.from(chunk))
      pendingBytes += chunk.length
      if (pendingBytes < need) return
      chunk = Buffer.concat(pending, pendingBytes)
      pending = []
      pendingBytes = 0
    }
    let off = 0
    const end = chunk.length
    while (true) {
      const avail = end - off
      if (avail < 2) {
        need = 2
        break
      }
      const b1 = chunk[off + 1]!
      if (b1 & 0x80) return onError("server frame is masked")
      let len = b1 & 0x7f
      let head = 2
      if (len === 126) {
        if (avail < 4) {
          need = 4
          break
        }
        len = chunk.readUInt16BE(off + 2)
        head = 4
      } else if (len === 127) {
        if (avail < 10) {
          need = 10
          break
        }
        len = chunk.readUInt32BE(off + 2) * 2 ** 32 + chunk.readUInt32BE(off + 6)
        head = 10
      }
      if (avail < head + len) {
        need = head + len
        break
      }
      const b0 = chunk[off]!
      onFrame((b0 & 0x80) !== 0, b0 & 0x0f, chunk.subarray(off + head, off + head + len))
      off += head + len
    }
    if (off < end) {
      pending = [Buffer.from(chunk.subarray(off))]
      pendingBytes = end - off
    }
  }
}

/**
 * A push parser for the TCP ceiling: fixed-size records, no framing at all.
 * `onRecord` sees the first STAMP_BYTES of every record.
 */
export const makeRecordReader = (size: number, onRecord: (head: Buffer) => void): ((chunk: Buffer) => void) => {
  let pos = 0 // offset inside the current record
  const head = Buffer.alloc(STAMP_BYTES)
  return (chunk) => {
    let off = 0
    while (off < chunk.length) {
      if (pos < STAMP_BYTES) {
        const n = Math.min(STAMP_BYTES - pos, chunk.length - off)
        chunk.copy(head, pos, off, off + n)
        pos += n
        off += n
        if (pos < STAMP_BYTES) return
      }
      const n = Math.min(size - pos, chunk.length - off)
      pos += n
      off += n
      if (pos === size) {
        onRecord(head)
        pos = 0
      }
    }
  }
}
