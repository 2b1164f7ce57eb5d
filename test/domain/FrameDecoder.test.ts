import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import * as FrameDecoder from "../../src/domain/FrameDecoder.ts"
import { type DecoderEvent, type DecoderOptions, Opcode } from "../../src/domain/FrameDecoder.ts"
import * as FrameEncoder from "../../src/domain/FrameEncoder.ts"
import { useNative } from "../../src/domain/Mask.ts"
import type { ProtocolError } from "../../src/domain/ProtocolError.ts"
import { concatBytes, splitAt } from "../support/Bytes.ts"

const enc = (s: string) => new TextEncoder().encode(s)
const hex = (s: string) => new Uint8Array(s.trim().split(/\s+/).map((h) => parseInt(h, 16)))
const MASK = new Uint8Array([0x37, 0xfa, 0x21, 0x3d])

// Plain-data view of an event, so views and copies compare by content.
const plain = (e: DecoderEvent) => ("data" in e ? { ...e, data: Array.from(e.data) } : e)

interface Outcome {
  readonly events: Array<ReturnType<typeof plain>>
  readonly error: ProtocolError | undefined
  readonly finished: boolean
}

/** Feed chunks (cloned: the decoder unmasks in place) and collect everything. */
const decode = (chunks: ReadonlyArray<Uint8Array>, options?: Partial<DecoderOptions>): Outcome => {
  const state = FrameDecoder.make(options)
  const events: Array<ReturnType<typeof plain>> = []
  let error: ProtocolError | undefined
  for (const chunk of chunks) {
    const result = state.feed(chunk.slice())
    for (const e of result.events) events.push(plain(e))
    error ??= result.error
  }
  return { events, error, finished: state.finished }
}

/** A masked (client → server) frame. */
const frame = (opcode: number, payload: Uint8Array, fin = true, rsv1 = false) =>
  FrameEncoder.encodeFrameConcat({ opcode, fin, rsv1, mask: MASK }, payload)

const cat = (...parts: Array<Uint8Array>) => concatBytes(parts)
const split = splitAt

const expectError = (outcome: Outcome, reason: ProtocolError["reason"], closeCode: number) => {
  expect(outcome.error?.reason).toBe(reason)
  expect(outcome.error?.closeCode).toBe(closeCode)
  expect(outcome.finished).toBe(true)
}

const message = (data: Uint8Array | string, binary = false, compressed = false) => ({
  _tag: "Message" as const,
  binary,
  data: Array.from(typeof data === "string" ? enc(data) : data),
  compressed
})

describe("FrameDecoder: RFC 6455 §5.7 examples", () => {
  it("single-frame unmasked text (client role)", () => {
    expect(decode([hex("81 05 48 65 6c 6c 6f")], { role: "client" })).toEqual({
      events: [message("Hello")],
      error: undefined,
      finished: false
    })
  })

  it("single-frame masked text (server role)", () => {
    expect(decode([hex("81 85 37 fa 21 3d 7f 9f 4d 51 58")]).events).toEqual([message("Hello")])
  })

  it("fragmented unmasked text", () => {
    expect(decode([hex("01 03 48 65 6c"), hex("80 02 6c 6f")], { role: "client" }).events).toEqual([
      message("Hello")
    ])
  })

  it("unmasked ping and masked pong", () => {
    expect(decode([hex("89 05 48 65 6c 6c 6f")], { role: "client" }).events).toEqual([
      { _tag: "Ping", data: Array.from(enc("Hello")) }
    ])
    expect(decode([hex("8a 85 37 fa 21 3d 7f 9f 4d 51 58")]).events).toEqual([
      { _tag: "Pong", data: Array.from(enc("Hello")) }
    ])
  })

  it("256 bytes and 64 KiB binary in one unmasked frame", () => {
    const b256 = new Uint8Array(256).map((_, i) => i)
    expect(decode([cat(hex("82 7e 01 00"), b256)], { role: "client" }).events).toEqual([message(b256, true)])
    const b64k = new Uint8Array(65536).map((_, i) => i * 7)
    expect(decode([cat(hex("82 7f 00 00 00 00 00 01 00 00"), b64k)], { role: "client" }).events).toEqual([
      message(b64k, true)
    ])
  })
})

describe("FrameDecoder: lengths", () => {
  it("payload lengths around the 7/16/64-bit boundaries", () => {
    for (const n of [0, 1, 125, 126, 127, 128, 65535, 65536]) {
      const payload = new Uint8Array(n).map((_, i) => i & 0xff)
      const bytes = frame(Opcode.Binary, payload)
      expect(bytes.length - n).toBe((n < 126 ? 2 : n < 65536 ? 4 : 10) + 4)
      expect(decode([bytes]).events).toEqual([message(payload, true)])
      // and byte by byte for the header
      expect(decode([...split(bytes, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])]).events).toEqual([
        message(payload, true)
      ])
    }
  })

  it("accepts a non-minimal length encoding", () => {
    const bytes = cat(hex("82 7e 00 05"), enc("abcde"))
    expect(decode([bytes], { role: "client" }).events).toEqual([message("abcde", true)])
    const long = cat(hex("82 7f 00 00 00 00 00 00 00 02"), enc("ab"))
    expect(decode([long], { role: "client" }).events).toEqual([message("ab", true)])
  })

  it("64-bit length with the most significant bit set → 1002 InvalidLength", () => {
    expectError(decode([hex("82 ff 80 00 00 00 00 00 00 01")]), "InvalidLength", 1002)
  })

  it("a frame over maxMessageSize is refused from its header alone", () => {
    // 16-bit form, header only (payload never sent)
    expectError(decode([hex("82 fe 04 01 37 fa 21 3d")], { maxMessageSize: 1024 }), "MessageTooBig", 1009)
    // 64-bit form before the mask key arrives
    expectError(decode([hex("82 ff 00 00 00 01 00 00 00 00")]), "MessageTooBig", 1009)
    // exactly the limit is fine
    const ok = decode([frame(Opcode.Binary, new Uint8Array(1024))], { maxMessageSize: 1024 })
    expect(ok.error).toBeUndefined()
    expect(ok.events.length).toBe(1)
  })

  it("a message whose fragments add up over maxMessageSize → 1009", () => {
    const chunks = [frame(Opcode.Binary, new Uint8Array(400), false)]
    for (let i = 0; i < 5; i++) chunks.push(frame(Opcode.Continuation, new Uint8Array(400), false))
    const outcome = decode(chunks, { maxMessageSize: 1024 })
    expectError(outcome, "MessageTooBig", 1009)
    expect(outcome.events).toEqual([])
  })

  it("bufferedBytes counts partial frames and fragments", () => {
    const state = FrameDecoder.make()
    state.feed(frame(Opcode.Binary, new Uint8Array(100), false))
    expect(state.bufferedBytes).toBe(100)
    const next = frame(Opcode.Continuation, new Uint8Array(50))
    state.feed(next.subarray(0, 20))
    expect(state.bufferedBytes).toBe(100 + 20 - 6) // 6 header bytes parsed, 14 payload held
    const done = state.feed(next.subarray(20))
    expect(done.events.length).toBe(1)
    expect(state.bufferedBytes).toBe(0)
  })
})

describe("FrameDecoder: zero copy", () => {
  it("a payload inside one chunk is unmasked in place and returned as a view", () => {
    const chunk = cat(frame(Opcode.Binary, enc("abc")), frame(Opcode.Text, enc("defg")))
    const { events } = FrameDecoder.make().feed(chunk)
    expect(events.map(plain)).toEqual([message("abc", true), message("defg")])
    for (const e of events) if (e._tag === "Message") expect(e.data.buffer).toBe(chunk.buffer)
  })

  it("a single-fragment message in a later chunk is not copied either", () => {
    const bytes = frame(Opcode.Binary, new Uint8Array(300).fill(9))
    const state = FrameDecoder.make()
    state.feed(bytes.slice(0, 8)) // whole header
    const second = bytes.slice(8)
    const { events } = state.feed(second)
    expect(events.length).toBe(1)
    expect(events[0]!._tag === "Message" && events[0]!.data.buffer).toBe(second.buffer)
  })
})

describe("FrameDecoder: protocol errors", () => {
  const cases: Array<[string, Array<Uint8Array>, Partial<DecoderOptions>, ProtocolError["reason"], number]> = [
    ["RSV1 without extension", [frame(Opcode.Text, enc("a"), true, true)], {}, "ReservedBits", 1002],
    ["RSV2", [hex("a1 80 00 00 00 00")], {}, "ReservedBits", 1002],
    ["RSV3", [hex("91 80 00 00 00 00")], {}, "ReservedBits", 1002],
    ["RSV1 on control (deflate)", [frame(Opcode.Ping, enc(""), true, true)], { allowRsv1: true }, "ReservedBits", 1002],
    [
      "RSV1 on continuation (deflate)",
      [frame(Opcode.Text, enc("a"), false, true), frame(Opcode.Continuation, enc("b"), true, true)],
      { allowRsv1: true },
      "ReservedBits",
      1002
    ],
    ["opcode 3", [hex("83 80 00 00 00 00")], {}, "ReservedOpcode", 1002],
    ["opcode 7", [hex("87 80 00 00 00 00")], {}, "ReservedOpcode", 1002],
    ["opcode 0xB", [hex("8b 80 00 00 00 00")], {}, "ReservedOpcode", 1002],
    ["opcode 0xF", [hex("8f 80 00 00 00 00")], {}, "ReservedOpcode", 1002],
    ["ping of 126 bytes", [frame(Opcode.Ping, new Uint8Array(126))], {}, "ControlFrameTooLong", 1002],
    ["ping with FIN = 0", [frame(Opcode.Ping, enc("x"), false)], {}, "FragmentedControlFrame", 1002],
    ["continuation first", [frame(Opcode.Continuation, enc("x"))], {}, "UnexpectedContinuation", 1002],
    [
      "text inside a fragmented message",
      [frame(Opcode.Text, enc("a"), false), frame(Opcode.Text, enc("b"))],
      {},
      "ExpectedContinuation",
      1002
    ],
    ["unmasked frame to a server", [hex("81 01 61")], {}, "UnmaskedFrame", 1002],
    ["masked frame to a client", [frame(Opcode.Text, enc("a"))], { role: "client" }, "MaskedFrame", 1002],
    ["invalid UTF-8 text", [frame(Opcode.Text, hex("c0 80"))], {}, "InvalidUtf8", 1007],
    ["text ending mid-character", [frame(Opcode.Text, hex("e2 82"))], {}, "InvalidUtf8", 1007]
  ]
  for (const [name, chunks, options, reason, code] of cases) {
    it(`${name} → ${code} ${reason}`, () => expectError(decode(chunks, options), reason, code))
  }

  it("events before an error in the same chunk are returned, nothing after", () => {
    const state = FrameDecoder.make()
    const result = state.feed(cat(frame(Opcode.Text, enc("one")), frame(Opcode.Ping, enc("p")), hex("83 80 00 00 00 00"), frame(Opcode.Text, enc("x")))
    )
    expect(result.events.map(plain)).toEqual([message("one"), { _tag: "Ping", data: Array.from(enc("p")) }])
    expect(result.error?.reason).toBe("ReservedOpcode")
    expect(state.feed(frame(Opcode.Text, enc("more")))).toEqual({ events: [], error: undefined })
  })

  it("fails as soon as the bad header byte arrives", () => {
    const state = FrameDecoder.make()
    expect(state.feed(hex("83")).error).toBeUndefined()
    expect(state.feed(hex("80")).error?.reason).toBe("ReservedOpcode")
  })
})

describe("FrameDecoder: fragmentation and UTF-8", () => {
  it("control frames between fragments are emitted immediately", () => {
    const state = FrameDecoder.make()
    const a = state.feed(cat(frame(Opcode.Text, enc("Hel"), false), frame(Opcode.Ping, enc("p"))))
    expect(a.events.map(plain)).toEqual([{ _tag: "Ping", data: Array.from(enc("p")) }])
    const b = state.feed(cat(frame(Opcode.Pong, enc("")), frame(Opcode.Continuation, enc("lo"))))
    expect(b.events.map(plain)).toEqual([{ _tag: "Pong", data: [] }, message("Hello")])
  })

  it("invalid UTF-8 in the first fragment fails before the second arrives", () => {
    const state = FrameDecoder.make()
    const result = state.feed(frame(Opcode.Text, cat(enc("ok"), hex("ed a0 80")), false))
    expectError({ events: [], error: result.error, finished: state.finished }, "InvalidUtf8", 1007)
  })

  it("invalid UTF-8 inside one frame fails as soon as its chunk arrives", () => {
    const bytes = frame(Opcode.Text, cat(enc("a".repeat(50)), hex("ff"), enc("b".repeat(50))))
    const state = FrameDecoder.make()
    expect(state.feed(bytes.slice(0, 40)).error).toBeUndefined()
    expect(state.feed(bytes.slice(40, 60)).error?.reason).toBe("InvalidUtf8")
  })

  it("a code point split across fragments and across chunks is valid", () => {
    const euro = enc("€") // e2 82 ac
    const frames = cat(
      frame(Opcode.Text, euro.subarray(0, 1), false),
      frame(Opcode.Continuation, euro.subarray(1, 2), false),
      frame(Opcode.Continuation, cat(euro.subarray(2), enc("😀"))),
      frame(Opcode.Text, enc("x😀y".repeat(30)))
    )
    const whole = decode([frames])
    expect(whole.events).toEqual([message("€😀"), message("x😀y".repeat(30))])
    for (let cut = 0; cut <= frames.length; cut++) {
      expect(decode(split(frames, [cut, cut + 3]))).toEqual(whole)
    }
  })

  it("empty frames and empty messages are valid", () => {
    const bytes = cat(
      frame(Opcode.Text, enc("")),
      frame(Opcode.Binary, enc(""), false),
      frame(Opcode.Continuation, enc(""), false),
      frame(Opcode.Continuation, enc(""))
    )
    expect(decode([bytes]).events).toEqual([message(""), message("", true)])
  })

  it("compressed messages are not UTF-8 checked and keep the RSV1 flag", () => {
    const bytes = cat(frame(Opcode.Text, hex("ff fe"), false, true), frame(Opcode.Continuation, hex("c0")))
    expect(decode([bytes], { allowRsv1: true }).events).toEqual([message(hex("ff fe c0"), false, true)])
  })
})

describe("FrameDecoder: close frames", () => {
  const close = (payload: Uint8Array) => decode([frame(Opcode.Close, payload)])

  it("empty payload → code undefined", () => {
    expect(close(enc("")).events).toEqual([{ _tag: "Close", code: undefined, reason: "" }])
  })

  it("1-byte payload → 1002", () => expectError(close(hex("03")), "InvalidClosePayload", 1002))

  it("codes not allowed on the wire → 1002", () => {
    for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]) {
      expectError(close(hex(`${(code >> 8).toString(16)} ${(code & 0xff).toString(16)}`)), "InvalidClosePayload", 1002)
    }
  })

  it("valid codes with and without reason", () => {
    for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]) {
      expect(close(FrameEncoder.closePayload(code, "bye ☃")).events).toEqual([
        { _tag: "Close", code, reason: "bye ☃" }
      ])
      expect(close(FrameEncoder.closePayload(code)).events).toEqual([{ _tag: "Close", code, reason: "" }])
    }
  })

  it("invalid UTF-8 reason → 1007", () => expectError(close(hex("03 e8 ce ba e1 bd")), "InvalidUtf8", 1007))

  it("bytes after a Close are ignored", () => {
    const state = FrameDecoder.make()
    const result = state.feed(cat(frame(Opcode.Close, FrameEncoder.closePayload(1000)), frame(Opcode.Text, enc("late")), hex("ff ff"))
    )
    expect(result.events.map(plain)).toEqual([{ _tag: "Close", code: 1000, reason: "" }])
    expect(result.error).toBeUndefined()
    expect(state.finished).toBe(true)
    expect(state.feed(hex("83 80 00 00 00 00"))).toEqual({ events: [], error: undefined })
    expect(state.bufferedBytes).toBe(0)
  })
})

// ---- properties ----

type Item =
  | { readonly kind: "ping"; readonly payload: Uint8Array }
  | {
    readonly kind: "message"
    readonly binary: boolean
    readonly payload: Uint8Array
    readonly fragmentSize: number | undefined
    readonly pingAfterFirst: boolean
  }

const itemArb: fc.Arbitrary<Item> = fc.oneof(
  fc.record({ kind: fc.constant("ping" as const), payload: fc.uint8Array({ maxLength: 125 }) }),
  fc.record({
    kind: fc.constant("message" as const),
    binary: fc.constant(false),
    payload: fc.oneof(fc.string({ unit: "binary", maxLength: 100 }), fc.string({ maxLength: 400 })).map(enc),
    fragmentSize: fc.option(fc.integer({ min: 1, max: 64 }), { nil: undefined }),
    pingAfterFirst: fc.boolean()
  }),
  fc.record({
    kind: fc.constant("message" as const),
    binary: fc.constant(true),
    payload: fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 70000 }).map((n) => new Uint8Array(n))),
    fragmentSize: fc.option(fc.integer({ min: 1, max: 20000 }), { nil: undefined }),
    pingAfterFirst: fc.boolean()
  })
)

/** Encode items as masked client frames (or unmasked server frames); returns the bytes and the expected events. */
const encodeItems = (items: ReadonlyArray<Item>, seed: number, masked = true) => {
  let n = seed
  const maskSource = () => {
    if (!masked) return undefined
    n = (n * 1103515245 + 12345) >>> 0
    return new Uint8Array([n >>> 24, n >>> 16, n >>> 8, n])
  }
  const buffers: Array<Uint8Array> = []
  const expected: Array<ReturnType<typeof plain>> = []
  for (const item of items) {
    if (item.kind === "ping") {
      buffers.push(FrameEncoder.encodePing(item.payload, maskSource()))
      expected.push({ _tag: "Ping", data: Array.from(item.payload) })
      continue
    }
    // Fragment by hand (encodeMessage is tested on its own), a ping after the first fragment.
    const size = item.fragmentSize ?? Math.max(1, item.payload.length)
    const opcode = item.binary ? Opcode.Binary : Opcode.Text
    const frames: Array<Uint8Array> = []
    let at = 0
    do {
      const end = Math.min(at + size, item.payload.length)
      frames.push(FrameEncoder.encodeFrameConcat(
        { opcode: at === 0 ? opcode : Opcode.Continuation, fin: end === item.payload.length, mask: maskSource() },
        item.payload.subarray(at, end)
      ))
      at = end
    } while (at < item.payload.length)
    if (item.pingAfterFirst && frames.length > 1) {
      frames.splice(1, 0, FrameEncoder.encodePing(enc("mid"), maskSource()))
      expected.push({ _tag: "Ping", data: Array.from(enc("mid")) })
    }
    buffers.push(...frames)
    expected.push(message(item.payload, item.binary))
  }
  return { bytes: cat(...buffers), expected }
}

describe("FrameDecoder: properties", () => {
  // Both unmask paths: native (bufferutil) for large ranges, and JavaScript only.
  for (const native of [true, false]) {
    it(`any split of a valid stream yields the same events as one chunk (${native ? "native" : "JavaScript"} unmask)`, () => {
      useNative(native)
      try {
        fc.assert(
          fc.property(
            fc.array(itemArb, { maxLength: 6 }),
            fc.nat(),
            fc.oneof(fc.array(fc.nat(), { maxLength: 12 }), fc.constant("bytes" as const)),
            (items, seed, cuts) => {
              const { bytes, expected } = encodeItems(items, seed)
              const whole = decode([bytes])
              expect(whole.error).toBeUndefined()
              expect(whole.events).toEqual(expected)
              if (cuts === "bytes") {
                if (bytes.length > 3000) return // 1-byte chunks: keep runs fast
                expect(decode(split(bytes, Array.from(bytes, (_, i) => i)))).toEqual(whole)
              } else {
                expect(decode(split(bytes, cuts))).toEqual(whole)
              }
            }
          ),
          { numRuns: 100 }
        )
      } finally {
        useNative(true)
      }
    })
  }

  it("feedBorrowed: any split, each piece in a reused buffer scribbled after the call, yields what feed yields", () => {
    // The pieces share one scratch buffer, as the client's reads share its `onread` buffer: any
    // event, fragment or unread byte the decoder kept as a view of it would come out corrupted.
    const decodeBorrowed = (pieces: ReadonlyArray<Uint8Array>, options: Partial<DecoderOptions>): Outcome => {
      const scratch = new Uint8Array(Math.max(0, ...pieces.map((p) => p.length)))
      const state = FrameDecoder.make(options)
      const raw: Array<DecoderEvent> = []
      let error: ProtocolError | undefined
      for (const piece of pieces) {
        scratch.set(piece)
        const result = state.feedBorrowed(scratch.subarray(0, piece.length))
        raw.push(...result.events)
        error ??= result.error
        scratch.fill(0xee)
      }
      return { events: raw.map(plain), error, finished: state.finished }
    }
    fc.assert(
      fc.property(
        fc.array(itemArb, { maxLength: 6 }),
        fc.nat(),
        fc.array(fc.nat(), { maxLength: 12 }),
        fc.constantFrom<"server" | "client">("server", "client"),
        (items, seed, cuts, role) => {
          const { bytes, expected } = encodeItems(items, seed, role === "server")
          const pieces = split(bytes, cuts)
          const owned = decode(pieces, { role })
          expect(owned.events).toEqual(expected)
          expect(decodeBorrowed(pieces, { role })).toEqual(owned)
        }
      ),
      { numRuns: 150 }
    )
  })

  it("feedBorrowed: a payload spanning reads is filled from them, with no copy of the reads kept", () => {
    const payload = new Uint8Array(100_000).map((_, i) => i & 0xff)
    const bytes = FrameEncoder.encodeFrameConcat({ opcode: Opcode.Binary }, payload)
    const state = FrameDecoder.make({ role: "client" })
    const read = new Uint8Array(65536)
    read.set(bytes.subarray(0, 65536))
    expect(state.feedBorrowed(read).events).toEqual([])
    // Only the partial payload is held: no chunk of the first read.
    expect(state.chunks).toEqual([])
    read.set(bytes.subarray(65536))
    const { events } = state.feedBorrowed(read.subarray(0, bytes.length - 65536))
    read.fill(0)
    expect(events.map(plain)).toEqual([message(payload, true)])
  })

  it("random garbage never throws: events and/or a 1002/1007/1009 error", () => {
    const garbage = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      // plausible headers followed by noise
      fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 200 }))
        .map(([a, b, rest]) => cat(new Uint8Array([a, b | 0x80]), rest))
    )
    fc.assert(
      fc.property(
        garbage,
        fc.array(fc.nat(), { maxLength: 5 }),
        fc.constantFrom<"server" | "client">("server", "client"),
        fc.boolean(),
        (bytes, cuts, role, allowRsv1) => {
          const outcome = decode(split(bytes, cuts), { role, allowRsv1, maxMessageSize: 150 })
          if (outcome.error !== undefined) {
            expect([1002, 1007, 1009]).toContain(outcome.error.closeCode)
            expect(outcome.finished).toBe(true)
          }
        }
      ),
      { numRuns: 1000 }
    )
  })
})

describe("FrameDecoder: memory under hostile fragmentation", () => {
  it("100,000 one-byte fragments are held in a few buffers, not one object each", () => {
    const fragments = 100_000
    const parts: Array<Uint8Array> = [frame(Opcode.Binary, new Uint8Array([0]), false)]
    for (let i = 1; i < fragments - 1; i++) parts.push(frame(Opcode.Continuation, new Uint8Array([i & 0xff]), false))
    const state = FrameDecoder.make()
    for (const part of parts) state.feed(part)
    // All but the final fragment are in: the decoder holds them in at most a handful of buffers.
    expect(state.fragments.length + (state.small === undefined ? 0 : 1)).toBeLessThanOrEqual(2)
    expect(state.bufferedBytes).toBe(fragments - 1)
    const last = state.feed(frame(Opcode.Continuation, new Uint8Array([7]), true))
    expect(last.events).toHaveLength(1)
    const event = last.events[0]!
    expect(event._tag === "Message" && event.data.length).toBe(fragments)
    expect(event._tag === "Message" && event.data[1]).toBe(1)
    expect(event._tag === "Message" && event.data[fragments - 1]).toBe(7)
  })
})
