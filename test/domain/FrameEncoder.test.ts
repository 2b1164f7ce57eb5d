import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import * as FrameDecoder from "../../src/domain/FrameDecoder.ts"
import { Opcode } from "../../src/domain/FrameDecoder.ts"
import * as FrameEncoder from "../../src/domain/FrameEncoder.ts"
import { copyMasked, maskRange, maskRangeJs, nativeAvailable, useNative } from "../../src/domain/Mask.ts"
import { concatBytes } from "../support/Bytes.ts"

const enc = (s: string) => new TextEncoder().encode(s)
const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ")
const MASK = new Uint8Array([0x37, 0xfa, 0x21, 0x3d])

const cat = concatBytes

describe("FrameEncoder: RFC 6455 §5.7 examples", () => {
  it("unmasked and masked \"Hello\"", () => {
    expect(toHex(FrameEncoder.encodeFrameConcat({ opcode: Opcode.Text }, enc("Hello")))).toBe("81 05 48 65 6c 6c 6f")
    const payload = enc("Hello")
    expect(toHex(FrameEncoder.encodeFrameConcat({ opcode: Opcode.Text, mask: MASK }, payload))).toBe(
      "81 85 37 fa 21 3d 7f 9f 4d 51 58"
    )
    expect(toHex(cat(FrameEncoder.encodeFrame({ opcode: Opcode.Text, mask: MASK }, payload)))).toBe(
      "81 85 37 fa 21 3d 7f 9f 4d 51 58"
    )
    expect(payload).toEqual(enc("Hello")) // the caller's buffer is untouched
  })

  it("fragmented \"Hel\" + \"lo\"", () => {
    expect(toHex(cat(FrameEncoder.encodeMessage({ binary: false, payload: enc("Hello"), fragmentSize: 3 })))).toBe(
      "01 03 48 65 6c 80 02 6c 6f"
    )
  })

  it("unmasked ping and masked pong", () => {
    expect(toHex(FrameEncoder.encodePing(enc("Hello")))).toBe("89 05 48 65 6c 6c 6f")
    expect(toHex(FrameEncoder.encodePong(enc("Hello"), MASK))).toBe("8a 85 37 fa 21 3d 7f 9f 4d 51 58")
  })

  it("256-byte and 64 KiB binary headers", () => {
    expect(toHex(FrameEncoder.frameHeader({ opcode: Opcode.Binary }, 256))).toBe("82 7e 01 00")
    expect(toHex(FrameEncoder.frameHeader({ opcode: Opcode.Binary }, 65536))).toBe("82 7f 00 00 00 00 00 01 00 00")
    const big = new Uint8Array(65536)
    const [header, body] = FrameEncoder.encodeFrame({ opcode: Opcode.Binary }, big)
    expect(header.length).toBe(10)
    expect(body).toBe(big) // no copy when unmasked
  })
})

describe("FrameEncoder: headers", () => {
  it("header sizes at the length boundaries", () => {
    for (const n of [0, 1, 125, 126, 127, 128, 65535, 65536]) {
      const size = n < 126 ? 2 : n < 65536 ? 4 : 10
      expect(FrameEncoder.frameHeader({ opcode: Opcode.Binary }, n).length).toBe(size)
      expect(FrameEncoder.frameHeader({ opcode: Opcode.Binary, mask: MASK }, n).length).toBe(size + 4)
      const frame = FrameEncoder.encodeFrameConcat({ opcode: Opcode.Binary }, new Uint8Array(n))
      expect(frame.length).toBe(size + n)
    }
  })

  it("large 64-bit lengths use both halves", () => {
    expect(toHex(FrameEncoder.frameHeader({ opcode: Opcode.Binary }, 2 ** 40 + 5))).toBe(
      "82 7f 00 00 01 00 00 00 00 05"
    )
  })

  it("FIN, RSV1 and opcode bits", () => {
    expect(FrameEncoder.frameHeader({ opcode: Opcode.Text, fin: false }, 0)[0]).toBe(0x01)
    expect(FrameEncoder.frameHeader({ opcode: Opcode.Text, rsv1: true }, 0)[0]).toBe(0xc1)
    expect(FrameEncoder.frameHeader({ opcode: Opcode.Close }, 0)[0]).toBe(0x88)
  })
})

describe("FrameEncoder: messages", () => {
  it("fragments: first Text/Binary FIN=0 with RSV1, then continuations, last FIN=1", () => {
    const frames = FrameEncoder.encodeMessage({
      binary: true,
      payload: new Uint8Array(10),
      compressed: true,
      fragmentSize: 4
    })
    expect(frames.map((f) => [f[0], f[1]])).toEqual([[0x42, 4], [0x00, 4], [0x80, 2]])
  })

  it("one frame when the payload fits, or without fragmentSize", () => {
    expect(FrameEncoder.encodeMessage({ binary: true, payload: new Uint8Array(4), fragmentSize: 4 }).length).toBe(1)
    expect(FrameEncoder.encodeMessage({ binary: true, payload: new Uint8Array(100) }).length).toBe(1)
    expect(toHex(cat(FrameEncoder.encodeMessage({ binary: false, payload: new Uint8Array(0), fragmentSize: 4 }))))
      .toBe("81 00")
  })

  it("large frames are header + the caller's payload (no copy)", () => {
    const payload = new Uint8Array(100_000)
    const buffers = FrameEncoder.encodeMessage({ binary: true, payload })
    expect(buffers.length).toBe(2)
    expect(buffers[1]).toBe(payload)
  })

  it("masking never touches the caller's buffer, and uses a fresh key per frame", () => {
    const payload = new Uint8Array(10_000).map((_, i) => i)
    const copy = payload.slice()
    let k = 0
    const buffers = FrameEncoder.encodeMessage({
      binary: true,
      payload,
      fragmentSize: 3000,
      maskSource: () => new Uint8Array([++k, 2, 3, 4])
    })
    expect(payload).toEqual(copy)
    expect(k).toBe(4)
    expect(buffers.map((b) => b[1]! & 0x80)).toEqual([0x80, 0x80, 0x80, 0x80])
    const decoded = FrameDecoder.make().feed(cat(buffers))
    expect(decoded.events).toEqual([{ _tag: "Message", binary: true, data: copy, compressed: false }])
  })
})

describe("FrameEncoder: close and control payloads", () => {
  it("closePayload", () => {
    expect(FrameEncoder.closePayload().length).toBe(0)
    expect(FrameEncoder.closePayload(undefined, "ignored").length).toBe(0)
    expect(toHex(FrameEncoder.closePayload(1000))).toBe("03 e8")
    expect(toHex(FrameEncoder.closePayload(1001, "bye"))).toBe("03 e9 62 79 65")
  })

  it("truncates a long reason to 125 bytes without cutting a character", () => {
    for (let pad = 0; pad < 4; pad++) {
      const reason = "a".repeat(pad) + "€".repeat(60)
      const payload = FrameEncoder.closePayload(1000, reason)
      expect(payload.length).toBeLessThanOrEqual(125)
      expect(payload.length).toBeGreaterThanOrEqual(123)
      const text = new TextDecoder("utf-8", { fatal: true }).decode(payload.subarray(2))
      expect(reason.startsWith(text)).toBe(true)
    }
    expect(FrameEncoder.closePayload(1000, "x".repeat(200)).length).toBe(125)
  })

  it("encodeClose", () => {
    expect(toHex(FrameEncoder.encodeClose(1000))).toBe("88 02 03 e8")
    expect(toHex(FrameEncoder.encodeClose())).toBe("88 00")
    const decoded = FrameDecoder.make().feed(FrameEncoder.encodeClose(4000, "done", MASK))
    expect(decoded.events).toEqual([{ _tag: "Close", code: 4000, reason: "done" }])
  })

  it("ping/pong payloads over 125 bytes are cut to 125", () => {
    expect(FrameEncoder.encodePing(new Uint8Array(200)).length).toBe(127)
    expect(FrameEncoder.encodePong().length).toBe(2)
  })
})

describe("Mask", () => {
  it("applyMask with an offset continues a split payload", () => {
    const whole = new Uint8Array(300).map((_, i) => i * 13)
    const pieces = whole.slice()
    FrameEncoder.applyMask(whole, MASK)
    FrameEncoder.applyMask(pieces.subarray(0, 7), MASK, 0)
    FrameEncoder.applyMask(pieces.subarray(7, 200), MASK, 7)
    FrameEncoder.applyMask(pieces.subarray(200), MASK, 200)
    expect(pieces).toEqual(whole)
  })

  it("property: word-wise masking equals the byte definition at any alignment", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.nat({ max: 7 }), fc.uint8Array({ minLength: 4, maxLength: 4 }), (data, shift, mask) => {
        const buffer = new Uint8Array(data.length + 8)
        const view = buffer.subarray(shift, shift + data.length)
        view.set(data)
        maskRange(view, 0, view.length, mask[0]!, mask[1]!, mask[2]!, mask[3]!)
        expect(Array.from(view)).toEqual(Array.from(data, (b, i) => b ^ mask[i & 3]!))
        expect(buffer.subarray(0, shift).every((b) => b === 0)).toBe(true)
        expect(buffer.subarray(shift + data.length).every((b) => b === 0)).toBe(true)
      }),
      { numRuns: 300 }
    )
  })
})

describe("Mask: native (bufferutil) and JavaScript paths", () => {
  // bufferutil is a devDependency: the native path must be what runs here, or the tests below
  // would compare the JavaScript path with itself.
  it("the native masking loaded", () => {
    expect(nativeAvailable).toBe(true)
  })

  // Lengths around the native threshold (512) and large ones; any alignment and start.
  const rangeArb = fc.tuple(
    fc.oneof(fc.uint8Array({ maxLength: 1200 }), fc.integer({ min: 0, max: 70000 }).map((n) => new Uint8Array(n).map((_, i) => i * 31))),
    fc.nat({ max: 7 }),
    fc.uint8Array({ minLength: 4, maxLength: 4 })
  )

  it("property: maskRange (native for large ranges) gives the same bytes as maskRangeJs", () => {
    fc.assert(
      fc.property(rangeArb, fc.nat(), fc.nat(), ([data, shift, mask], a, b) => {
        const start = data.length === 0 ? 0 : a % data.length
        const end = start + (data.length === 0 ? 0 : b % (data.length - start + 1))
        const viaNative = new Uint8Array(data.length + 8).subarray(shift, shift + data.length)
        viaNative.set(data)
        const viaJs = viaNative.slice()
        expect(useNative(true)).toBe(true)
        maskRange(viaNative, start, end, mask[0]!, mask[1]!, mask[2]!, mask[3]!)
        maskRangeJs(viaJs, start, end, mask[0]!, mask[1]!, mask[2]!, mask[3]!)
        expect(viaNative).toEqual(viaJs)
        expect(Array.from(viaJs.subarray(start, end))).toEqual(Array.from(data.subarray(start, end), (x, i) => x ^ mask[i & 3]!))
        expect(viaJs.subarray(0, start)).toEqual(data.subarray(0, start))
        expect(viaJs.subarray(end)).toEqual(data.subarray(end))
      }),
      { numRuns: 200 }
    )
  })

  it("property: copyMasked gives the same bytes on both paths and leaves the source alone", () => {
    fc.assert(
      fc.property(rangeArb, fc.nat({ max: 9 }), ([data, shift, mask], at) => {
        const source = new Uint8Array(data.length + 8).subarray(shift, shift + data.length)
        source.set(data)
        const outputs = [true, false].map((native) => {
          useNative(native)
          const dest = new Uint8Array(at + data.length + 3).fill(0xaa)
          copyMasked(source, dest, at, mask[0]!, mask[1]!, mask[2]!, mask[3]!)
          return dest
        })
        useNative(true)
        expect(outputs[0]).toEqual(outputs[1])
        expect(Array.from(outputs[1]!.subarray(at, at + data.length))).toEqual(Array.from(data, (x, i) => x ^ mask[i & 3]!))
        expect(outputs[1]!.subarray(0, at).every((x) => x === 0xaa)).toBe(true)
        expect(outputs[1]!.subarray(at + data.length).every((x) => x === 0xaa)).toBe(true)
        expect(source).toEqual(data)
      }),
      { numRuns: 200 }
    )
  })

  it("copyMasked refuses a destination too small (the native function does not check)", () => {
    expect(() => copyMasked(new Uint8Array(600), new Uint8Array(1000), 401, 1, 2, 3, 4)).toThrow(RangeError)
    expect(() => copyMasked(new Uint8Array(600), new Uint8Array(1000), -1, 1, 2, 3, 4)).toThrow(RangeError)
  })
})

// ---- round trips ----

const messageArb = fc.oneof(
  fc.record({
    binary: fc.constant(false),
    payload: fc.oneof(fc.string({ unit: "binary", maxLength: 200 }), fc.string({ maxLength: 5000 })).map(enc)
  }),
  fc.record({
    binary: fc.constant(true),
    payload: fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 70000 }).map((n) => new Uint8Array(n).fill(7)))
  })
)

const roundTrip = (role: "client" | "server") =>
  fc.property(
    fc.array(fc.record({
      message: messageArb,
      fragmentSize: fc.option(fc.integer({ min: 1, max: 3000 }), { nil: undefined })
    }), { maxLength: 5 }),
    fc.nat(),
    (items, seed) => {
      let n = seed
      const maskSource = role === "client"
        ? () => {
          n = (n * 1103515245 + 12345) >>> 0
          return new Uint8Array([n >>> 24, n >>> 16, n >>> 8, n])
        }
        : undefined
      const originals = items.map((i) => i.message.payload.slice())
      const bytes = cat(items.flatMap((i) =>
        FrameEncoder.encodeMessage({ ...i.message, fragmentSize: i.fragmentSize, maskSource })
      ))
      // the decoder is the peer: a server decodes client frames and vice versa
      const decoded = FrameDecoder.make({ role: role === "client" ? "server" : "client" }).feed(bytes)
      expect(decoded.error).toBeUndefined()
      expect(decoded.events.map((e) => e._tag === "Message" ? [e.binary, Array.from(e.data)] : e)).toEqual(
        items.map((i) => [i.message.binary, Array.from(i.message.payload)])
      )
      items.forEach((i, k) => expect(i.message.payload).toEqual(originals[k]))
    }
  )

describe("FrameEncoder → FrameDecoder round trips", () => {
  it("client frames (masked) decode on the server", () => fc.assert(roundTrip("client"), { numRuns: 100 }))
  it("server frames (unmasked) decode on the client", () => fc.assert(roundTrip("server"), { numRuns: 100 }))
})
