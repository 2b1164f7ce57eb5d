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
import * as Socket from "effect/socket/Socket"
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

const closed = (code: number) => new Socket.SocketError({ reason: new Socket.SocketCloseError({ code }) })

const makePair = (
  receiveWindow: number
): Effect.Effect<{ readonly server: Socket.Socket; readonly client: ClientEnd }> =>
  Effect.gen(function*() {
    const toServer = yield* Queue.unbounded<Uint8Array, Cause.Done>()
    const toClient = yield* Queue.unbounded<Uint8Array, Cause.Done>()
    let unreadByServer = 0
    let unreadByClient = 0
    let destroyed = false
    // Server writes parked on a full receive window, resumed as the client reads.
    let windowWaiters: Array<(effect: Effect.Effect<void>) => void> = []
    const wakeWriters = () => {
      if (windowWaiters.length === 0 || (unreadByClient >= receiveWindow && !destroyed)) return
      const waiters = windowWaiters
      windowWaiters = []
      for (const resume of waiters) resume(Effect.void)
    }
    const windowOpen = Effect.callback<void>((resume) => {
      if (unreadByClient < receiveWindow || destroyed) return resume(Effect.void)
      windowWaiters.push(resume)
      return Effect.sync(() => {
        windowWaiters = windowWaiters.filter((w) => w !== resume)
      })
    })
    const toBytes = (chunk: Uint8Array | string) => typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk
    const deliver = (chunks: ReadonlyArray<Uint8Array>) =>
      Effect.andThen(
        windowOpen,
        Effect.suspend(() => {
          if (destroyed) return Effect.void
          for (const c of chunks) unreadByClient += c.length
          return Effect.asVoid(Queue.offerAll(toClient, chunks))
        })
      )
    const pull = Queue.takeAll(toServer).pipe(
      Effect.tap((chunks) =>
        Effect.sync(() => {
          for (const c of chunks) unreadByServer -= c.length
        })
      ),
      Effect.catchTag("Done", () => Effect.fail(closed(1000)))
    ) as Effect.Effect<readonly [Uint8Array, ...Array<Uint8Array>], Socket.SocketError>
    const server = Socket.make({
      reader: Effect.acquireRelease(
        Effect.succeed({
          pull,
          upgrade: () => Effect.fail(closed(1006))
        }),
        // Releasing the reader destroys the connection: both directions end.
        () => Effect.andThen(Queue.end(toClient), Queue.shutdown(toServer))
      ),
      writer: Effect.acquireRelease(
        Effect.succeed<Socket.Writer>({
          write: (chunk) =>
            Socket.isCloseEvent(chunk) ? Effect.asVoid(Queue.end(toClient)) : deliver([toBytes(chunk)]),
          writeAll: (chunks) => deliver(chunks.map(toBytes))
        }),
        () => Queue.end(toClient)
      )
    })
    const took = (bytes: Uint8Array) => {
      unreadByClient -= bytes.length
      wakeWriters()
    }
    const client: ClientEnd = {
      write: (bytes) =>
        Effect.suspend(() => {
          unreadByServer += bytes.length
          return Effect.asVoid(Queue.offer(toServer, bytes.slice()))
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
      end: Effect.asVoid(Queue.end(toServer)),
      destroy: Effect.suspend(() => {
        destroyed = true
        wakeWriters()
        return Effect.andThen(Queue.end(toServer), Queue.end(toClient))
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
    const transport = Transport.of({
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
          const { client, server } = yield* makePair(options?.receiveWindow ?? Infinity)
          yield* Queue.offer(pending, { socket: server, remoteAddress: options?.remoteAddress ?? "memory", remotePort: 0 })
          return client
        })
    })
    return Context.make(Transport, transport).pipe(Context.add(MemoryNetwork, network))
  })
)
