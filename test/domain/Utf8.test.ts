import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import * as Utf8 from "../../src/domain/Utf8.ts"

const bytes = (...b: Array<number>) => new Uint8Array(b)
const enc = (s: string) => new TextEncoder().encode(s)

const fatalDecodes = (b: Uint8Array): boolean => {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(b)
    return true
  } catch {
    return false
  }
}

// Bytes biased towards UTF-8 structure, so random arrays are often (nearly) valid.
const utf8ishByte = fc.oneof(
  fc.integer({ min: 0, max: 0x7f }),
  fc.integer({ min: 0x80, max: 0xbf }),
  fc.constantFrom(0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff),
  fc.integer({ min: 0, max: 0xff })
)
const utf8ishArray = (maxLength: number) =>
  fc.oneof(
    fc.array(utf8ishByte, { maxLength }).map((a) => new Uint8Array(a)),
    fc.string({ unit: "binary", maxLength }).map(enc),
    // valid text with one corrupted byte
    fc.tuple(fc.string({ unit: "binary", minLength: 1, maxLength }), fc.nat(), utf8ishByte).map(([s, i, b]) => {
      const a = enc(s)
      a[i % a.length] = b
      return a
    })
  )

// Validate `b` in pieces cut at the given points.
const validateSplit = (
  validate: typeof Utf8.validate,
  b: Uint8Array,
  cuts: Array<number>
): Utf8.Utf8State => {
  const points = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y)
  let state: Utf8.Utf8State = Utf8.UTF8_ACCEPT
  let from = 0
  for (const p of [...points, b.length]) {
    state = validate(state, b, from, p)
    from = p
  }
  return state
}

describe("Utf8", () => {
  it("accepts valid samples", () => {
    const samples = [
      bytes(),
      enc("plain ASCII text"),
      bytes(0xc2, 0x80), // U+0080
      bytes(0xdf, 0xbf), // U+07FF
      bytes(0xe0, 0xa0, 0x80), // U+0800
      bytes(0xed, 0x9f, 0xbf), // U+D7FF
      bytes(0xee, 0x80, 0x80), // U+E000
      bytes(0xef, 0xbf, 0xbf), // U+FFFF
      bytes(0xf0, 0x90, 0x80, 0x80), // U+10000
      bytes(0xf4, 0x8f, 0xbf, 0xbf), // U+10FFFF
      enc("κόσμε € 😀 日本語"),
      enc("x".repeat(1000) + "€") // long: native path
    ]
    for (const s of samples) {
      expect(Utf8.isValid(s)).toBe(true)
      expect(Utf8.validate(Utf8.UTF8_ACCEPT, s)).toBe(Utf8.UTF8_ACCEPT)
      expect(Utf8.validateScalar(Utf8.UTF8_ACCEPT, s)).toBe(Utf8.UTF8_ACCEPT)
    }
  })

  it("rejects invalid samples", () => {
    const samples = [
      bytes(0xc0, 0x80), // overlong NUL
      bytes(0xc1, 0xbf), // overlong
      bytes(0xe0, 0x80, 0x80), // overlong 3-byte
      bytes(0xe0, 0x9f, 0xbf), // overlong 3-byte
      bytes(0xf0, 0x80, 0x80, 0x80), // overlong 4-byte
      bytes(0xf0, 0x8f, 0xbf, 0xbf), // overlong 4-byte
      bytes(0xed, 0xa0, 0x80), // U+D800 surrogate
      bytes(0xed, 0xbf, 0xbf), // U+DFFF surrogate
      bytes(0xf4, 0x90, 0x80, 0x80), // U+110000
      bytes(0xf5, 0x80, 0x80, 0x80),
      bytes(0xff),
      bytes(0xfe),
      bytes(0x80), // lone continuation
      bytes(0x41, 0xbf, 0x41),
      bytes(0xc2, 0x41), // lead then ASCII
      bytes(0xe1, 0x80, 0x41),
      enc("y".repeat(500)).map((b, i) => (i === 300 ? 0xc0 : b)) // long: native path
    ]
    for (const s of samples) {
      expect(Utf8.isValid(s)).toBe(false)
      expect(Utf8.validate(Utf8.UTF8_ACCEPT, s)).toBe(Utf8.UTF8_REJECT)
      expect(Utf8.validateScalar(Utf8.UTF8_ACCEPT, s)).toBe(Utf8.UTF8_REJECT)
    }
  })

  it("a truncated sequence is not rejected mid-stream, but is not valid at the end", () => {
    for (const s of [bytes(0xc3), bytes(0xe2, 0x82), bytes(0xf0, 0x9f, 0x98), bytes(0xe0), bytes(0xf4, 0x8f)]) {
      const state = Utf8.validate(Utf8.UTF8_ACCEPT, s)
      expect(state).not.toBe(Utf8.UTF8_ACCEPT)
      expect(state).not.toBe(Utf8.UTF8_REJECT)
      expect(Utf8.isValid(s)).toBe(false)
    }
    // and continues correctly
    const euro = enc("€")
    let state = Utf8.validate(Utf8.UTF8_ACCEPT, euro, 0, 1)
    state = Utf8.validate(state, euro, 1, 2)
    expect(Utf8.validate(state, euro, 2, 3)).toBe(Utf8.UTF8_ACCEPT)
    // a long piece ending inside a sequence, then the rest
    const long = enc("a".repeat(100) + "😀")
    state = Utf8.validate(Utf8.UTF8_ACCEPT, long, 0, long.length - 2)
    expect(state).toBeGreaterThan(0)
    expect(Utf8.validate(state, long, long.length - 2)).toBe(Utf8.UTF8_ACCEPT)
  })

  it("fails fast at the first invalid byte and stays rejected", () => {
    expect(Utf8.validate(Utf8.UTF8_ACCEPT, bytes(0xe0, 0x80))).toBe(Utf8.UTF8_REJECT)
    expect(Utf8.validate(Utf8.UTF8_REJECT, enc("ok"))).toBe(Utf8.UTF8_REJECT)
    expect(Utf8.validate(Utf8.UTF8_REJECT, enc("o".repeat(100)))).toBe(Utf8.UTF8_REJECT)
  })

  it("property: isValid agrees with a fatal TextDecoder", () => {
    fc.assert(
      fc.property(fc.oneof(utf8ishArray(40), utf8ishArray(300)), (b) => {
        const expected = fatalDecodes(b)
        expect(Utf8.isValid(b)).toBe(expected)
        expect(Utf8.validateScalar(Utf8.UTF8_ACCEPT, b) === Utf8.UTF8_ACCEPT).toBe(expected)
      }),
      { numRuns: 1000 }
    )
  })

  it("property: validating in any split equals validating whole", () => {
    fc.assert(
      fc.property(
        fc.oneof(utf8ishArray(40), utf8ishArray(300)),
        fc.array(fc.nat(), { maxLength: 8 }),
        (b, cuts) => {
          const whole = Utf8.validateScalar(Utf8.UTF8_ACCEPT, b)
          expect(Utf8.validate(Utf8.UTF8_ACCEPT, b)).toBe(whole)
          expect(validateSplit(Utf8.validate, b, cuts)).toBe(whole)
          expect(validateSplit(Utf8.validateScalar, b, cuts)).toBe(whole)
        }
      ),
      { numRuns: 1000 }
    )
  })
})
