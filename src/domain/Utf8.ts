/**
 * Incremental UTF-8 validation (RFC 3629 §4), used for text messages and
 * close reasons (RFC 6455 §8.1). Fragments and chunks are validated as they
 * arrive, so invalid text fails as soon as the first bad byte is seen.
 *
 * @example
 * import * as Utf8 from "./Utf8.ts"
 * let state = Utf8.validate(Utf8.UTF8_ACCEPT, new Uint8Array([0xe2, 0x82]))  // inside "€"
 * state = Utf8.validate(state, new Uint8Array([0xac]))                        // UTF8_ACCEPT
 */
import * as NodeBuffer from "node:buffer"

/**
 * 0 = at a character boundary; 1..7 = inside a multi-byte sequence (see the
 * table above `next`); {@link UTF8_REJECT} = invalid, sticky.
 */
export type Utf8State = number

export const UTF8_ACCEPT = 0
/** Sticky: once rejected, every later `validate` returns it again. */
export const UTF8_REJECT = -1

// States inside a sequence (RFC 3629 §4, rows UTF8-2/3/4):
//   1/2/3: 1/2/3 more bytes of 80..BF
//   4: after E0, need A0..BF (no overlong 3-byte), then 1
//   5: after ED, need 80..9F (no surrogates), then 1
//   6: after F0, need 90..BF (no overlong 4-byte), then 2
//   7: after F4, need 80..8F (max U+10FFFF), then 2
const next = (s: number, b: number): number => {
  switch (s) {
    case 0:
      if (b < 0x80) return 0
      if (b < 0xc2) return UTF8_REJECT // continuation or overlong C0/C1
      if (b < 0xe0) return 1
      if (b < 0xf0) return b === 0xe0 ? 4 : b === 0xed ? 5 : 2
      if (b < 0xf5) return b === 0xf0 ? 6 : b === 0xf4 ? 7 : 3
      return UTF8_REJECT
    case 1:
    case 2:
    case 3:
      return (b & 0xc0) === 0x80 ? s - 1 : UTF8_REJECT
    case 4:
      return b >= 0xa0 && b <= 0xbf ? 1 : UTF8_REJECT
    case 5:
      return b >= 0x80 && b <= 0x9f ? 1 : UTF8_REJECT
    case 6:
      return b >= 0x90 && b <= 0xbf ? 2 : UTF8_REJECT
    case 7:
      return b >= 0x80 && b <= 0x8f ? 2 : UTF8_REJECT
    default:
      return UTF8_REJECT
  }
}

/**
 * The pure JS validator behind {@link validate}: a byte-range state machine
 * with an ASCII fast path. Same contract as {@link validate}.
 *
 * @example
 * validateScalar(UTF8_ACCEPT, new Uint8Array([0xed, 0xa0, 0x80])) // UTF8_REJECT (surrogate)
 */
export const validateScalar = (
  state: Utf8State,
  bytes: Uint8Array,
  start: number = 0,
  end: number = bytes.length
): Utf8State => {
  let s = state
  let i = start
  if (s !== UTF8_ACCEPT) {
    if (s < 0) return UTF8_REJECT
    while (s > 0 && i < end) s = next(s, bytes[i++]!)
    if (s !== UTF8_ACCEPT) return s
  }
  while (i < end) {
    const b = bytes[i]!
    if (b < 0x80) {
      // ASCII fast path: skip 8 bytes at a time while no high bit is set.
      i++
      while (
        i + 8 <= end &&
        ((bytes[i]! | bytes[i + 1]! | bytes[i + 2]! | bytes[i + 3]! |
          bytes[i + 4]! | bytes[i + 5]! | bytes[i + 6]! | bytes[i + 7]!) & 0x80) === 0
      ) i += 8
      continue
    }
    if (i + 4 > end) {
      // The piece may end inside this sequence: let the state machine keep the state.
      for (; i < end; i++) {
        s = next(s, bytes[i]!)
        if (s < 0) return UTF8_REJECT
      }
      return s
    }
    // A whole sequence is available: check it in place.
    if (b < 0xc2) return UTF8_REJECT
    const c1 = bytes[i + 1]!
    if (b < 0xe0) {
      if ((c1 & 0xc0) !== 0x80) return UTF8_REJECT
      i += 2
    } else if (b < 0xf0) {
      const lo = b === 0xe0 ? 0xa0 : 0x80
      const hi = b === 0xed ? 0x9f : 0xbf
      if (c1 < lo || c1 > hi || (bytes[i + 2]! & 0xc0) !== 0x80) return UTF8_REJECT
      i += 3
    } else if (b < 0xf5) {
      const lo = b === 0xf0 ? 0x90 : 0x80
      const hi = b === 0xf4 ? 0x8f : 0xbf
      if (
        c1 < lo || c1 > hi ||
        (bytes[i + 2]! & 0xc0) !== 0x80 ||
        (bytes[i + 3]! & 0xc0) !== 0x80
      ) return UTF8_REJECT
      i += 4
    } else {
      return UTF8_REJECT
    }
  }
  return UTF8_ACCEPT
}

// The runtime's SIMD validator (Node >= 18.14, Bun, Deno): ~30x faster than any
// JS loop on large inputs. Everything still works without it.
const nativeIsUtf8: ((bytes: Uint8Array) => boolean) | undefined =
  typeof NodeBuffer.isUtf8 === "function" ? NodeBuffer.isUtf8 : undefined

// Below this size the JS loop is as fast as the native call plus a subarray.
const NATIVE_MIN = 64

/**
 * Validate `bytes[start, end)` continuing from `state`. Returns the new state:
 * {@link UTF8_ACCEPT} at a character boundary, another non-negative state when
 * the input stops inside a (so far valid) sequence, or {@link UTF8_REJECT} at
 * the first invalid piece. Large ranges go to the native validator: the open
 * sequence at each end is handled by {@link validateScalar}, the middle, which
 * starts and ends on character boundaries, natively.
 *
 * @example
 * validate(UTF8_ACCEPT, new Uint8Array([0xc3]))       // 1 (waiting for one more byte)
 * validate(UTF8_ACCEPT, new Uint8Array([0xc0, 0x80])) // UTF8_REJECT (overlong)
 */
export const validate = (
  state: Utf8State,
  bytes: Uint8Array,
  start: number = 0,
  end: number = bytes.length
): Utf8State => {
  if (end - start < NATIVE_MIN || nativeIsUtf8 === undefined || state < 0) {
    return validateScalar(state, bytes, start, end)
  }
  let i = start
  if (state !== UTF8_ACCEPT) {
    // Finish the sequence left open by the previous piece.
    let s = state
    while (s > 0 && i < end) s = next(s, bytes[i++]!)
    if (s !== UTF8_ACCEPT) return s < 0 ? UTF8_REJECT : s
  }
  // Cut before the last lead/ASCII byte among the final 4: the middle then ends on
  // a boundary when the text is valid, and the tail (<= 4 bytes) may stay open.
  let cut = end - 1
  while (cut > i && cut > end - 4 && (bytes[cut]! & 0xc0) === 0x80) cut--
  if (cut > i) {
    const middle = i === 0 && cut === bytes.length ? bytes : bytes.subarray(i, cut)
    if (!nativeIsUtf8(middle)) return UTF8_REJECT
  }
  return validateScalar(UTF8_ACCEPT, bytes, cut > i ? cut : i, end)
}

/**
 * Is `bytes` complete, valid UTF-8? (A truncated final sequence is invalid.)
 *
 * @example
 * isValid(new TextEncoder().encode("héllo")) // true
 * isValid(new Uint8Array([0xe2, 0x82]))      // false
 */
export const isValid = (bytes: Uint8Array): boolean =>
  nativeIsUtf8 !== undefined && bytes.length >= NATIVE_MIN
    ? nativeIsUtf8(bytes)
    : validateScalar(UTF8_ACCEPT, bytes) === UTF8_ACCEPT
