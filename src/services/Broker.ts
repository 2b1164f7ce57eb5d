/**
 * Topics (rooms) and pub/sub. A publish encodes the frame once and queues the
 * same bytes on every subscriber: the cost per subscriber is one buffer
 * reference, not one encode.
 *
 * A slow subscriber never slows the publisher: a subscriber whose outbound
 * buffer is over its high-water mark misses the message (counted in
 * `PublishResult.dropped`), the way uWS and Bun treat backpressure on publish.
 *
 * The service is an interface: {@link layerMemory} serves one process,
 * {@link layerRedis} many processes and machines on one Redis (it forwards each
 * publish to Redis and delivers locally with the same {@link makeLocal} logic).
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
import type * as Schema from "effect/Schema"
import * as FrameDecoder from "../domain/FrameDecoder.ts"
import * as FrameEncoder from "../domain/FrameEncoder.ts"
import type * as RedisBroker from "../layers/Redis.ts"
import type { Connection } from "./Connection.ts"
import * as Message from "./Message.ts"

/** What a publish did. */
export interface PublishResult {
  /** Subscribers the frame was queued for. */
  readonly delivered: number
  /** Subscribers skipped because their outbound buffer was full or they were closing. */
  readonly dropped: number
}

/**
 * What a broker reports for `/healthz` and `/metrics`.
 *
 * @example
 * Broker.makeMemory().status?.() // { kind: "memory", state: "local", ... }
 */
export interface BrokerStatus {
  readonly kind: "memory" | "redis" | "ipc"
  /** `local`: no bus (memory); `ready`: connected to the bus; `connecting`/`reconnecting`: not (yet). */
  readonly state: "local" | "connecting" | "ready" | "reconnecting" | "closed"
  /** This process's id on the bus (messages it published come back tagged with it and are skipped). */
  readonly nodeId?: string | undefined
  /** Topics with at least one local subscriber. */
  readonly topics: number
  /** Publishes waiting for the bus to come back. */
  readonly buffered: number
  /** Publishes that never reached the bus (buffer overflow while down, or lost in flight). */
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
  /** The bus's state (optional: a broker without a bus may omit it). */
  readonly status?: (() => BrokerStatus) | undefined
}>()("wsreactor/Broker") {}

/** Encode a message once as an unmasked server frame (RFC 6455 §5.2). */
export const encodeOnce = (message: Message.Outgoing): Uint8Array => {
  const m = Message.toPayload(message)
  return FrameEncoder.encodeFrameConcat(
    { opcode: m._tag === "Binary" ? FrameDecoder.Opcode.Binary : FrameDecoder.Opcode.Text },
    m.data
  )
}

/**
 * Local subscribers by topic, and delivery of an encoded frame to them. The
 * memory, Redis and IPC brokers share it; `add` and `remove` say when a topic
 * gains its first or loses its last subscriber, which is when a bus-backed
 * broker subscribes to or unsubscribes from the topic's channel.
 *
 * @example
 * const local = Broker.makeLocal()
 * local.add("lobby", conn) // true: the first subscriber of "lobby"
 * local.deliver("lobby", Broker.encodeOnce("hi")) // { delivered: 1, dropped: 0 }
 */
export const makeLocal = () => {
  const topics = new Map<string, Set<Connection>>()
  return {
    topics,
    /** Add a subscriber; true when it is the topic's first. */
    add: (topic: string, connection: Connection): boolean => {
      let set = topics.get(topic)
      const first = set === undefined
      if (set === undefined) topics.set(topic, set = new Set())
      set.add(connection)
      return first
    },
    /** Remove a subscriber; true when it was the topic's last. */
    remove: (topic: string, connection: Connection): boolean => {
      const set = topics.get(topic)
      if (set === undefined || !set.delete(connection)) return false
      if (set.size > 0) return false
      topics.delete(topic)
      return true
    },
    /** Offer one encoded frame to every local subscriber (except `except`) without waiting. */
    deliver: (topic: string, frame: Uint8Array, except?: Connection): PublishResult => {
      const set = topics.get(topic)
      let delivered = 0
      let dropped = 0
      if (set === undefined) return { delivered, dropped }
      for (const connection of set) {
        if (connection === except) continue
        if (connection.offerFrame(frame)) delivered++
        else dropped++
      }
      return { delivered, dropped }
    }
  }
}

/** Topics for one process. */
export const makeMemory = (): Broker["Service"] => {
  const local = makeLocal()
  return Broker.of({
    subscribe: (topic, connection) =>
      Effect.acquireRelease(
        Effect.sync(() => void local.add(topic, connection)),
        () => Effect.sync(() => void local.remove(topic, connection))
      ),
    unsubscribe: (topic, connection) => Effect.sync(() => void local.remove(topic, connection)),
    publish: (topic, message, options) =>
      Effect.sync(() => {
        // No subscriber, no encode.
        const set = local.topics.get(topic)
        if (set === undefined || set.size === 0) return { delivered: 0, dropped: 0 }
        return local.deliver(topic, encodeOnce(message), options?.except)
      }),
    subscriberCount: (topic) => local.topics.get(topic)?.size ?? 0,
    topics: () => [...local.topics.keys()],
    status: () => ({ kind: "memory", state: "local", topics: local.topics.size, buffered: 0, dropped: 0 })
  })
}

/** In-process broker Layer. */
export const layerMemory: Layer.Layer<Broker> = Layer.sync(Broker, makeMemory)

/**
 * A broker for many processes and machines on one Redis (pub/sub, one channel
 * per topic). See `layers/Redis.ts` for the delivery rules and options.
 *
 * @example
 * program.pipe(Effect.provide(Broker.layerRedis({ url: "redis://127.0.0.1:6379" })))
 */
export const layerRedis = (options: RedisBroker.RedisBrokerOptions = {}): Layer.Layer<Broker, Schema.SchemaError> =>
  // Loaded when used: layers/Redis.ts imports this module, and it loads effect/Schema (~4 MB of
  // live heap that every full GC walks) which a server on the memory broker does without.
  Layer.unwrap(Effect.map(Effect.promise(() => import("../layers/Redis.ts")), (Redis) => Redis.layer(options)))
