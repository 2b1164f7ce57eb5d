/**
 * WebSocket masking (RFC 6455 §5.3): XOR each payload byte `i` with
 * `mask[i % 4]`. Masking and unmasking are the same operation.
 *
 * @example
 * import { applyMask } from "./Mask.ts"
 * const bytes = new Uint8Array([0x48, 0x65])
 * applyMask(bytes, new Uint8Array([0x37, 0xfa, 0x21, 0x3d])) // bytes = 7f 9f
 */

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

// Below this many bytes a plain byte loop beats building an Int32Array view.
const WORD_MIN = 64

/**
 * XOR `bytes[start, end)` in place with the mask whose byte for `bytes[start]`
 * is `m0` (then `m1`, `m2`, `m3`, `m0`, ...). The hot-path form: no allocation
 * for small ranges, 4 bytes per step over the aligned middle of large ones.
 *
 * @example
 * maskRange(bytes, 0, bytes.length, 0x37, 0xfa, 0x21, 0x3d)
 */
export const maskRange = (
  bytes: Uint8Array,
  start: number,
  end: number,
  m0: number,
  m1: number,
  m2: number,
  m3: number
): void => {
  let i = start
  if (end - start >= WORD_MIN) {
    // Bytes before the first 4-aligned address, rotating the mask as we go.
    while (((bytes.byteOffset + i) & 3) !== 0) {
      bytes[i++]! ^= m0
      const t = m0
      m0 = m1
      m1 = m2
      m2 = m3
      m3 = t
    }
    const words = (end - i) >>> 2
    const view = new Int32Array(bytes.buffer, bytes.byteOffset + i, words)
    const m = littleEndian
      ? m0 | (m1 << 8) | (m2 << 16) | (m3 << 24)
      : (m0 << 24) | (m1 << 16) | (m2 << 8) | m3
    for (let w = 0; w < words; w++) view[w]! ^= m
    i += words << 2
  } else {
    const stop = end - 3
    for (; i < stop; i += 4) {
      bytes[i]! ^= m0
      bytes[i + 1]! ^= m1
      bytes[i + 2]! ^= m2
      bytes[i + 3]! ^= m3
    }
  }
  if (i < end) bytes[i++]! ^= m0
  if (i < end) bytes[i++]! ^= m1
  if (i < end) bytes[i]! ^= m2
}

/**
 * Apply a 4-byte mask to `bytes` in place. `maskOffset` is the mask index of
 * `bytes[0]` (use it to continue masking a payload delivered in pieces).
 *
 * @example
 * const payload = new TextEncoder().encode("Hello")
 * applyMask(payload, new Uint8Array([0x37, 0xfa, 0x21, 0x3d]))
 * // payload = 7f 9f 4d 51 58
 */
export const applyMask = (bytes: Uint8Array, mask: ArrayLike<number>, maskOffset: number = 0): void => {
  const o = maskOffset & 3
  maskRange(
    bytes,
    0,
    bytes.length,
    mask[o]! & 0xff,
    mask[(o + 1) & 3]! & 0xff,
    mask[(o + 2) & 3]! & 0xff,
    mask[(o + 3) & 3]! & 0xff
  )
}
