/**
 * The fuzz properties of the sans-I/O core: the handshake parser, the frame
 * decoder and the connection protocol (both roles). Each is an arbitrary plus
 * a `check` that throws on a violation, so the same code runs under vitest
 * (bounded, test/fuzz/domain.test.ts), under `npm run fuzz` (long), and when a
 * saved counterexample is replayed (test/fuzz/regressions/).
 *
 * What every property asserts, whatever the bytes and however they are split:
 * - nothing throws;
 * - buffering stays within the configured limit (maxHeaderBytes, maxMessageSize);
 * - a refusal is a typed error: HandshakeError with a status in
 *   {400, 426, 431, 403, 404, 405, 505}, ProtocolError with a close code in
 *   {1002, 1007, 1009} that matches its reason;
 * - after a failure or a close frame, further input is ignored;
 * - the result does not depend on how the bytes were split into chunks.
 */
import { isDeepStrictEqual } from "node:util"
import fc from "fast-check"
import * as FrameDecoder from "../../src/domain/FrameDecoder.ts"
import * as Handshake from "../../src/domain/Handshake.ts"
import { Protocol } from "../../src/domain/Protocol.ts"
import { closeCodeOf, ProtocolError, protocolError } from "../../src/domain/ProtocolError.ts"
import * as CloseCode from "../../src/domain/CloseCode.ts"
import * as zlib from "node:zlib"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Cause from "effect/Cause"
import { CompressionLimiter, makeCompressor } from "../../src/services/Compression.ts"
import { defaultDeflateOptions } from "../../src/domain/PerMessageDeflate.ts"
import {
  cutsArb,
  type FrameStream,
  frameStreamArb,
  type RequestStream,
  requestStreamArb,
  requestStreamBytes,
  split,
  streamBytes
} from "./inputs.ts"

export interface FuzzProperty<T> {
  readonly name: string
  readonly arbitrary: fc.Arbitrary<T>
  /** Throws (an assertion error, or a rejected promise) when the input breaks the property. */
  readonly check: (input: T) => void | Promise<void>
  /** `check` returns a promise (zlib work): run with fc.asyncProperty. */
  readonly async?: boolean
}

/** The fast-check property of a FuzzProperty. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const toProperty = (p: FuzzProperty<any>): fc.IRawProperty<[unknown], boolean> =>
  p.async === true
    ? fc.asyncProperty(p.arbitrary, async (input) => { await p.check(input) })
    : fc.property(p.arbitrary, (input) => { p.check(input) })

/** A violation: the message says which rule, the input is in fast-check's report. */
const fail = (message: string, detail?: unknown): never => {
  throw new Error(detail === undefined ? message : `${message}: ${JSON.stringify(detail, replacer)}`)
}
const replacer = (_key: string, value: unknown) =>
  value instanceof Uint8Array ? Array.from(value) : typeof value === "bigint" ? value.toString() : value

const HTTP_STATUSES = new Set([400, 426, 431, 403, 404, 405, 505])
const CLOSE_CODES = new Set([1002, 1007, 1009])
const fatalUtf8 = new TextDecoder("utf-8", { fatal: true })
const isUtf8 = (bytes: Uint8Array) => {
  try {
    fatalUtf8.decode(bytes)
    return true
  } catch {
    return false
  }
}

const checkProtocolError = (error: unknown): ProtocolError => {
  if (!(error instanceof ProtocolError)) return fail("error is not a ProtocolError", String(error))
  if (!CLOSE_CODES.has(error.closeCode)) fail("close code not in {1002, 1007, 1009}", error.closeCode)
  if (error.closeCode !== closeCodeOf(error.reason)) fail("close code does not match the reason", error.reason)
  return error
}

// ---------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------

export interface HandshakeInput {
  readonly maxHeaderBytes: number
  readonly stream: RequestStream
  readonly cuts: ReadonlyArray<number>
}

type HandshakeOutcome =
  | { readonly _tag: "NeedMore" }
  | { readonly _tag: "Invalid"; readonly status: number; readonly reason: string }
  | { readonly _tag: "Request"; readonly request: Handshake.HttpRequest; readonly rest: Array<number>; readonly upgrade: unknown }

const runHandshake = (max: number, chunks: ReadonlyArray<Uint8Array>): HandshakeOutcome => {
  let parser = Handshake.initialRequestParser({ maxHeaderBytes: max })
  let fed = 0
  for (let i = 0; i < chunks.length; i++) {
    const chunk = chunks[i]!
    fed += chunk.length
    const step = Handshake.stepRequest(parser, chunk)
    if (step._tag === "NeedMore") {
      // Bounded buffering: never more than the limit held, whatever arrives.
      const state = (step.parser as unknown as { state: { consumed: number; pending: number; buffer?: { bytes: Uint8Array } } }).state
      if (state.consumed + state.pending > max) fail("parser holds more than maxHeaderBytes", { max, state: [state.consumed, state.pending] })
      if ((state.buffer?.bytes.length ?? 0) > max) fail("line buffer larger than maxHeaderBytes", { max, size: state.buffer?.bytes.length })
      parser = step.parser
      continue
    }
    if (step._tag === "Invalid") {
      const error = step.error
      if (!(error instanceof Handshake.HandshakeError)) fail("handshake error is not a HandshakeError")
      if (!HTTP_STATUSES.has(error.status)) fail("handshake status not allowed", error.status)
      if (error.status === 431 && fed <= max) fail("431 before maxHeaderBytes were sent", { fed, max })
      const response = Handshake.rejectResponse(error)
      if (!latin1(response).startsWith(`HTTP/1.1 ${error.status} `)) fail("reject response does not carry the status")
      return { _tag: "Invalid", status: error.status, reason: error.reason }
    }
    const rest = [...step.rest, ...chunks.slice(i + 1).flatMap((c) => [...c])]
    if (fed - rest.length > max) fail("a head over maxHeaderBytes was accepted", { fed, rest: rest.length, max })
    const validated = Handshake.validateUpgrade(step.request)
    let upgrade: unknown
    if (validated._tag === "Error") {
      if (!HTTP_STATUSES.has(validated.error.status)) fail("upgrade refused with a status not allowed", validated.error.status)
      Handshake.rejectResponse(validated.error)
      upgrade = { status: validated.error.status, reason: validated.error.reason }
    } else {
      const u = validated.upgrade
      if (!/^[A-Za-z0-9+/]{22}==$/.test(u.key)) fail("accepted a bad Sec-WebSocket-Key", u.key)
      const accept = latin1(Handshake.acceptResponse({ key: u.key }))
      if (!accept.startsWith("HTTP/1.1 101 ")) fail("accept response is not 101")
      upgrade = { key: u.key, host: u.host, protocols: u.protocols, extensions: u.extensions }
    }
    return { _tag: "Request", request: step.request, rest, upgrade }
  }
  return { _tag: "NeedMore" }
}

const latin1 = (bytes: Uint8Array) => Buffer.from(bytes).toString("latin1")

export const handshakeProperty: FuzzProperty<HandshakeInput> = {
  name: "handshake",
  arbitrary: fc.record({
    maxHeaderBytes: fc.oneof({ weight: 3, arbitrary: fc.constant(16384) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 400 }) }),
    stream: requestStreamArb,
    cuts: cutsArb
  }),
  check: (input) => {
    const bytes = requestStreamBytes(input.stream)
    const pieces = runHandshake(input.maxHeaderBytes, split(bytes, input.cuts))
    const whole = runHandshake(input.maxHeaderBytes, [bytes.slice()])
    if (!isDeepStrictEqual(pieces, whole)) fail("outcome depends on the split", { pieces, whole })
  }
}

// ---------------------------------------------------------------------------
// Frame decoder
// ---------------------------------------------------------------------------

export interface DecoderInput {
  readonly role: "server" | "client"
  readonly maxMessageSize: number
  readonly allowRsv1: boolean
  readonly stream: FrameStream
  readonly cuts: ReadonlyArray<number>
}

interface DecoderOutcome {
  readonly events: Array<unknown>
  readonly error: string | undefined
}

// Whatever else is held, a header under 14 bytes waits unparsed and a control frame
// (≤ 125 bytes) may be in progress while a data message is partly assembled.
const decoderBound = (max: number) => max + 125 + 13

const runDecoder = (options: FrameDecoder.DecoderOptions, chunks: ReadonlyArray<Uint8Array>): DecoderOutcome => {
  const decoder = FrameDecoder.make(options)
  const events: Array<unknown> = []
  let error: string | undefined
  let closed = false
  for (const chunk of chunks) {
    const done = error !== undefined || closed
    const result = decoder.feed(chunk)
    if (done && (result.events.length > 0 || result.error !== undefined)) fail("input after the end was decoded")
    for (const e of result.events) {
      if (e._tag === "Message") {
        if (e.data.length > options.maxMessageSize) fail("message over maxMessageSize", e.data.length)
        if (e.compressed && !options.allowRsv1) fail("compressed message without the extension")
        if (!e.binary && !e.compressed && !isUtf8(e.data)) fail("text message is not UTF-8")
        events.push({ _tag: e._tag, binary: e.binary, compressed: e.compressed, data: Array.from(e.data) })
      } else if (e._tag === "Close") {
        if (e.code !== undefined && !CloseCode.isValidOnWire(e.code)) fail("close code not valid on the wire", e.code)
        closed = true
        events.push(e)
      } else {
        if (e.data.length > 125) fail("control payload over 125 bytes")
        events.push({ _tag: e._tag, data: Array.from(e.data) })
      }
    }
    if (result.error !== undefined) {
      error = checkProtocolError(result.error).reason
      if (!decoder.finished) fail("decoder not finished after an error")
    }
    if (decoder.bufferedBytes > decoderBound(options.maxMessageSize)) {
      fail("decoder buffers beyond its bound", { buffered: decoder.bufferedBytes, max: options.maxMessageSize })
    }
    if ((decoder.partial?.length ?? 0) > Math.max(options.maxMessageSize, 125)) fail("partial frame allocated over the limit")
    if ((error !== undefined || closed) && decoder.bufferedBytes !== 0) fail("bytes kept after the end", decoder.bufferedBytes)
  }
  return { events, error }
}

export const decoderProperty: FuzzProperty<DecoderInput> = {
  name: "decoder",
  arbitrary: fc.tuple(fc.constantFrom("server" as const, "client" as const), fc.boolean()).chain(([role, allowRsv1]) =>
    fc.record({
      role: fc.constant(role),
      maxMessageSize: fc.oneof({ weight: 2, arbitrary: fc.constant(16 * 1024 * 1024) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 1200 }) }),
      allowRsv1: fc.constant(allowRsv1),
      stream: frameStreamArb(role, allowRsv1),
      cuts: cutsArb
    })
  ),
  check: (input) => {
    const options = { role: input.role, maxMessageSize: input.maxMessageSize, allowRsv1: input.allowRsv1 }
    const bytes = streamBytes(input.stream)
    // The decoder owns (and unmasks in place) what it is fed: each run gets its own copies.
    const pieces = runDecoder(options, split(bytes, input.cuts))
    const whole = runDecoder(options, [bytes.slice()])
    if (!isDeepStrictEqual(pieces, whole)) fail("outcome depends on the split", { pieces, whole })
  }
}

// ---------------------------------------------------------------------------
// Protocol (both roles)
// ---------------------------------------------------------------------------

/** What the application or the I/O side does between chunks; `at` places it among the chunks. */
export type ProtocolOp =
  | { readonly _tag: "Send"; readonly at: number; readonly binary: boolean; readonly length: number; readonly compressed: boolean }
  | { readonly _tag: "Ping"; readonly at: number; readonly length: number }
  | { readonly _tag: "Close"; readonly at: number; readonly code: number }
  | { readonly _tag: "Fail"; readonly at: number }
  | { readonly _tag: "Release"; readonly at: number }
  | { readonly _tag: "Eof"; readonly at: number }
  | { readonly _tag: "Abort"; readonly at: number }

export interface ProtocolInput {
  readonly role: "server" | "client"
  readonly maxMessageSize: number
  readonly compression: boolean
  readonly holdClose: boolean
  readonly fragmentSize: number
  readonly stream: FrameStream
  readonly cuts: ReadonlyArray<number>
  readonly ops: ReadonlyArray<ProtocolOp>
}

const at = fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true })
const opArb: fc.Arbitrary<ProtocolOp> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ _tag: fc.constant("Send" as const), at, binary: fc.boolean(), length: fc.integer({ min: 0, max: 300 }), compressed: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("Ping" as const), at, length: fc.integer({ min: 0, max: 125 }) }) },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Close" as const), at, code: fc.constantFrom(1000, 1001, 1005, 1011, 3000, 4999) }) },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Fail" as const), at }) },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("Release" as const), at }) },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Eof" as const), at }) },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Abort" as const), at }) }
)

const runProtocol = (input: ProtocolInput): void => {
  let keys = 0
  const protocol = new Protocol({
    role: input.role,
    maxMessageSize: input.maxMessageSize,
    compression: input.compression,
    holdClose: input.holdClose,
    fragmentSize: input.fragmentSize,
    maskKey: () => new Uint8Array([keys++, 0x5a, 0xa5, 0xff])
  })
  // The peer reads everything we send: it must always be a valid stream for it
  // (masked by a client, unmasked by a server, RSV1 only with compression).
  const peer = FrameDecoder.make({ role: input.role === "server" ? "client" : "server", maxMessageSize: 1 << 30, allowRsv1: input.compression })
  // What the peer read in our close frame ("none": no close frame yet). A box: TS does not see the closure assign it.
  const peerClose: { code: number | undefined | "none" } = { code: "none" }
  const peerPongs: Array<Array<number>> = []
  const expectedPongs: Array<Array<number>> = []
  const drain = () => {
    for (const frame of protocol.dataToSend()) {
      if (frame.length === 0) continue
      if (peerClose.code !== "none") fail("bytes sent after our close frame")
      const result = peer.feed(frame.slice())
      if (result.error !== undefined) fail("we sent an invalid stream", result.error.message)
      for (const e of result.events) {
        if (e._tag === "Close") peerClose.code = e.code
        if (e._tag === "Pong") peerPongs.push(Array.from(e.data))
      }
    }
    if (protocol.bufferedBytes !== 0) fail("bufferedBytes not reset by dataToSend")
  }
  const checkState = () => {
    const failure = protocol.failure
    if (failure !== undefined) {
      checkProtocolError(failure)
      if (protocol.state === "Open") fail("still open after a failure")
      if (protocol.closeInfo().code !== failure.closeCode) fail("closeInfo does not carry the failure's code")
    }
    if (protocol.state === "Closed" && protocol.canSend) fail("can send while closed")
  }
  const chunks = split(streamBytes(input.stream), input.cuts)
  const ops = input.ops.map((op) => ({ op, index: Math.floor(op.at * (chunks.length + 1)) }))
  for (let i = 0; i <= chunks.length; i++) {
    for (const { op, index } of ops) {
      if (index !== i) continue
      switch (op._tag) {
        case "Send": {
          const payload = op.binary ? new Uint8Array(op.length).map((_, k) => k * 7) : new Uint8Array(op.length).fill(0x61)
          protocol.sendMessage(op.binary, payload, op.compressed && input.compression)
          break
        }
        case "Ping":
          protocol.sendPing(new Uint8Array(op.length).fill(0x70))
          break
        case "Close":
          protocol.sendClose(op.code, "bye")
          break
        case "Fail": // what the I/O side does when a compressed message does not inflate
          protocol.fail(protocolError("InvalidCompressedData", "fuzz"))
          break
        case "Release":
          protocol.releaseClose()
          break
        case "Eof":
          protocol.receiveEof()
          break
        case "Abort":
          protocol.abort("fuzz")
          break
      }
      checkState()
      drain()
    }
    if (i === chunks.length) break
    // Input is ignored once the connection failed, the peer's close arrived, or it is gone.
    const ignoring = protocol.failure !== undefined || protocol.closeReceived !== undefined || protocol.state === "Closed"
    const before = protocol.bytesReceived
    const answering = protocol.closeSent === undefined
    const events = protocol.receiveData(chunks[i]!)
    if (ignoring && (events.length > 0 || protocol.bytesReceived !== before)) fail("input accepted after the end")
    for (const e of events) {
      if (e._tag === "Message" && !answering) fail("message delivered after our close frame")
      if (e._tag === "Ping" && answering) expectedPongs.push(Array.from(e.data))
    }
    checkState()
    drain()
  }
  if (!isDeepStrictEqual(peerPongs, expectedPongs)) {
    fail("pings not answered with their payloads, in order", { peerPongs, expectedPongs })
  }
  const failure = protocol.failure
  if (failure !== undefined && !protocol.closeHeld && peerClose.code !== failure.closeCode) {
    fail("the close frame sent does not carry the failure's code", { sent: peerClose.code, failure: failure.closeCode })
  }
}

export const protocolProperty: FuzzProperty<ProtocolInput> = {
  name: "protocol",
  arbitrary: fc.tuple(fc.constantFrom("server" as const, "client" as const), fc.boolean()).chain(([role, compression]) =>
    fc.record({
      role: fc.constant(role),
      maxMessageSize: fc.oneof({ weight: 2, arbitrary: fc.constant(16 * 1024 * 1024) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 1200 }) }),
      compression: fc.constant(compression),
      holdClose: fc.boolean(),
      fragmentSize: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 200 })),
      stream: frameStreamArb(role, compression),
      cuts: cutsArb,
      ops: fc.array(opArb, { maxLength: 6 })
    })
  ),
  check: runProtocol
}

// ---------------------------------------------------------------------------
// Inflating (permessage-deflate, RFC 7692 §7.2.2)
// ---------------------------------------------------------------------------

/** One compressed message as a peer might send it. */
export type Deflated =
  | { readonly _tag: "Valid"; readonly data: Uint8Array }
  | { readonly _tag: "Mutated"; readonly data: Uint8Array; readonly at: number; readonly byte: number }
  | { readonly _tag: "Garbage"; readonly bytes: Uint8Array }
  /** Highly compressible: a few hundred bytes that inflate to `size` zeros. */
  | { readonly _tag: "Bomb"; readonly size: number }

export interface InflateInput {
  readonly maxSize: number
  readonly windowBits: number
  readonly noContextTakeover: boolean
  readonly messages: ReadonlyArray<Deflated>
}

// Each message deflated on its own (no reference to earlier ones), sync-flushed, tail stripped.
const deflate = (data: Uint8Array, windowBits: number): Uint8Array => {
  const out = zlib.deflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH, windowBits })
  return out.subarray(0, out.length - 4)
}

const deflatedBytes = (m: Deflated, windowBits: number): Uint8Array => {
  switch (m._tag) {
    case "Valid":
      return deflate(m.data, windowBits)
    case "Mutated": {
      const out = deflate(m.data, windowBits).slice()
      out[Math.floor(m.at * out.length)] = m.byte
      return out
    }
    case "Garbage":
      return m.bytes
    case "Bomb":
      return deflate(new Uint8Array(m.size), windowBits)
  }
}

const runInflate = (input: InflateInput) =>
  Effect.gen(function*() {
    const compressor = yield* makeCompressor({
      serverNoContextTakeover: false,
      clientNoContextTakeover: input.noContextTakeover,
      serverMaxWindowBits: 15,
      clientMaxWindowBits: input.windowBits
    }, defaultDeflateOptions)
    // A bad message that happened to inflate may leave the stream mid-block; after it a
    // valid message can no longer be expected to come back intact.
    let tainted = false
    for (const m of input.messages) {
      const wire = deflatedBytes(m, input.windowBits)
      const exit = yield* Effect.exit(compressor.decompress(wire, input.maxSize))
      if (Exit.isSuccess(exit)) {
        if (exit.value.length > input.maxSize) fail("inflated past maxSize", exit.value.length)
        if (m._tag === "Valid" && !tainted && !isDeepStrictEqual(Buffer.from(exit.value), Buffer.from(m.data))) fail("a valid message did not inflate to itself")
        // After a bad message that happened to inflate, the stream is off its block boundaries: what a bomb
        // "inflates" to then is not the bomb (still bounded by maxSize, checked above).
        if (m._tag === "Bomb" && m.size > input.maxSize && !tainted) fail("a bomb over maxSize inflated")
        if (m._tag !== "Valid") tainted = true
        continue
      }
      const error = Cause.findErrorOption(exit.cause)
      if (error._tag === "None") fail("decompress died or was interrupted", Cause.pretty(exit.cause))
      else {
        checkProtocolError(error.value)
        if (m._tag === "Valid" && !tainted && m.data.length <= input.maxSize) fail("a valid message was refused", error.value.message)
      }
    }
  }).pipe(Effect.scoped, Effect.provide(CompressionLimiter.layer(2)))

export const inflateProperty: FuzzProperty<InflateInput> = {
  name: "inflate",
  async: true,
  arbitrary: fc.record({
    maxSize: fc.oneof(fc.constant(16 * 1024 * 1024), fc.integer({ min: 1, max: 70_000 })),
    windowBits: fc.constantFrom(9, 12, 15),
    noContextTakeover: fc.boolean(),
    messages: fc.array(
      fc.oneof(
        { weight: 3, arbitrary: fc.record({ _tag: fc.constant("Valid" as const), data: fc.uint8Array({ minLength: 1, maxLength: 200 }) }) },
        {
          weight: 2,
          arbitrary: fc.record({
            _tag: fc.constant("Mutated" as const),
            data: fc.uint8Array({ minLength: 1, maxLength: 200 }),
            at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
            byte: fc.integer({ min: 0, max: 255 })
          })
        },
        { weight: 2, arbitrary: fc.record({ _tag: fc.constant("Garbage" as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 100 }) }) },
        { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Bomb" as const), size: fc.integer({ min: 1, max: 1 << 20 }) }) }
      ),
      { minLength: 1, maxLength: 5 }
    )
  }),
  check: (input) => Effect.runPromise(runInflate(input))
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const properties: ReadonlyArray<FuzzProperty<any>> = [handshakeProperty, decoderProperty, protocolProperty, inflateProperty]
