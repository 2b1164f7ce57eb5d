/**
 * An in-memory transport: no ports, no kernel. A test opens a client end with
 * `MemoryNetwork.connect` and drives the server byte by byte; the server side
 * is a real `Socket` running the same reactor code as TCP.
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import { type Incoming, Transport } from "../services/Transport.ts"

/** The client's end of an in-memory connection. */
export interface ClientEnd {
  /** Send bytes to the server (any split: the server sees a byte stream). */
  readonly write: (bytes: Uint8Array) => Effect.Effect<void>
  /** The next bytes the server wrote; fails with `Cause.Done` once the server closed its side and all bytes were read. */
  readonly read: Effect.Effect<Uint8Array, Cause.Done>
  /** Like `read`, but never waits: `None` when the server has written nothing new yet. */
  readonly poll: Effect.Effect<Option.Option<Uint8Array>, Cause.Done>
  /** Half-close from the client (the server reads EOF). */
  readonly end: Effect.Effect<void>
  /** Drop the connection both ways (like a reset): the server reads EOF, its later writes are discarded. */
  readonly destroy: Effect.Effect<void>
  /** Bytes written by the client that the server has not read yet (it stops reading when its handler is behind). */
  readonly unreadByServer: Effect.Effect<number>
}

/** Options of {@link MemoryNetwork} `connect`. */
export interface ConnectOptions {
  readonly remoteAddress?: string | undefined
  /**
   * Like a TCP receive window: the server's writes wait while the client holds
   * this many unread bytes or more (default: unbounded). A small window and a
   * client that does not read make the server's outbound buffer grow.
   */
  readonly receiveWindow?: number | undefined
}

/** Opens in-memory connections to the server running on {@link layer}. */
export class MemoryNetwork extends Context.Service<MemoryNetwork, {
  readonly connect: (options?: ConnectOptions) => Effect.Effect<ClientEnd>
}>()("wsreactor/MemoryNetwork") {}

const makePair = (
  receiveWindow: number,
  remoteAddress: string
): Effect.Effect<{ readonly server: Incoming; readonly client: ClientEnd }> =>
  Effect.gen(function*() {
    const toClient = yield* Queue.unbounded<Uint8Array, Cause.Done>()
    // Client → server: delivered synchronously while the server reads, held while it is paused.
    let onData: ((chunk: Uint8Array) => void) | undefined
    let onEnd: (() => void) | undefined
    let paused = false
    let held: Array<Uint8Array> = []
    let unreadByServer = 0
    let clientEnded = false
    let serverEnded = false // the server half-closed or destroyed: no more bytes to the client
    let destroyed = false
    let unreadByClient = 0
    let drainCallbacks: Array<() => void> = []

    const endServerSide = () => {
      if (onEnd === undefined) return
      const end = onEnd
      onEnd = undefined
      onData = undefined
      end()
    }
    const pump = () => {
      while (!paused && onData !== undefined && held.length > 0) {
        const chunk = held.shift()!
        unreadByServer -= chunk.length
        onData(chunk)
      }
      if (!paused && held.length === 0 && clientEnded) endServerSide()
    }
    const windowOpen = () => destroyed || unreadByClient < receiveWindow
    const wakeDrain = () => {
      if (drainCallbacks.length === 0 || !windowOpen()) return
      const callbacks = drainCallbacks
      drainCallbacks = []
      for (const callback of callbacks) callback()
    }
    const server: Incoming = {
      remoteAddress,
      remotePort: 0,
      listen: (data, end) => {
        onData = data
        onEnd = end
        pump()
      },
      pause: () => {
        paused = true
      },
      resume: () => {
        paused = false
        pump()
      },
      write: (chunks) => {
        if (serverEnded) return true
        for (const chunk of chunks) {
          unreadByClient += chunk.length
          Queue.offerUnsafe(toClient, chunk)
        }
        return windowOpen()
      },
      onDrain: (callback) => {
        if (windowOpen()) queueMicrotask(callback)
        else drainCallbacks.push(callback)
      },
      end: () => {
        if (serverEnded) return
        serverEnded = true
        Queue.endUnsafe(toClient)
      },
      destroy: () => {
        destroyed = true
        held = []
        if (!serverEnded) {
          serverEnded = true
          Queue.endUnsafe(toClient)
        }
        wakeDrain()
        endServerSide()
      }
    }
    const took = (bytes: Uint8Array) => {
      unreadByClient -= bytes.length
      wakeDrain()
    }
    const client: ClientEnd = {
      write: (bytes) =>
        Effect.sync(() => {
          if (clientEnded || destroyed) return
          unreadByServer += bytes.length
          held.push(bytes.slice())
          pump()
        }),
      read: Effect.tap(Queue.take(toClient), (bytes) => Effect.sync(() => took(bytes))),
      poll: Effect.suspend(() => {
        const next = Queue.takeUnsafe(toClient)
        if (next === undefined) return Effect.succeed(Option.none())
        if (next._tag === "Success") {
          took(next.value)
          return Effect.succeed(Option.some(next.value))
        }
        return Cause.done()
      }),
      end: Effect.sync(() => {
        clientEnded = true
        pump()
      }),
      destroy: Effect.sync(() => {
        clientEnded = true
        destroyed = true
        held = []
        unreadByServer = 0
        if (!serverEnded) {
          serverEnded = true
          Queue.endUnsafe(toClient)
        }
        wakeDrain()
        endServerSide()
      }),
      unreadByServer: Effect.sync(() => unreadByServer)
    }
    return { server, client }
  })

/**
 * A `Transport` plus the `MemoryNetwork` to connect to it.
 *
 * @example
 * const program = Effect.gen(function*() {
 *   const client = yield* (yield* MemoryNetwork).connect()
 *   yield* client.write(upgradeRequestBytes)
 * }).pipe(Effect.provide(Memory.layer))
 */
export const layer: Layer.Layer<Transport | MemoryNetwork> = Layer.effectContext(
  Effect.gen(function*() {
    const pending = yield* Queue.unbounded<Incoming>()
    let accepting = true
    const transport = Transport.of({
      // Like closing a listening socket: later connects are refused (the client end is dropped at once).
      stopAccepting: Effect.sync(() => void (accepting = false)),
      address: { host: "memory", port: 0 },
      run: (handler) =>
        Effect.gen(function*() {
          const scope = yield* Scope.make()
          return yield* Effect.forever(
            Effect.flatMap(Queue.take(pending), (incoming) => Effect.forkIn(Effect.ignoreCause(handler(incoming)), scope))
          ).pipe(Effect.ensuring(Scope.close(scope, Exit.void)))
        }) as Effect.Effect<never, never, any>
    })
    const network = MemoryNetwork.of({
      connect: (options) =>
        Effect.gen(function*() {
          const { client, server } = yield* makePair(options?.receiveWindow ?? Infinity, options?.remoteAddress ?? "memory")
          if (!accepting) {
            yield* client.destroy
            return client
          }
          yield* Queue.offer(pending, server)
          return client
        })
    })
    return Context.make(Transport, transport).pipe(Context.add(MemoryNetwork, network))
  })
)
