/**
 * WebSocket masking (RFC 6455 §5.3): XOR each payload byte `i` with
 * `mask[i % 4]`. Masking and unmasking are the same operation.
 *
 * Large ranges go to the native `bufferutil` functions when that optional
 * package is installed (5 to 10 times faster than JavaScript on a 1 MiB
 * payload); otherwise, and for small ranges, a JavaScript loop that works 4
 * bytes at a time. Both give the same bytes (the tests compare them).
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
 * The JavaScript form of {@link maskRange} (always available; what runs
 * without `bufferutil`): no allocation for small ranges, 4 bytes per step
 * over the aligned middle of large ones.
 *
 * @example
 * maskRangeJs(bytes, 0, bytes.length, 0x37, 0xfa, 0x21, 0x3d)
 */
export const maskRangeJs = (
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

// ---------------------------------------------------------------- native (optional)

/** The two functions of the `bufferutil` package (what `ws` uses for the same job). */
interface NativeMask {
  /** `output[offset + i] = source[i] ^ mask[i & 3]` for `i < length` (no bounds checks). */
  readonly mask: (source: Uint8Array, mask: Uint8Array, output: Uint8Array, offset: number, length: number) => void
  /** `buffer[i] ^= mask[i & 3]` over the whole buffer. */
  readonly unmask: (buffer: Uint8Array, mask: Uint8Array) => void
}

// `bufferutil` is an optional dependency: loaded if installed and compiled (its package falls back
// to a per-byte JavaScript loop when the binary is missing; that one is slower than ours, so only
// a native function is taken). No static import: this module stays pure (browsers, Bun, Deno, or
// no package at all get the JavaScript path). WSREACTOR_NO_NATIVE_MASK=1 turns it off.
const loadNative = (): NativeMask | undefined => {
  try {
    const proc = (globalThis as { process?: { env?: Record<string, string | undefined>; getBuiltinModule?: (id: string) => unknown } }).process
    if (proc?.env?.WSREACTOR_NO_NATIVE_MASK !== undefined && proc.env.WSREACTOR_NO_NATIVE_MASK !== "") return undefined
    const mod = proc?.getBuiltinModule?.("node:module") as
      | { createRequire: (from: string) => (id: string) => unknown }
      | undefined
    if (mod === undefined) return undefined
    const native = mod.createRequire(import.meta.url)("bufferutil") as Partial<NativeMask>
    if (typeof native.mask !== "function" || typeof native.unmask !== "function") return undefined
    if (!String(native.unmask).includes("[native code]")) return undefined
    // Trust, but check once: the same bytes as the definition.
    const probe = new Uint8Array([1, 2, 3, 4, 5])
    native.unmask(probe, new Uint8Array([0xff, 0x0f, 0xf0, 0x00]))
    if (probe.join() !== "254,13,243,4,250") return undefined
    return native as NativeMask
  } catch {
    return undefined
  }
}

const loaded = loadNative()
let native: NativeMask | undefined = loaded

// Below this many bytes the native call (and the view it needs) costs more than the JavaScript loop.
const NATIVE_MIN = 512

// The 4 mask bytes handed to the native functions: filled per call (synchronous, so one is enough).
const nativeKey = new Uint8Array(4)

/**
 * Is the native `bufferutil` masking in use? `useNative(false)` forces the
 * JavaScript path (tests compare both); `useNative(true)` goes back to native
 * if it loaded. Returns whether native masking is now in use.
 *
 * @example
 * useNative(false) // JavaScript only
 */
export const useNative = (enabled: boolean): boolean => {
  native = enabled ? loaded : undefined
  return native !== undefined
}

/** Is the native masking available (the optional `bufferutil` package loaded)? */
export const nativeAvailable: boolean = loaded !== undefined

/**
 * XOR `bytes[start, end)` in place with the mask whose byte for `bytes[start]`
 * is `m0` (then `m1`, `m2`, `m3`, `m0`, ...). The hot-path form: native for
 * large ranges when available, else {@link maskRangeJs}.
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
  const n = native
  if (n !== undefined && end - start >= NATIVE_MIN) {
    nativeKey[0] = m0
    nativeKey[1] = m1
    nativeKey[2] = m2
    nativeKey[3] = m3
    // A view only when the range is not the whole buffer (the native function masks all of it).
    n.unmask(start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end), nativeKey)
    return
  }
  maskRangeJs(bytes, start, end, m0, m1, m2, m3)
}

/**
 * Copy all of `source` into `dest` at `at`, masked with `m0`..`m3` (the byte
 * for `source[0]` is `m0`): one pass over the bytes natively, instead of a
 * copy then a second pass. `source` is not modified.
 *
 * @example
 * copyMasked(chunk.subarray(offset, offset + n), payload, filled, m0, m1, m2, m3)
 */
export const copyMasked = (
  source: Uint8Array,
  dest: Uint8Array,
  at: number,
  m0: number,
  m1: number,
  m2: number,
  m3: number
): void => {
  const length = source.length
  // The native function does not check bounds: we do.
  if (!(at >= 0 && at + length <= dest.length)) throw new RangeError("copyMasked: destination too small")
  const n = native
  if (n !== undefined && length >= NATIVE_MIN) {
    nativeKey[0] = m0
    nativeKey[1] = m1
    nativeKey[2] = m2
    nativeKey[3] = m3
    n.mask(source, nativeKey, dest, at, length)
    return
  }
  dest.set(source, at)
  maskRangeJs(dest, at, at + length, m0, m1, m2, m3)
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
