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
 * A connection's place in the {@link CompressionLimiter}'s round-robin: every
 * zlib slice of that connection (both directions) takes its turn through it.
 */
export interface Lane {
  /**
   * Run `self` while holding one of the limiter's permits, in this lane's turn.
   * `first` (default true): the first slice of a message; false for the later
   * slices of a large one, which wait behind other connections' first slices.
   */
  readonly withTurn: <A, E, R>(self: Effect.Effect<A, E, R>, first?: boolean) => Effect.Effect<A, E, R>
}

/**
 * Process-wide bound on concurrent zlib work. Many deflate streams working at
 * once fragment native memory badly (the known `ws` problem, which its
 * `concurrencyLimit` addresses), and more jobs than libuv threads only queue
 * in libuv, so a bound is needed; a plain semaphore in front of it was unfair
 * (issue 10, finding 4): a few connections flooding large compressed messages
 * held every permit and everyone's compressed latency rose from ~1 ms to
 * ~150 ms. {@link FairScheduler} (what {@link CompressionLimiter.layer} builds)
 * grants permits per connection, round-robin, one slice at a time.
 *
 * `withPermit` is the plain form (one shared lane); `lane`, when present, gives
 * each compressor its own lane. `onZlibState`, when present, hears each
 * compressor take its first zlib stream and give its last one back (metrics).
 */
export class CompressionLimiter extends Context.Service<
  CompressionLimiter,
  {
    readonly withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
    readonly lane?: (() => Lane) | undefined
    readonly onZlibState?: ((held: boolean) => void) | undefined
  }
>()("wsreactor/CompressionLimiter") {
  /** `CompressionLimiter.layer(4)`: at most 4 zlib slices at a time, shared fairly between connections. */
  static layer(concurrency: number, onZlibState?: (held: boolean) => void): Layer.Layer<CompressionLimiter> {
    return Layer.sync(CompressionLimiter, () => {
      const scheduler = new FairScheduler(concurrency)
      const shared = scheduler.lane()
      return CompressionLimiter.of({
        withPermit: (self) => shared.withTurn(self),
        lane: () => scheduler.lane(),
        onZlibState
      })
    })
  }
}

/**
 * The `maxCompressingConnections` cap: a slot per connection that agreed
 * permessage-deflate, held for the connection's life. No slot: the server
 * declines the offer (RFC 7692 §5) and the connection runs uncompressed.
 */
export class CompressingSlots {
  private readonly max: number
  private readonly onDeclined: (() => void) | undefined
  private taken = 0

  /** `max` 0: no cap. `onDeclined`: told of each connection refused a slot (metrics). */
  constructor(max: number, onDeclined?: () => void) {
    this.max = max
    this.onDeclined = onDeclined
  }

  /** Connections holding a slot now. */
  get active(): number {
    return this.taken
  }

  /** A slot for the current scope (given back when it closes), or false when full. */
  get reserve(): Effect.Effect<boolean, never, Scope.Scope> {
    return Effect.acquireRelease(
      Effect.sync(() => {
        if (this.max > 0 && this.taken >= this.max) {
          this.onDeclined?.()
          return false
        }
        this.taken++
        return true
      }),
      (got) => got ? Effect.sync(() => void this.taken--) : Effect.void
    )
  }
}

interface Waiter {
  readonly grant: () => void
  /** The first slice of a message (served before the slices of messages already under way). */
  readonly fresh: boolean
}

interface LaneState {
  /** Turns waiting in this lane, FIFO (at most one per direction: each direction is serialised). */
  readonly waiters: Array<Waiter>
  holding: boolean
  queued: boolean
}

/** A ring of lanes with an index head (no Array#shift on a long ring). */
class Ring {
  private items: Array<LaneState | undefined> = []
  private head = 0
  get size(): number {
    return this.items.length - this.head
  }
  push(state: LaneState): void {
    this.items.push(state)
  }
  shift(): LaneState | undefined {
    if (this.head === this.items.length) return undefined
    const state = this.items[this.head]
    this.items[this.head++] = undefined
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return state
  }
}

/** Fresh turns served in a row before one continuing turn is let through (no starvation of large messages). */
const FRESH_BURST = 8

/**
 * `permits` turns at a time; each lane (one connection) holds at most one, its
 * turns are served FIFO, and lanes are served round-robin. A long message
 * takes one turn per slice ({@link SLICE_BYTES} of input) and queues again at
 * the back. Two rings: lanes whose next turn starts a message go first (a
 * small message is usually one turn), lanes continuing a large message after
 * them, with one continuing turn at least every {@link FRESH_BURST} turns.
 * So a connection's small message waits for about one slice per permit,
 * however many connections are flooding large ones, and a large message still
 * progresses at its fair share.
 */
export class FairScheduler {
  private readonly permits: number
  private running = 0
  private readonly fresh = new Ring()
  private readonly continuing = new Ring()
  private freshInARow = 0

  constructor(permits: number) {
    if (!(Number.isInteger(permits) && permits >= 1)) throw new RangeError(`permits ${permits} < 1`)
    this.permits = permits
  }

  /** Slices running now, and lanes waiting for a turn (a gauge for tests and metrics). */
  stats(): { readonly running: number; readonly waitingLanes: number } {
    return { running: this.running, waitingLanes: this.fresh.size + this.continuing.size }
  }

  lane(): Lane {
    const state: LaneState = { waiters: [], holding: false, queued: false }
    const acquire = (fresh: boolean) =>
      Effect.callback<void>((resume) => {
        let granted = false
        const waiter: Waiter = {
          fresh,
          grant: () => {
            granted = true
            resume(Effect.void)
          }
        }
        state.waiters.push(waiter)
        this.enqueue(state)
        this.pump()
        // interrupted while waiting: leave the queue; granted but not yet resumed: give the turn back
        return Effect.sync(() => {
          if (granted) return this.release(state)
          const i = state.waiters.indexOf(waiter)
          if (i >= 0) state.waiters.splice(i, 1)
        })
      })
    const release = Effect.sync(() => this.release(state))
    return {
      withTurn: (self, first = true) =>
        Effect.uninterruptibleMask((restore) => Effect.andThen(restore(acquire(first)), Effect.ensuring(restore(self), release)))
    }
  }

  private enqueue(state: LaneState): void {
    if (state.holding || state.queued || state.waiters.length === 0) return
    state.queued = true
    ;(state.waiters[0]!.fresh ? this.fresh : this.continuing).push(state)
  }

  private release(state: LaneState): void {
    state.holding = false
    this.running--
    this.enqueue(state) // its next turn goes to the back of a ring
    this.pump()
  }

  private pump(): void {
    while (this.running < this.permits) {
      const useContinuing = this.continuing.size > 0 && (this.fresh.size === 0 || this.freshInARow >= FRESH_BURST)
      const state = useContinuing ? this.continuing.shift() : this.fresh.shift()
      if (state === undefined) return
      this.freshInARow = useContinuing ? 0 : this.freshInARow + 1
      state.queued = false
      const waiter = state.waiters.shift()
      if (waiter === undefined) continue // its waiters were interrupted
      state.holding = true
      this.running++
      waiter.grant()
    }
  }
}

/**
 * Input bytes fed to zlib per turn. A 32 KiB slice is ~0.1-0.3 ms of zlib at
 * level 1 (deflate; a few ms at level 9) and less for inflate: the most another connection's
 * message waits per busy connection ahead of it.
 */
export const SLICE_BYTES = 32 * 1024

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

const NEXT: unique symbol = Symbol("next slice")

/** `input` cut into turns of at most {@link SLICE_BYTES} (views, no copies); the last turn also flushes. */
const sliced = (input: ReadonlyArray<Uint8Array>): Array<Array<Uint8Array>> => {
  const turns: Array<Array<Uint8Array>> = [[]]
  let room = SLICE_BYTES
  for (const chunk of input) {
    let offset = 0
    while (offset < chunk.length) {
      if (room === 0) {
        turns.push([])
        room = SLICE_BYTES
      }
      const n = Math.min(room, chunk.length - offset)
      turns[turns.length - 1]!.push(n === chunk.length ? chunk : chunk.subarray(offset, offset + n))
      offset += n
      room -= n
    }
  }
  return turns
}

/**
 * Feed `input` to `stream`, sync-flush, and collect the output, one
 * {@link SLICE_BYTES} slice per `turn` (the permit is given back between
 * slices, so other connections' messages interleave with a large one).
 * `onChunk` sees each output chunk and may end the operation early.
 * Interruption or the stream closing mid-operation discard the stream (its
 * state is mid-message).
 */
const runFlush = <A, E>(
  stream: zlib.DeflateRaw | zlib.InflateRaw,
  input: ReadonlyArray<Uint8Array>,
  handlers: {
    readonly onChunk: (chunk: Buffer) => Outcome<A, E> | undefined
    readonly onError: (error: Error) => Outcome<A, E>
    readonly onFlushed: () => Outcome<A, E>
  },
  drop: () => void,
  turn: (self: Effect.Effect<A | typeof NEXT, E>, first: boolean) => Effect.Effect<A | typeof NEXT, E>
): Effect.Effect<A, E> =>
  Effect.suspend(() => {
    const turns = sliced(input)
    let outcome: Outcome<A, E> | undefined
    let wake: ((outcome: Outcome<A, E>) => void) | undefined
    const detach = () => {
      stream.off("data", onData)
      stream.off("error", onError)
      stream.off("close", onClose)
    }
    const settle = (result: Outcome<A, E>) => {
      if (outcome !== undefined) return
      outcome = result
      detach()
      const w = wake
      wake = undefined
      w?.(result)
    }
    const onData = (chunk: Buffer) => {
      const early = handlers.onChunk(chunk)
      if (early !== undefined) settle(early)
    }
    const onError = (error: Error) => settle(handlers.onError(error))
    const onClose = () => settle(Effect.interrupt)
    stream.on("data", onData)
    stream.on("error", onError)
    stream.once("close", onClose)

    const step = (i: number): Effect.Effect<A | typeof NEXT, E> =>
      Effect.callback<A | typeof NEXT, E>((resume) => {
        if (outcome !== undefined) return resume(outcome)
        wake = resume
        const chunks = turns[i]!
        if (i < turns.length - 1) {
          // Z_NO_FLUSH: the callback fires once zlib consumed the slice
          for (let k = 0; k < chunks.length - 1; k++) stream.write(chunks[k]!)
          stream.write(chunks[chunks.length - 1]!, () => {
            if (outcome !== undefined || wake !== resume) return
            wake = undefined
            resume(Effect.succeed(NEXT))
          })
          return
        }
        for (const chunk of chunks) if (chunk.length > 0) stream.write(chunk)
        stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
          if (outcome !== undefined) return
          // output still buffered in the readable side is emitted as 'data' by read()
          while (outcome === undefined && stream.readableLength > 0 && stream.read() !== null) {}
          settle(handlers.onFlushed())
        })
      })
    const loop = (i: number): Effect.Effect<A, E> =>
      Effect.flatMap(turn(step(i), i === 0), (r) => (r === NEXT ? loop(i + 1) : Effect.succeed(r as A)))
    return Effect.onExit(loop(0), () =>
      Effect.sync(() => {
        if (outcome !== undefined) return
        // interrupted mid-message (waiting for a turn or inside one)
        outcome = Effect.interrupt
        wake = undefined
        detach()
        drop()
      }))
  })

/**
 * Build the compressor of one connection. The zlib streams are created on
 * first use (an idle connection costs no zlib memory), released again after
 * `options.idleReleaseMs` without a compressed message where the RFC allows
 * it (see `releaseIdle`), and closed when the scope closes. Operations are
 * serialised per direction (one stream, one message at a time) and take their
 * turns, slice by slice, in this connection's {@link Lane} of the
 * {@link CompressionLimiter}.
 */
export const makeCompressor = (
  params: DeflateParams,
  options: DeflateOptions
): Effect.Effect<Compressor, never, Scope.Scope | CompressionLimiter> =>
  Effect.gen(function*() {
    const limiter = yield* CompressionLimiter
    const lane = limiter.lane?.()
    const turn = <A, E>(self: Effect.Effect<A, E>, first: boolean): Effect.Effect<A, E> =>
      lane !== undefined ? lane.withTurn(self, first) : limiter.withPermit(self)
    const deflateLock = yield* Semaphore.make(1)
    const inflateLock = yield* Semaphore.make(1)
    let closed = false
    let deflater: zlib.DeflateRaw | undefined
    let inflater: zlib.InflateRaw | undefined
    // Does this connection hold zlib state (either stream)? Reported on each change, for metrics.
    let holding = false
    const onZlibState = limiter.onZlibState
    const holds = () => {
      const now = deflater !== undefined || inflater !== undefined
      if (now === holding) return
      holding = now
      onZlibState?.(now)
    }
    let busy = 0
    let lastUsed = 0
    let timer: ReturnType<typeof setTimeout> | undefined

    const dropDeflater = () => {
      if (deflater === undefined) return
      discard(deflater)
      deflater = undefined
      holds()
    }
    const dropInflater = () => {
      if (inflater === undefined) return
      discard(inflater)
      inflater = undefined
      holds()
    }

    // Idle release. The deflater may always go: context takeover lets the
    // sender refer to earlier messages but does not oblige it to (RFC 7692
    // §7.1.1.1, §7.2.3), and a fresh raw deflater's blocks refer to nothing
    // before them, so the peer's kept window still decodes them (the previous
    // message ended on a sync flush, at a block boundary). The inflater holds
    // the window the client's next message may refer to: it may go only when
    // client_no_context_takeover was agreed (RFC 7692 §7.1.1.2, the client
    // resets after each message anyway).
    const releaseIdle = () => {
      timer = undefined
      if (closed || (deflater === undefined && inflater === undefined)) return
      const idleFor = Date.now() - lastUsed
      if (busy > 0 || idleFor < options.idleReleaseMs) {
        timer = setTimeout(releaseIdle, Math.max(options.idleReleaseMs - idleFor, 1))
        timer.unref?.()
        return
      }
      dropDeflater()
      if (params.clientNoContextTakeover) dropInflater()
    }
    const using = <A, E>(self: Effect.Effect<A, E>): Effect.Effect<A, E> =>
      options.idleReleaseMs === 0 ? self : Effect.suspend(() => {
        busy++
        return Effect.ensuring(self, Effect.sync(() => {
          busy--
          lastUsed = Date.now()
          if (timer === undefined && !closed) {
            timer = setTimeout(releaseIdle, options.idleReleaseMs)
            timer.unref?.()
          }
        }))
      })

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        if (timer !== undefined) clearTimeout(timer)
        timer = undefined
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
      return deflateLock.withPermit(using(guard(Effect.suspend(() => {
        if (deflater === undefined) {
          deflater = track(zlib.createDeflateRaw({
            level: options.level,
            memLevel: options.memLevel,
            windowBits: params.serverMaxWindowBits
          }))
          holds()
        }
        const stream = deflater
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
        }, dropDeflater, turn)
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
      inflateLock.withPermit(using(guard(Effect.suspend(() => {
        if (inflater === undefined) {
          inflater = track(zlib.createInflateRaw({ windowBits: params.clientMaxWindowBits }))
          holds()
        }
        const stream = inflater
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
        }, dropInflater, turn)
      }))))

    return { compress, decompress } satisfies Compressor
  })
