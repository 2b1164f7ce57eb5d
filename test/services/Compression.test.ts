import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as zlib from "node:zlib"
import { defaultDeflateOptions } from "../../src/domain/PerMessageDeflate.ts"
import type { DeflateOptions, DeflateParams } from "../../src/domain/PerMessageDeflate.ts"
import type { ProtocolError } from "../../src/domain/ProtocolError.ts"
import { CompressionLimiter, liveZlibStreams, makeCompressor } from "../../src/services/Compression.ts"

const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff])
const MiB = 1024 * 1024

const takeover: DeflateParams = {
  serverNoContextTakeover: false,
  clientNoContextTakeover: false,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: 15
}
const noTakeover: DeflateParams = { ...takeover, serverNoContextTakeover: true, clientNoContextTakeover: true }

const limiter = CompressionLimiter.layer(10)
const compressor = (params: DeflateParams, options: Partial<DeflateOptions> = {}) =>
  makeCompressor(params, { ...defaultDeflateOptions, ...options })

const text = (i: number) =>
  new TextEncoder().encode(
    JSON.stringify({ type: "update", seq: i, user: `user-${i % 7}`, items: Array.from({ length: 20 + (i % 13) }, (_, k) => ({ k, v: (k * i) % 97 })) })
  )
const random = (n: number, seed: number) => {
  const out = new Uint8Array(n)
  let x = seed * 2654435761 >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}
const message = (i: number): Uint8Array => (i % 10 === 3 ? new Uint8Array(0) : i % 10 === 7 ? random(300 + i, i) : text(i))

/** An independent peer: a plain zlib inflate stream kept across messages (context takeover). */
const peerInflater = (windowBits = 15) => {
  const stream = zlib.createInflateRaw({ windowBits })
  return (payload: Uint8Array) =>
    Effect.promise(() =>
      new Promise<Buffer>((resolve, reject) => {
        const out: Array<Buffer> = []
        const onData = (c: Buffer) => out.push(c)
        stream.on("data", onData)
        stream.once("error", reject)
        stream.write(payload)
        stream.write(TAIL)
        stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
          stream.off("data", onData)
          stream.off("error", reject)
          resolve(Buffer.concat(out))
        })
      })
    )
}

/** An independent peer deflater (context takeover), producing RFC 7692 §7.2.1 payloads. */
const peerDeflater = (windowBits = 15) => {
  const stream = zlib.createDeflateRaw({ windowBits })
  return (payload: Uint8Array) =>
    Effect.promise(() =>
      new Promise<Buffer>((resolve) => {
        const out: Array<Buffer> = []
        const onData = (c: Buffer) => out.push(c)
        stream.on("data", onData)
        stream.write(payload)
        stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
          stream.off("data", onData)
          const all = Buffer.concat(out)
          resolve(all.subarray(0, all.length - 4))
        })
      })
    )
}

/** A fresh peer inflater for one payload (RFC 7692 §7.2.2, no final block: finish with a sync flush). */
const inflateFresh = (payload: Uint8Array): Buffer =>
  zlib.inflateRawSync(Buffer.concat([payload, TAIL]), { finishFlush: zlib.constants.Z_SYNC_FLUSH })

const nextTick = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

const expectProtocolError = (exit: Exit.Exit<unknown, ProtocolError>, reason: string, closeCode: number) => {
  expect(Exit.isFailure(exit)).toBe(true)
  if (Exit.isFailure(exit)) {
    const error = exit.cause.reasons.find((r) => r._tag === "Fail")
    expect(error?._tag).toBe("Fail")
    if (error?._tag === "Fail") {
      expect(error.error.reason).toBe(reason)
      expect(error.error.closeCode).toBe(closeCode)
    }
  }
}

describe("Compressor round-trips", () => {
  it.effect("context takeover: 50 messages, decoded by our inflater and by a plain zlib peer", () =>
    Effect.gen(function*() {
      const c = yield* compressor(takeover)
      const peer = peerInflater()
      for (let i = 0; i < 50; i++) {
        const m = message(i)
        const wire = yield* c.compress(m)
        expect(Buffer.from(wire.subarray(-4)).equals(TAIL)).toBe(false) // §7.2.1: tail stripped
        expect(yield* c.decompress(wire, 1 * MiB)).toEqual(new Uint8Array(m))
        expect(new Uint8Array(yield* peer(wire))).toEqual(new Uint8Array(m))
      }
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("context takeover: a repeated message compresses much smaller the second time", () =>
    Effect.gen(function*() {
      const c = yield* compressor(takeover)
      const m = new TextEncoder().encode(Array.from({ length: 100 }, (_, i) => `line ${i * 7919 % 1000}: ${i * 31}`).join("\n"))
      const first = yield* c.compress(m)
      const second = yield* c.compress(m)
      expect(second.length).toBeLessThan(first.length / 10)
      // the second payload only decodes with the first one's context
      expect(() => inflateFresh(second)).toThrow(/distance too far back/)
      const peer = peerInflater()
      yield* peer(first)
      expect(new Uint8Array(yield* peer(second))).toEqual(m)
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("no context takeover: every payload decodes with a fresh inflateRawSync, sizes repeat", () =>
    Effect.gen(function*() {
      const c = yield* compressor(noTakeover)
      const m = text(42)
      const sizes: Array<number> = []
      for (let i = 0; i < 50; i++) {
        const mi = i % 2 === 0 ? m : message(i)
        const wire = yield* c.compress(mi)
        if (i % 2 === 0) sizes.push(wire.length)
        expect(new Uint8Array(inflateFresh(wire))).toEqual(new Uint8Array(mi))
        expect(yield* c.decompress(wire, MiB)).toEqual(new Uint8Array(mi))
      }
      expect(new Set(sizes).size).toBe(1)
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("client no context takeover: the inflater is reset after each message", () =>
    Effect.gen(function*() {
      const c = yield* compressor({ ...takeover, clientNoContextTakeover: true })
      const m = text(1)
      const fresh = () => zlib.deflateRawSync(m, { finishFlush: zlib.constants.Z_SYNC_FLUSH }).subarray(0, -4)
      expect(yield* c.decompress(fresh(), MiB)).toEqual(m)
      expect(yield* c.decompress(fresh(), MiB)).toEqual(m)
      // a payload that needs the previous context no longer decodes
      const peer = peerDeflater()
      yield* c.decompress(yield* peer(m), MiB)
      const exit = yield* Effect.exit(c.decompress(yield* peer(m), MiB))
      expectProtocolError(exit, "InvalidCompressedData", 1007)
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("messages from a peer deflater with context takeover (50 messages, window 9 and 15)", () =>
    Effect.gen(function*() {
      for (const bits of [9, 15]) {
        const c = yield* compressor({ ...takeover, clientMaxWindowBits: bits })
        const peer = peerDeflater(bits)
        for (let i = 0; i < 50; i++) {
          const m = message(i)
          expect(yield* c.decompress(yield* peer(m), MiB)).toEqual(new Uint8Array(m))
        }
      }
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("server window 9: output decodes with a 2^9 window", () =>
    Effect.gen(function*() {
      const c = yield* compressor({ ...takeover, serverMaxWindowBits: 9 })
      const peer = peerInflater(9)
      for (let i = 0; i < 20; i++) {
        const m = message(i)
        expect(new Uint8Array(yield* peer(yield* c.compress(m)))).toEqual(new Uint8Array(m))
      }
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("level 0..9 and memLevel 1..9 all round-trip", () =>
    Effect.gen(function*() {
      for (const level of [0, 1, 6, 9]) {
        for (const memLevel of [1, 8, 9]) {
          const c = yield* compressor(takeover, { level, memLevel })
          const m = text(level * 10 + memLevel)
          expect(yield* c.decompress(yield* c.compress(m), MiB)).toEqual(m)
        }
      }
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("empty message → 0x00 and back, with and without takeover", () =>
    Effect.gen(function*() {
      for (const params of [takeover, noTakeover]) {
        const c = yield* compressor(params)
        const peer = peerInflater()
        yield* peer(yield* c.compress(text(1)))
        const wire = yield* c.compress(new Uint8Array(0))
        expect(wire).toEqual(Uint8Array.of(0x00))
        expect((yield* peer(wire)).length).toBe(0)
        expect(yield* c.decompress(wire, MiB)).toEqual(new Uint8Array(0))
        expect(yield* c.decompress(new Uint8Array(0), MiB)).toEqual(new Uint8Array(0))
        // the streams are still in step afterwards
        const m = text(2)
        expect(new Uint8Array(yield* peer(yield* c.compress(m)))).toEqual(m)
      }
      // a peer's empty message is 00 too
      const peer = peerDeflater()
      expect(yield* peer(new Uint8Array(0))).toEqual(Buffer.from([0x00]))
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("a peer message ending with BFINAL = 1 (§7.2.3) is decoded, and the next one too", () =>
    Effect.gen(function*() {
      const c = yield* compressor(takeover)
      const m1 = text(1)
      expect(yield* c.decompress(zlib.deflateRawSync(m1), MiB)).toEqual(m1) // Z_FINISH: final block
      const m2 = text(2)
      const peer = peerDeflater() // a new peer context after the final block
      expect(yield* c.decompress(yield* peer(m2), MiB)).toEqual(m2)
      expect(yield* c.decompress(yield* peer(m2), MiB)).toEqual(m2)
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("operations on one compressor are serialised (concurrent calls keep the stream consistent)", () =>
    Effect.gen(function*() {
      const c = yield* compressor(takeover)
      const messages = Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? random(20_000, i) : text(i)))
      const wires = yield* Effect.all(messages.map((m) => c.compress(m)), { concurrency: "unbounded" })
      // every payload is a whole message: decoding in submission order restores them
      const peer = peerInflater()
      for (let i = 0; i < messages.length; i++) {
        expect(new Uint8Array(yield* peer(wires[i]!))).toEqual(messages[i])
      }
      const back = yield* Effect.all(wires.map((w) => c.decompress(w, MiB)), { concurrency: "unbounded" })
      expect(back).toEqual(messages)
    }).pipe(Effect.scoped, Effect.provide(limiter)))
})

describe("Compressor failures", () => {
  it.effect("corrupt data → InvalidCompressedData (1007); the next message gets a fresh inflater", () =>
    Effect.gen(function*() {
      const c = yield* compressor(noTakeover)
      const exit = yield* Effect.exit(c.decompress(Uint8Array.of(0xff, 0xff, 0xff, 0xff), MiB)) // BTYPE = 11
      expectProtocolError(exit, "InvalidCompressedData", 1007)
      const bad2 = yield* Effect.exit(c.decompress(Uint8Array.of(0x04, 0x00, 0x01, 0x02), MiB))
      expectProtocolError(bad2, "InvalidCompressedData", 1007)
      const m = text(3)
      expect(yield* c.decompress(yield* c.compress(m), MiB)).toEqual(m)
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("MessageTooBig (1009) at maxSize + 1, not at maxSize", () =>
    Effect.gen(function*() {
      const c = yield* compressor(noTakeover)
      const m = new Uint8Array(100_000).fill(7)
      const wire = yield* c.compress(m)
      expect(wire.length).toBeLessThan(1024)
      expect((yield* c.decompress(wire, m.length)).length).toBe(m.length)
      expectProtocolError(yield* Effect.exit(c.decompress(wire, m.length - 1)), "MessageTooBig", 1009)
      expectProtocolError(yield* Effect.exit(c.decompress(wire, 0)), "MessageTooBig", 1009)
      // after the failure the compressor still works (a fresh inflater)
      expect((yield* c.decompress(wire, m.length)).length).toBe(m.length)
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.live("decompression bomb: 256 MiB of zeros in ~250 KiB stops at 1 MiB without allocating it", () =>
    Effect.gen(function*() {
      // build the bomb with a stream, never holding the 256 MiB
      const bomb = yield* Effect.promise(() =>
        new Promise<Buffer>((resolve) => {
          const d = zlib.createDeflateRaw({ level: 9, strategy: zlib.constants.Z_RLE })
          const out: Array<Buffer> = []
          d.on("data", (chunk: Buffer) => out.push(chunk))
          const zeros = Buffer.alloc(MiB)
          for (let i = 0; i < 256; i++) d.write(zeros)
          d.flush(zlib.constants.Z_SYNC_FLUSH, () => {
            d.close()
            const all = Buffer.concat(out)
            resolve(all.subarray(0, all.length - 4))
          })
        })
      )
      expect(bomb.length).toBeLessThan(300 * 1024)
      // it really is 256 MiB (counted, not kept)
      const inflated = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const inf = zlib.createInflateRaw({ chunkSize: MiB })
          let n = 0
          inf.on("data", (chunk: Buffer) => (n += chunk.length))
          inf.write(bomb)
          inf.write(TAIL)
          inf.flush(zlib.constants.Z_SYNC_FLUSH, () => {
            inf.close()
            resolve(n)
          })
        })
      )
      expect(inflated).toBe(256 * MiB)

      const c = yield* compressor(takeover)
      const before = process.memoryUsage()
      let peakRss = before.rss
      let peakArrayBuffers = before.arrayBuffers
      const sample = () => {
        const now = process.memoryUsage()
        peakRss = Math.max(peakRss, now.rss)
        peakArrayBuffers = Math.max(peakArrayBuffers, now.arrayBuffers)
      }
      const timer = setInterval(sample, 1)
      const exit = yield* Effect.exit(c.decompress(bomb, MiB))
      sample()
      yield* Effect.sleep(20) // let an inflate that did not stop show up in the samples
      sample()
      clearInterval(timer)
      expectProtocolError(exit, "MessageTooBig", 1009)
      expect(peakArrayBuffers - before.arrayBuffers).toBeLessThan(64 * MiB)
      expect(peakRss - before.rss).toBeLessThan(64 * MiB)
    }).pipe(Effect.scoped, Effect.provide(limiter)), 30_000)
})

describe("Compressor resources", () => {
  it.effect("streams are created lazily and closed by the scope's finalizer", () =>
    Effect.gen(function*() {
      const base = liveZlibStreams()
      const scope = yield* Scope.make()
      const c = yield* compressor(takeover).pipe(Scope.provide(scope))
      expect(liveZlibStreams()).toBe(base) // idle: no zlib memory
      const wire = yield* c.compress(text(1))
      expect(liveZlibStreams()).toBe(base + 1)
      yield* c.decompress(wire, MiB)
      expect(liveZlibStreams()).toBe(base + 2)
      yield* Scope.close(scope, Exit.void)
      yield* nextTick // 'close' is emitted on the next tick
      expect(liveZlibStreams()).toBe(base)
      // late calls after the connection ended are interrupted, and open nothing
      const late = yield* Effect.exit(c.compress(text(3)))
      expect(Exit.hasInterrupts(late)).toBe(true)
      expect(liveZlibStreams()).toBe(base)
    }).pipe(Effect.provide(limiter)))

  it.effect("interrupting a compress drops the stream; the next payload decodes on its own", () =>
    Effect.gen(function*() {
      const base = liveZlibStreams()
      const c = yield* compressor(takeover)
      const m = text(2)
      yield* c.compress(m) // the context now holds m
      const fiber = yield* Effect.forkChild(c.compress(random(8 * MiB, 5)), { startImmediately: true })
      yield* Fiber.interrupt(fiber)
      expect(Exit.hasInterrupts(yield* Fiber.await(fiber))).toBe(true)
      yield* nextTick
      expect(liveZlibStreams()).toBe(base) // the deflater was mid-message: dropped
      const wire = yield* c.compress(m)
      // a fresh deflater never refers to earlier messages, so any peer context decodes it
      expect(new Uint8Array(inflateFresh(wire))).toEqual(m)
      expect(liveZlibStreams()).toBe(base + 1)
    }).pipe(Effect.scoped, Effect.provide(limiter)))

  it.effect("the limiter bounds concurrent zlib work across compressors", () =>
    Effect.gen(function*() {
      const semaphore = yield* Semaphore.make(2)
      let inFlight = 0
      let peak = 0
      const counting = Layer.succeed(CompressionLimiter, CompressionLimiter.of({
        withPermit: (self) =>
          semaphore.withPermit(
            Effect.suspend(() => {
              inFlight++
              peak = Math.max(peak, inFlight)
              return self
            }).pipe(Effect.ensuring(Effect.sync(() => inFlight--)))
          )
      }))
      yield* Effect.gen(function*() {
        const cs = yield* Effect.all(Array.from({ length: 8 }, () => compressor(takeover)))
        yield* Effect.all(cs.map((c, i) => c.compress(random(200_000, i))), { concurrency: "unbounded" })
      }).pipe(Effect.scoped, Effect.provide(counting))
      expect(peak).toBe(2)
    }))

  it.effect("CompressionLimiter.layer(1) still completes concurrent work", () =>
    Effect.gen(function*() {
      const cs = yield* Effect.all(Array.from({ length: 4 }, () => compressor(takeover)))
      const out = yield* Effect.all(cs.map((c) => c.compress(text(5)).pipe(Effect.flatMap((w) => c.decompress(w, MiB)))), {
        concurrency: "unbounded"
      })
      for (const m of out) expect(m).toEqual(text(5))
    }).pipe(Effect.scoped, Effect.provide(CompressionLimiter.layer(1))))
})
