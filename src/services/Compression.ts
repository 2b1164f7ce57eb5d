/**
 * permessage-deflate compression for one connection (RFC 7692 §7.2), on
 * node:zlib raw deflate streams kept per connection for context takeover.
 *
 * @example
 * const program = Effect.gen(function*() {
 *   const params = negotiate(offers)!.params
 *   const c = yield* makeCompressor(params, defaultDeflateOptions)
 *   const wire = yield* c.compress(payload)
 *   const back = yield* c.decompress(wire, 16 * 1024 * 1024)
 * }).pipe(Effect.scoped, Effect.provide(CompressionLimiter.layer(10)))
 */
import * as zlib from "node:zlib"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import type { DeflateOptions, DeflateParams } from "../domain/PerMessageDeflate.ts"
import { protocolError } from "../domain/ProtocolError.ts"
import type { ProtocolError } from "../domain/ProtocolError.ts"

/** One connection's compression, both directions. */
export interface Compressor {
  /**
   * Compress one whole message payload: deflate + Z_SYNC_FLUSH, strip the
   * trailing 00 00 ff ff (RFC 7692 §7.2.1); reset after if
   * serverNoContextTakeover. Empty input → the single byte 0x00.
   */
  readonly compress: (data: Uint8Array) => Effect.Effect<Uint8Array>
  /**
   * Inflate one whole (reassembled) message payload with 00 00 ff ff
   * appended (RFC 7692 §7.2.2). Output is counted while inflating: past
   * `maxSize` bytes the inflater is destroyed at once and the effect fails
   * with MessageTooBig (1009). Corrupt data fails with InvalidCompressedData
   * (1007). Resets after if clientNoContextTakeover. An empty payload is an
   * empty message (the inflater is not touched).
   */
  readonly decompress: (data: Uint8Array, maxSize: number) => Effect.Effect<Uint8Array, ProtocolError>
}

/**
 * Process-wide bound on concurrent zlib work. Many deflate streams working at
 * once fragment native memory badly (the known `ws` problem, which its
 * `concurrencyLimit` addresses); a semaphore caps it.
 */
export class CompressionLimiter extends Context.Service<
  CompressionLimiter,
  { readonly withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R> }
>()("wsreactor/CompressionLimiter") {
  /** `CompressionLimiter.layer(10)`: at most 10 zlib operations at a time. */
  static layer(concurrency: number): Layer.Layer<CompressionLimiter> {
    return Layer.effect(
      CompressionLimiter,
      Effect.map(Semaphore.make(concurrency), (semaphore) =>
        CompressionLimiter.of({ withPermit: (self) => semaphore.withPermit(self) }))
    )
  }
}

// RFC 7692 §7.2.1: the tail a sync flush ends with
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff])
const EMPTY_MESSAGE = Uint8Array.of(0x00)

let live = 0
/** zlib streams currently open in this process (a gauge; tests use it to check finalizers). */
export const liveZlibStreams = (): number => live

const track = <S extends zlib.DeflateRaw | zlib.InflateRaw>(stream: S): S => {
  live++
  stream.once("close", () => live--)
  // an 'error' with no listener would crash the process; each operation listens for its own
  stream.on("error", () => {})
  return stream
}

// exact-size plain Uint8Array: zlib chunks are views into a 16 KiB output
// buffer (and small Buffers share an 8 KiB pool slab) that a queued message must not retain
const concat = (chunks: ReadonlyArray<Uint8Array>, length: number, end = length): Uint8Array => {
  const out = new Uint8Array(end)
  let offset = 0
  for (const chunk of chunks) {
    if (offset >= end) break
    const n = Math.min(chunk.length, end - offset)
    out.set(n === chunk.length ? chunk : chunk.subarray(0, n), offset)
    offset += n
  }
  return out
}

const endsWithTail = (chunks: ReadonlyArray<Uint8Array>): boolean => {
  // walk back over the chunks: the tail may straddle them
  let k = TAIL.length
  for (let c = chunks.length - 1; c >= 0 && k > 0; c--) {
    const chunk = chunks[c]!
    for (let i = chunk.length - 1; i >= 0 && k > 0; i--) {
      if (chunk[i] !== TAIL[--k]) return false
    }
  }
  return k === 0
}

const discard = (stream: zlib.DeflateRaw | zlib.InflateRaw): void => {
  stream.removeAllListeners("data")
  stream.close()
}

type Outcome<A, E> = Effect.Effect<A, E>

/**
 * Feed `input` to `stream`, sync-flush, and collect the output. `onChunk`
 * sees each output chunk and may end the operation early. Interruption or
 * the stream closing mid-operation discard the stream (its state is mid-message).
 */
const runFlush = <A, E>(
  stream: zlib.DeflateRaw | zlib.InflateRaw,
  input: ReadonlyArray<Uint8Array>,
  handlers: {
    readonly onChunk: (chunk: Buffer) => Outcome<A, E> | undefined
    readonly onError: (error: Error) => Outcome<A, E>
    readonly onFlushed: () => Outcome<A, E>
  },
  drop: () => void
): Effect.Effect<A, E> =>
  Effect.callback<A, E>((resume) => {
    let done = false
    const finish = (outcome: Outcome<A, E>) => {
      if (done) return
      done = true
      stream.off("data", onData)
      stream.off("error", onError)
      stream.off("close", onClose)
      resume(outcome)
    }
    const onData = (chunk: Buffer) => {
      const early = handlers.onChunk(chunk)
      if (early !== undefined) finish(early)
    }
    const onError = (error: Error) => finish(handlers.onError(error))
    const onClose = () => finish(Effect.interrupt)
    stream.on("data", onData)
    stream.on("error", onError)
    stream.once("close", onClose)
    for (const chunk of input) stream.write(chunk)
    stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
      if (done) return
      // output still buffered in the readable side is emitted as 'data' by read()
      while (!done && stream.readableLength > 0 && stream.read() !== null) {}
      if (!done) finish(handlers.onFlushed())
    })
    return Effect.sync(() => {
      if (done) return
      done = true
      stream.off("data", onData)
      stream.off("error", onError)
      stream.off("close", onClose)
      drop()
    })
  })

/**
 * Build the compressor of one connection. The zlib streams are created on
 * first use (an idle connection costs no zlib memory) and closed when the
 * scope closes. Operations are serialised per direction (one stream, one
 * message at a time) and each holds a {@link CompressionLimiter} permit
 * while zlib works.
 */
export const makeCompressor = (
  params: DeflateParams,
  options: DeflateOptions
): Effect.Effect<Compressor, never, Scope.Scope | CompressionLimiter> =>
  Effect.gen(function*() {
    const limiter = yield* CompressionLimiter
    const deflateLock = yield* Semaphore.make(1)
    const inflateLock = yield* Semaphore.make(1)
    let closed = false
    let deflater: zlib.DeflateRaw | undefined
    let inflater: zlib.InflateRaw | undefined

    const dropDeflater = () => {
      if (deflater !== undefined) discard(deflater)
      deflater = undefined
    }
    const dropInflater = () => {
      if (inflater !== undefined) discard(inflater)
      inflater = undefined
    }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        dropDeflater()
        dropInflater()
      })
    )

    // after the scope closed the connection is gone; a late call is interrupted
    const guard = <A, E>(self: Effect.Effect<A, E>): Effect.Effect<A, E> =>
      Effect.suspend(() => (closed ? Effect.interrupt : self))

    const compress = (data: Uint8Array): Effect.Effect<Uint8Array> => {
      // an empty stored block; the deflater stays byte-aligned after each sync flush, so skipping zlib is safe
      if (data.length === 0) return Effect.succeed(EMPTY_MESSAGE.slice())
      return deflateLock.withPermit(limiter.withPermit(guard(Effect.suspend(() => {
        const stream = deflater ??= track(zlib.createDeflateRaw({
          level: options.level,
          memLevel: options.memLevel,
          windowBits: params.serverMaxWindowBits
        }))
        const chunks: Array<Buffer> = []
        let length = 0
        return runFlush<Uint8Array, never>(stream, [data], {
          onChunk: (chunk) => {
            chunks.push(chunk)
            length += chunk.length
            return undefined
          },
          // deflate cannot fail on any input: a broken stream is a defect
          onError: (error) => {
            dropDeflater()
            return Effect.die(error)
          },
          onFlushed: () => {
            if (params.serverNoContextTakeover) stream.reset() // RFC 7692 §7.1.1.1
            return Effect.succeed(concat(chunks, length, endsWithTail(chunks) ? length - 4 : length))
          }
        }, dropDeflater)
      }))))
    }

    const decompress = (data: Uint8Array, maxSize: number): Effect.Effect<Uint8Array, ProtocolError> => {
      if (data.length === 0) return Effect.succeed(new Uint8Array(0))
      // undefined: the inflater had ended (see onFlushed) and read none of `data`: once more with a
      // fresh one (which reads any non-empty input, so this retries at most once).
      return Effect.flatMap(inflate(data, maxSize), (out) =>
        out === undefined ? Effect.map(inflate(data, maxSize), (again) => again ?? new Uint8Array(0)) : Effect.succeed(out))
    }

    const inflate = (data: Uint8Array, maxSize: number): Effect.Effect<Uint8Array | undefined, ProtocolError> =>
      inflateLock.withPermit(limiter.withPermit(guard(Effect.suspend(() => {
        const stream = inflater ??= track(zlib.createInflateRaw({ windowBits: params.clientMaxWindowBits }))
        const consumedBefore = stream.bytesWritten
        const chunks: Array<Buffer> = []
        let length = 0
        return runFlush<Uint8Array | undefined, ProtocolError>(stream, [data, TAIL], {
          onChunk: (chunk) => {
            length += chunk.length
            if (length > maxSize) {
              // stop zlib now: the rest of the output is never produced (RFC 6455 §7.4.1, 1009)
              dropInflater()
              return Effect.fail(protocolError("MessageTooBig", `inflated message exceeds ${maxSize} bytes`))
            }
            chunks.push(chunk)
            return undefined
          },
          onError: (error) => {
            dropInflater()
            return Effect.fail(protocolError("InvalidCompressedData", error.message))
          },
          onFlushed: () => {
            // The previous message ended the deflate stream with a final block that used up all
            // its input (an empty stored block completed by the appended tail): nothing told us,
            // and the ended stream read none of this message (found by fuzzing: test/fuzz/found.test.ts).
            if (stream.bytesWritten === consumedBefore) {
              dropInflater()
              return Effect.succeed(undefined)
            }
            const out = concat(chunks, length)
            // the peer ended the deflate stream (BFINAL = 1, RFC 7692 §7.2.3): zlib
            // left input unread, and the next message needs a fresh inflater
            if (stream.bytesWritten - consumedBefore < data.length + TAIL.length) dropInflater()
            else if (params.clientNoContextTakeover) stream.reset() // RFC 7692 §7.1.1.2
            return Effect.succeed(out)
          }
        }, dropInflater)
      }))))

    return { compress, decompress } satisfies Compressor
  })
