/**
 * A `Transport.Incoming` over any `effect/socket` `Socket`, so the reactor
 * runs over an Effect socket (a Node socket through `NodeSocket`, a socket
 * built with `Socket.make`, a test double).
 *
 * The reactor's callbacks are bridged with two fibers per connection: one
 * pulls the socket's reader (while not paused) and calls `onData`; one drains
 * the writes queued by `write`, in batches (`writeAll`). This costs more than
 * the Node TCP layer's direct callbacks; it is for reach, not speed.
 *
 * @example
 * import { Effect } from "effect"
 * import type * as Socket from "effect/socket/Socket"
 * import { EffectSocket, type Transport } from "wsreactor"
 *
 * // Run a reactor handler over one socket, in the current scope:
 * const program = (socket: Socket.Socket, handler: (incoming: Transport.Incoming) => Effect.Effect<void>) =>
 *   Effect.flatMap(EffectSocket.fromSocket(socket), handler)
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import type { Incoming } from "../services/Transport.ts"

export interface FromSocketOptions {
  readonly remoteAddress?: string | undefined
  readonly remotePort?: number | undefined
  /** `write` returns false (wait for `onDrain`) while this many bytes are queued or more. Default 64 KiB. */
  readonly highWaterMark?: number | undefined
}

/**
 * Wrap `socket` as an `Incoming`. Scoped: the scope's end destroys it.
 * `end()` closes the writer's scope after the queued writes (a half-close on
 * stream sockets); `destroy()` closes the reader's too.
 *
 * @example
 * const incoming = yield* EffectSocket.fromSocket(socket, { remoteAddress: "10.0.0.1" })
 * incoming.listen((chunk) => console.log(chunk.length), () => console.log("end"))
 */
export const fromSocket = (
  socket: Socket.Socket,
  options: FromSocketOptions = {}
): Effect.Effect<Incoming, Socket.SocketError, Scope.Scope> =>
  Effect.gen(function*() {
    const parent = yield* Effect.scope
    const readScope = yield* Scope.fork(parent)
    const writeScope = yield* Scope.fork(parent)
    const pull = yield* Scope.provide(Socket.readerBytes(socket), readScope)
    const writer = yield* Scope.provide(socket.writer, writeScope)
    const run = Effect.runForkWith(yield* Effect.context<never>())
    const highWaterMark = options.highWaterMark ?? 65536

    const running = Latch.makeUnsafe(true) // closed while paused
    let onData: (chunk: Uint8Array) => void = () => {}
    let onEnd: () => void = () => {}
    let reader: Fiber.Fiber<unknown, unknown> | undefined
    let ended = false
    const endOnce = () => {
      if (ended) return
      ended = true
      onEnd()
      wakeDrain() // waiters for a drain learn that the connection ended
    }

    // Writes: queued, written in order by one fiber at a time.
    let queued: Array<Uint8Array> = []
    let buffered = 0
    let writing = false
    let endRequested = false
    let destroyed = false
    let drainWaiters: Array<() => void> = []
    const wakeDrain = () => {
      const waiters = drainWaiters
      drainWaiters = []
      for (const waiter of waiters) waiter()
    }
    const closeWriter = () => run(Scope.close(writeScope, Exit.void))
    const flushLoop: Effect.Effect<void> = Effect.suspend(() => {
      if (queued.length === 0 || destroyed) {
        writing = false
        if (endRequested && !destroyed) closeWriter()
        return Effect.void
      }
      const batch = queued
      queued = []
      let bytes = 0
      for (const chunk of batch) bytes += chunk.length
      return writer.writeAll(batch as [Uint8Array, ...Array<Uint8Array>]).pipe(
        Effect.matchEffect({
          onFailure: () => Effect.sync(() => incoming.destroy()),
          onSuccess: () =>
            Effect.suspend(() => {
              buffered -= bytes
              if (buffered < highWaterMark) wakeDrain()
              return flushLoop
            })
        })
      )
    })

    // A pull may be waiting when `pause` comes: its batch is held until
    // `resume` (one batch read ahead at most, then the socket is not read).
    const readLoop = Effect.forever(
      Effect.flatMap(pull, (chunks) =>
        Effect.andThen(
          running.await,
          Effect.sync(() => {
            for (const chunk of chunks) onData(chunk)
          })
        ))
    ).pipe(Effect.onExit(() => Effect.sync(endOnce)))

    const incoming: Incoming = {
      remoteAddress: options.remoteAddress,
      remotePort: options.remotePort,
      listen: (data, end) => {
        onData = data
        onEnd = end
        if (reader === undefined) reader = run(readLoop)
      },
      pause: () => {
        running.closeUnsafe()
      },
      resume: () => {
        running.openUnsafe()
      },
      write: (chunks) => {
        if (destroyed || endRequested) return true
        for (const chunk of chunks) {
          if (chunk.length === 0) continue
          queued.push(chunk)
          buffered += chunk.length
        }
        if (!writing && queued.length > 0) {
          writing = true
          run(flushLoop)
        }
        return buffered < highWaterMark
      },
      onDrain: (callback) => {
        if (buffered < highWaterMark || ended || destroyed) queueMicrotask(callback)
        else drainWaiters.push(callback)
      },
      end: () => {
        if (endRequested || destroyed) return
        endRequested = true
        if (!writing) closeWriter()
      },
      destroy: () => {
        if (destroyed) return
        destroyed = true
        queued = []
        buffered = 0
        const fiber = reader
        run(
          Effect.andThen(
            fiber === undefined ? Effect.void : Fiber.interrupt(fiber),
            Effect.andThen(Scope.close(writeScope, Exit.void), Scope.close(readScope, Exit.void))
          )
        )
        if (fiber === undefined) endOnce() // never listened: nothing else will say it ended
        wakeDrain()
      }
    }
    yield* Scope.addFinalizer(parent, Effect.sync(() => incoming.destroy()))
    return incoming
  })
