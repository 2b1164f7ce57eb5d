/**
 * Topics (rooms) and pub/sub. A publish encodes the frame once and queues the
 * same bytes on every subscriber: the cost per subscriber is one buffer
 * reference, not one encode.
 *
 * A slow subscriber never slows the publisher: a subscriber whose outbound
 * buffer is over its high-water mark misses the message (counted in
 * `PublishResult.dropped`), the way uWS and Bun treat backpressure on publish.
 *
 * The service is an interface so a Redis-backed Layer (many processes) can
 * implement the same `publish`/`subscribe` by forwarding to its bus and
 * delivering locally with {@link layerMemory}'s logic.
 *
 * @example
 * const chat = (conn: Connection) => Effect.gen(function*() {
 *   const broker = yield* Broker
 *   yield* broker.subscribe("lobby", conn)
 *   yield* conn.messages.pipe(Stream.runForEach((m) => broker.publish("lobby", m)))
 * }).pipe(Effect.scoped)
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as FrameDecoder from "../domain/FrameDecoder.ts"
import * as FrameEncoder from "../domain/FrameEncoder.ts"
import type { Connection } from "./Connection.ts"
import * as Message from "./Message.ts"

/** What a publish did. */
export interface PublishResult {
  /** Subscribers the frame was queued for. */
  readonly delivered: number
  /** Subscribers skipped because their outbound buffer was full or they were closing. */
  readonly dropped: number
}

export class Broker extends Context.Service<Broker, {
  /** Subscribe for the life of the current scope (unsubscribed when it closes). */
  readonly subscribe: (topic: string, connection: Connection) => Effect.Effect<void, never, Scope.Scope>
  readonly unsubscribe: (topic: string, connection: Connection) => Effect.Effect<void>
  /** Send to every subscriber of `topic` (except `except`, if given). */
  readonly publish: (
    topic: string,
    message: Message.Outgoing,
    options?: { readonly except?: Connection | undefined }
  ) => Effect.Effect<PublishResult>
  readonly subscriberCount: (topic: string) => number
  readonly topics: () => ReadonlyArray<string>
}>()("wsreactor/Broker") {}

/** Encode a message once as an unmasked server frame (RFC 6455 §5.2). */
export const encodeOnce = (message: Message.Outgoing): Uint8Array => {
  const m = Message.toPayload(message)
  return FrameEncoder.encodeFrameConcat(
    { opcode: m._tag === "Binary" ? FrameDecoder.Opcode.Binary : FrameDecoder.Opcode.Text },
    m.data
  )
}

/** Topics for one process. */
export const makeMemory = (): Broker["Service"] => {
  const topics = new Map<string, Set<Connection>>()
  const unsubscribeUnsafe = (topic: string, connection: Connection) => {
    const set = topics.get(topic)
    if (set === undefined) return
    set.delete(connection)
    if (set.size === 0) topics.delete(topic)
  }
  return Broker.of({
    subscribe: (topic, connection) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          let set = topics.get(topic)
          if (set === undefined) topics.set(topic, set = new Set())
          set.add(connection)
        }),
        () => Effect.sync(() => unsubscribeUnsafe(topic, connection))
      ),
    unsubscribe: (topic, connection) => Effect.sync(() => unsubscribeUnsafe(topic, connection)),
    publish: (topic, message, options) =>
      Effect.suspend(() => {
        const set = topics.get(topic)
        if (set === undefined || set.size === 0) return Effect.succeed({ delivered: 0, dropped: 0 })
        const frame = encodeOnce(message)
        let delivered = 0
        let dropped = 0
        for (const connection of set) {
          if (connection === options?.except) continue
          if (connection.offerFrame(frame)) delivered++
          else dropped++
        }
        return Effect.succeed({ delivered, dropped })
      }),
    subscriberCount: (topic) => topics.get(topic)?.size ?? 0,
    topics: () => [...topics.keys()]
  })
}

/** In-process broker Layer. */
export const layerMemory: Layer.Layer<Broker> = Layer.sync(Broker, makeMemory)
