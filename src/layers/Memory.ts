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
  /** Half-close from the client (the server reads EOF). */
  readonly end: Effect.Effect<void>
}

/** Opens in-memory connections to the server running on {@link layer}. */
export class MemoryNetwork extends Context.Service<MemoryNetwork, {
  readonly connect: (options?: { readonly remoteAddress?: string }) => Effect.Effect<ClientEnd>
}>()("wsreactor/MemoryNetwork") {}

const closed = (code: number) => new Socket.SocketError({ reason: new Socket.SocketCloseError({ code }) })

const makePair = (): Effect.Effect<{ readonly server: Socket.Socket; readonly client: ClientEnd }> =>
  Effect.gen(function*() {
    const toServer = yield* Queue.unbounded<Uint8Array, Cause.Done>()
    const toClient = yield* Queue.unbounded<Uint8Array, Cause.Done>()
    const pull = Queue.takeAll(toServer).pipe(
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
            Socket.isCloseEvent(chunk)
              ? Effect.asVoid(Queue.end(toClient))
              : Effect.asVoid(Queue.offer(toClient, typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk)),
          writeAll: (chunks) =>
            Effect.asVoid(
              Queue.offerAll(toClient, chunks.map((c) => (typeof c === "string" ? new TextEncoder().encode(c) : c)))
            )
        }),
        () => Queue.end(toClient)
      )
    })
    const client: ClientEnd = {
      write: (bytes) => Effect.asVoid(Queue.offer(toServer, bytes.slice())),
      read: Queue.take(toClient),
      end: Effect.asVoid(Queue.end(toServer))
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
          const { client, server } = yield* makePair()
          yield* Queue.offer(pending, { socket: server, remoteAddress: options?.remoteAddress ?? "memory", remotePort: 0 })
          return client
        })
    })
    return Context.make(Transport, transport).pipe(Context.add(MemoryNetwork, network))
  })
)
