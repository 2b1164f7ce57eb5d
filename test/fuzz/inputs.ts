/**
 * Fuzz inputs: fast-check arbitraries for hostile byte streams (WebSocket
 * frames and HTTP upgrade requests, valid ones mutated), and the code that
 * turns them into bytes. Shared by the domain properties, the network fuzzer
 * (which draws from the same arbitraries with a seeded generator) and
 * `npm run fuzz`.
 *
 * Frames are encoded here by hand, not with src/domain/FrameEncoder.ts: the
 * fuzzer must be able to write what the encoder never would (wrong masks,
 * lying lengths, RSV bits, reserved opcodes), and must not share a bug with it.
 *
 * Every input is plain data (numbers, strings, arrays, Uint8Array, bigint) so
 * a shrunk counterexample can be saved as JSON and replayed (see Regressions.ts).
 */
import fc from "fast-check"

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

export interface FrameSpec {
  readonly fin: boolean
  /** RSV1..3 as a 3-bit number: RSV1 = 4, RSV2 = 2, RSV3 = 1. */
  readonly rsv: number
  readonly opcode: number
  readonly payload: Uint8Array
  /** A masking key, or undefined for an unmasked frame. */
  readonly mask: Uint8Array | undefined
  readonly lengthForm: "minimal" | 16 | 64
  /** Declare this length instead of the payload's (a lie: huge, or longer/shorter than what follows). */
  readonly declaredLength: bigint | undefined
}

/** Encode a frame exactly as specified (RFC 6455 §5.2), lies included. */
export const encodeFrame = (f: FrameSpec): Uint8Array => {
  const length = f.declaredLength ?? BigInt(f.payload.length)
  const wanted = f.lengthForm === "minimal" ? (length < 126n ? 7 : length < 65536n ? 16 : 64) : f.lengthForm
  const form = wanted === 16 && length > 0xffffn ? 64 : wanted
  const extra = form === 7 ? 0 : form === 16 ? 2 : 8
  const head = new Uint8Array(2 + extra + (f.mask === undefined ? 0 : 4))
  head[0] = (f.fin ? 0x80 : 0) | ((f.rsv & 7) << 4) | (f.opcode & 0x0f)
  head[1] = (f.mask === undefined ? 0 : 0x80) | (form === 7 ? Number(length) : form === 16 ? 126 : 127)
  for (let i = 0; i < extra; i++) head[2 + i] = Number((length >> BigInt(8 * (extra - 1 - i))) & 0xffn)
  const payload = f.payload.slice()
  if (f.mask !== undefined) {
    head.set(f.mask, 2 + extra)
    for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ f.mask[i & 3]!
  }
  return concat([head, payload])
}

export const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

const utf8 = (s: string) => new TextEncoder().encode(s)

/** Payloads: mostly small, text-like or binary, sometimes invalid UTF-8, sometimes around size limits. */
const payloadArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }).map(utf8) },
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  // invalid UTF-8 pieces: lone continuation, overlong, surrogate, truncated sequence, out of range
  {
    weight: 2,
    arbitrary: fc.tuple(
      fc.string({ maxLength: 8 }).map(utf8),
      fc.constantFrom([0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80], [0xff])
    ).map(([a, b]) => concat([a, new Uint8Array(b)]))
  },
  { weight: 1, arbitrary: fc.integer({ min: 120, max: 1100 }).map((n) => new Uint8Array(n).fill(0x61)) }
)

/** Close payloads: valid codes, codes never allowed on the wire, 1-byte bodies, bad reasons. */
const closePayloadArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.constant(new Uint8Array(0)),
  fc.constant(new Uint8Array([0x03])),
  fc.tuple(
    fc.oneof(fc.constantFrom(1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1015, 2999, 3000, 4999, 5000), fc.integer({ min: 0, max: 65535 })),
    payloadArb.map((p) => p.subarray(0, 60))
  ).map(([code, reason]) => concat([new Uint8Array([code >> 8, code & 0xff]), reason]))
)

const maskArb = fc.uint8Array({ minLength: 4, maxLength: 4 })

/**
 * One frame, mostly well-formed for a peer of `role` (the role of the side
 * that receives it), with some faults: wrong masking, RSV bits, reserved
 * opcodes, FIN = 0 on control frames, long control frames, lying lengths.
 */
export const frameArb = (receiver: "server" | "client"): fc.Arbitrary<FrameSpec> =>
  fc.record({
    fin: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    rsv: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.constant(4) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }) }),
    opcode: fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(0x0, 0x1, 0x2, 0x8, 0x9, 0xa) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 15 }) }
    ),
    payload: payloadArb,
    closePayload: closePayloadArb,
    masked: fc.oneof({ weight: 9, arbitrary: fc.constant(receiver === "server") }, { weight: 1, arbitrary: fc.boolean() }),
    mask: maskArb,
    lengthForm: fc.oneof({ weight: 6, arbitrary: fc.constant("minimal" as const) }, { weight: 1, arbitrary: fc.constantFrom(16 as const, 64 as const) }),
    declaredLength: fc.oneof(
      { weight: 12, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
      { weight: 1, arbitrary: fc.constantFrom(126n, 65535n, 65536n, (1n << 31n) - 1n, 1n << 32n, (1n << 63n) - 1n, 1n << 63n) }
    )
  }).map((r) => ({
    fin: r.fin,
    rsv: r.rsv,
    opcode: r.opcode,
    payload: r.opcode === 0x8 ? r.closePayload : r.payload,
    mask: r.masked ? r.mask : undefined,
    lengthForm: r.lengthForm,
    declaredLength: r.declaredLength
  }))

/** A byte-level change to an encoded stream; `at` is a fraction of the stream length. */
export type Mutation =
  | { readonly _tag: "Flip"; readonly at: number; readonly bit: number }
  | { readonly _tag: "Truncate"; readonly at: number }
  | { readonly _tag: "Insert"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly _tag: "Overwrite"; readonly at: number; readonly byte: number }

const fraction = fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true })

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ _tag: fc.constant("Flip" as const), at: fraction, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ _tag: fc.constant("Truncate" as const), at: fraction }),
  fc.record({ _tag: fc.constant("Insert" as const), at: fraction, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ _tag: fc.constant("Overwrite" as const), at: fraction, byte: fc.integer({ min: 0, max: 255 }) })
)

export const mutate = (bytes: Uint8Array, mutations: ReadonlyArray<Mutation>): Uint8Array => {
  let out = bytes
  for (const m of mutations) {
    const at = Math.floor(m.at * out.length)
    switch (m._tag) {
      case "Flip":
        if (out.length > 0) {
          out = out.slice()
          out[at] = out[at]! ^ (1 << m.bit)
        }
        break
      case "Overwrite":
        if (out.length > 0) {
          out = out.slice()
          out[at] = m.byte
        }
        break
      case "Truncate":
        out = out.slice(0, at)
        break
      case "Insert":
        out = concat([out.subarray(0, at), m.bytes, out.subarray(at)])
        break
    }
  }
  return out
}

/**
 * A well-formed exchange for a receiver of `role`: messages (text or binary,
 * split into 1-4 fragments, RSV1 on the first when `compression`), pings and
 * pongs between them, sometimes a close frame at the end.
 */
export const validFramesArb = (receiver: "server" | "client", compression: boolean): fc.Arbitrary<Array<FrameSpec>> => {
  const frame = (opcode: number, payload: Uint8Array, fin: boolean, rsv: number, mask: Uint8Array): FrameSpec => ({
    fin,
    rsv,
    opcode,
    payload,
    mask: receiver === "server" ? mask : undefined,
    lengthForm: "minimal",
    declaredLength: undefined
  })
  const message = fc.record({
    binary: fc.boolean(),
    text: fc.string({ unit: "grapheme", maxLength: 60 }).map(utf8),
    bytes: fc.uint8Array({ maxLength: 200 }),
    compressed: fc.boolean(),
    cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 3 }),
    mask: maskArb,
    // control frames may come between fragments (RFC 6455 §5.4)
    interleaved: fc.option(fc.record({ opcode: fc.constantFrom(0x9, 0xa), payload: fc.uint8Array({ maxLength: 125 }) }), { freq: 4 })
  }).map((m) => {
    const payload = m.binary ? m.bytes : m.text
    const pieces = split(payload, m.cuts)
    const rsv = compression && m.compressed ? 4 : 0
    const frames = pieces.map((p, i) => frame(i === 0 ? (m.binary ? 0x2 : 0x1) : 0x0, p, i === pieces.length - 1, i === 0 ? rsv : 0, m.mask))
    if (m.interleaved !== null && frames.length > 1) frames.splice(1, 0, frame(m.interleaved.opcode, m.interleaved.payload, true, 0, m.mask))
    return frames
  })
  const control = fc.record({ opcode: fc.constantFrom(0x9, 0xa), payload: fc.uint8Array({ maxLength: 125 }), mask: maskArb })
    .map((c) => [frame(c.opcode, c.payload, true, 0, c.mask)])
  const close = fc.record({ code: fc.constantFrom(1000, 1001, 1003, 3000, 4000), reason: fc.string({ maxLength: 20 }).map(utf8), mask: maskArb })
    .map((c) => frame(0x8, concat([new Uint8Array([c.code >> 8, c.code & 0xff]), c.reason]), true, 0, c.mask))
  return fc.tuple(
    fc.array(fc.oneof({ weight: 3, arbitrary: message }, { weight: 1, arbitrary: control }), { minLength: 1, maxLength: 5 }),
    fc.option(close, { freq: 3 })
  ).map(([groups, end]) => [...groups.flat(), ...(end === null ? [] : [end])])
}

/** A frame stream: raw random bytes, or frames (valid, some faulty ones inserted) then byte mutations then trailing garbage. */
export type FrameStream =
  | { readonly _tag: "Random"; readonly bytes: Uint8Array }
  | {
    readonly _tag: "Frames"
    readonly frames: ReadonlyArray<FrameSpec>
    readonly mutations: ReadonlyArray<Mutation>
    readonly tail: Uint8Array
  }

export const frameStreamArb = (receiver: "server" | "client", compression: boolean): fc.Arbitrary<FrameStream> =>
  fc.oneof(
    { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Random" as const), bytes: fc.uint8Array({ maxLength: 300 }) }) },
    {
      weight: 6,
      arbitrary: fc.record({
        _tag: fc.constant("Frames" as const),
        frames: fc.tuple(
          validFramesArb(receiver, compression),
          fc.oneof(
            { weight: 2, arbitrary: fc.constant([]) },
            { weight: 2, arbitrary: fc.array(fc.tuple(fraction, frameArb(receiver)), { minLength: 1, maxLength: 2 }) }
          )
        ).map(([valid, faulty]) => {
          const out = [...valid]
          for (const [where, f] of faulty) out.splice(Math.floor(where * (out.length + 1)), 0, f)
          return out
        }),
        mutations: fc.oneof(
          { weight: 3, arbitrary: fc.constant([]) },
          { weight: 1, arbitrary: fc.array(mutationArb, { minLength: 1, maxLength: 3 }) }
        ),
        tail: fc.oneof({ weight: 4, arbitrary: fc.constant(new Uint8Array(0)) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 32 }) })
      })
    }
  )

export const streamBytes = (s: FrameStream): Uint8Array =>
  s._tag === "Random" ? s.bytes.slice() : concat([mutate(concat(s.frames.map(encodeFrame)), s.mutations), s.tail])

// ---------------------------------------------------------------------------
// Splitting
// ---------------------------------------------------------------------------

/** Cut points as fractions: any split of a stream into chunks (empty chunks included). */
export const cutsArb: fc.Arbitrary<ReadonlyArray<number>> = fc.oneof(
  fc.constant([]),
  fc.array(fraction, { maxLength: 8 })
)

/** Split `bytes` at the cut points (sorted fractions of its length); copies, so chunks can be owned. */
export const split = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = cuts.map((c) => Math.floor(c * (bytes.length + 1))).sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let from = 0
  for (const p of points) {
    const to = Math.min(Math.max(p, from), bytes.length)
    out.push(bytes.slice(from, to))
    from = to
  }
  out.push(bytes.slice(from))
  return out
}

// ---------------------------------------------------------------------------
// HTTP upgrade requests
// ---------------------------------------------------------------------------

export interface RequestSpec {
  readonly method: string
  readonly target: string
  readonly version: string
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly eol: "\r\n" | "\n"
  readonly leadingEmptyLines: number
}

const tokenArb = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/)

export const validHeaders = (key = "dGhlIHNhbXBsZSBub25jZQ=="): Array<readonly [string, string]> => [
  ["Host", "127.0.0.1"],
  ["Upgrade", "websocket"],
  ["Connection", "Upgrade"],
  ["Sec-WebSocket-Key", key],
  ["Sec-WebSocket-Version", "13"]
]

/** A request mostly like a browser's upgrade, with random header edits. */
export const requestSpecArb: fc.Arbitrary<RequestSpec> = fc.record({
  method: fc.oneof({ weight: 8, arbitrary: fc.constant("GET") }, { weight: 1, arbitrary: fc.constantFrom("POST", "HEAD", "get") }, { weight: 1, arbitrary: tokenArb }),
  target: fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom("/", "/echo", "/chat?room=a", "/x%00y") },
    { weight: 1, arbitrary: fc.string({ maxLength: 20 }).map((s) => "/" + s) }
  ),
  version: fc.oneof({ weight: 8, arbitrary: fc.constant("HTTP/1.1") }, { weight: 1, arbitrary: fc.constantFrom("HTTP/1.0", "HTTP/2.0", "HTTP/1.10", "HTTP/9.9", "http/1.1") }),
  headers: fc.tuple(
    fc.oneof({ weight: 4, arbitrary: fc.constant(validHeaders()) }, { weight: 1, arbitrary: fc.subarray(validHeaders(), { minLength: 0 }) }),
    fc.array(fc.tuple(fc.oneof(tokenArb, fc.constantFrom("Host", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions", "Upgrade")), fc.string({ maxLength: 40 })), { maxLength: 4 }),
    fc.oneof(
      { weight: 4, arbitrary: fc.constant([] as Array<readonly [string, string]>) },
      { weight: 1, arbitrary: fc.constantFrom<Array<readonly [string, string]>>(
        [["Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"]],
        [["Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=99, x;;"]],
        [["Sec-WebSocket-Version", "8"]],
        [["X-Big", "a".repeat(5000)]]
      ) }
    )
  ).map(([base, extra, special]) => [...base, ...extra, ...special]),
  eol: fc.oneof({ weight: 5, arbitrary: fc.constant("\r\n" as const) }, { weight: 1, arbitrary: fc.constant("\n" as const) }),
  leadingEmptyLines: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) })
})

/** Encode a request head (latin1: one byte per char, as the parser reads it). */
export const requestBytes = (r: RequestSpec): Uint8Array => {
  const text = r.eol.repeat(r.leadingEmptyLines) +
    `${r.method} ${r.target} ${r.version}${r.eol}` +
    r.headers.map(([n, v]) => `${n}: ${v}${r.eol}`).join("") + r.eol
  return Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff)
}

export type RequestStream =
  | { readonly _tag: "Random"; readonly bytes: Uint8Array }
  | { readonly _tag: "Request"; readonly spec: RequestSpec; readonly mutations: ReadonlyArray<Mutation>; readonly tail: Uint8Array }

export const requestStreamArb: fc.Arbitrary<RequestStream> = fc.oneof(
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Random" as const), bytes: fc.uint8Array({ maxLength: 300 }) }) },
  {
    weight: 5,
    arbitrary: fc.record({
      _tag: fc.constant("Request" as const),
      spec: requestSpecArb,
      mutations: fc.oneof(
        { weight: 2, arbitrary: fc.constant([]) },
        { weight: 1, arbitrary: fc.array(mutationArb, { minLength: 1, maxLength: 3 }) }
      ),
      tail: fc.oneof({ weight: 2, arbitrary: fc.constant(new Uint8Array(0)) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 32 }) })
    })
  }
)

export const requestStreamBytes = (s: RequestStream): Uint8Array =>
  s._tag === "Random" ? s.bytes.slice() : concat([mutate(requestBytes(s.spec), s.mutations), s.tail])
