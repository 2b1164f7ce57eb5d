/**
 * A `Broker` for many processes and machines: Redis pub/sub, one channel per
 * topic (`<prefix><topic>`), so Redis routes a message only to the nodes that
 * have a subscriber for its topic (socket.io's adapters send every broadcast
 * to every node, their issue #5226).
 *
 * Delivery rules:
 * - One Redis subscription per topic per process, however many local
 *   connections listen; unsubscribed when the last one leaves.
 * - A publish is delivered to the local subscribers at once and sent to Redis
 *   once, tagged with this node's id; this node skips its own messages when
 *   Redis hands them back (no echo, local subscribers get it once).
 * - The frame is encoded once per node: by the origin for its subscribers, by
 *   each receiving node for its own.
 * - At most once across nodes, in order per publisher per topic (one publisher
 *   connection, Redis keeps the order of one connection's PUBLISHes).
 *
 * Faults: Redis down at start, restarting or unreachable never fails the layer
 * or a connection. Both Redis connections reconnect with exponential backoff
 * (`reconnectMinMs` doubling up to `reconnectMaxMs`, with jitter) and forever;
 * node-redis resubscribes every live channel after a reconnect.
 * **While Redis is down, `publish` delivers locally and buffers the message for
 * Redis** in a bounded buffer (`publishBuffer` messages, oldest dropped first
 * and counted); the buffer is flushed in order once both connections are back.
 * A node that has not resubscribed by then misses the flushed messages, and a
 * PUBLISH in flight when the connection drops is lost: at most once.
 *
 * Why the `redis` client directly and not `effect/persistence/Redis`: its
 * `subscribe` opens one Redis connection per channel (one per chat room), its
 * layer fails when Redis is down at start, and it reports no connection state.
 * node-redis gives one subscriber connection for every channel, `ready` /
 * `reconnecting` events and resubscription.
 * Sharded pub/sub (`SSUBSCRIBE`, Redis 7) only spreads load in Redis Cluster;
 * on one Redis (or a replica set) plain SUBSCRIBE is the same, so it is used.
 *
 * @example
 * const program = serveApp.pipe(
 *   Effect.provide(RedisBroker.layer({ url: "redis://127.0.0.1:6379", prefix: "chat:" }))
 * )
 */
import { randomBytes } from "node:crypto"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
// `redis` is an optional peer dependency: loaded when a Redis layer is built, so apps that
// never use Redis need not install it.
import type * as RedisModule from "redis"
import * as FrameDecoder from "../domain/FrameDecoder.ts"
import * as FrameEncoder from "../domain/FrameEncoder.ts"
import * as Utf8 from "../domain/Utf8.ts"
import { Broker, type BrokerStatus, encodeOnce, makeLocal } from "../services/Broker.ts"
import * as Message from "../services/Message.ts"

/**
 * Options of the Redis broker; every field has a default.
 *
 * @example
 * RedisBroker.layer({ url: "redis://10.0.0.5:6379", prefix: "prod:ws:", publishBuffer: 10_000 })
 */
/** How to reach Redis and who we are on it: shared by the broker and `RedisPresence`. */
export const connectionFields = {
  /** `redis://[user:password@]host:port[/db]` or `rediss://` for TLS. */
  url: Schema.String.check(Schema.isPattern(/^rediss?:\/\//)),
  /** Prefix of every key and channel name, so several applications can share one Redis. */
  prefix: Schema.String.check(Schema.isMaxLength(256)),
  /** First reconnect delay; doubles on every failed attempt. */
  reconnectMinMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 60_000 })),
  /** Longest reconnect delay. */
  reconnectMaxMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 600_000 })),
  /** Give up a connection attempt after this long. */
  connectTimeoutMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 600_000 })),
  /** This node's id on the bus (default: 16 random bytes, base64url); 1 to 60 characters. */
  nodeId: Schema.optional(Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(60)))
}

export const RedisBrokerOptions = Schema.Struct({
  ...connectionFields,
  /** Publishes kept while Redis is down (oldest dropped first); 0 = drop at once. */
  publishBuffer: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 1_000_000 }))
})
export type RedisBrokerOptions = Partial<typeof RedisBrokerOptions.Type>

/** Defaults of `connectionFields`, shared with `RedisPresence`. */
export const connectionDefaults = {
  url: "redis://127.0.0.1:6379",
  prefix: "wsreactor:",
  reconnectMinMs: 100,
  reconnectMaxMs: 5000,
  connectTimeoutMs: 5000
} as const

export const defaultOptions: typeof RedisBrokerOptions.Type = { ...connectionDefaults, publishBuffer: 1000 }

/**
 * node-redis reconnect delays: `minMs` doubling per failed attempt up to
 * `maxMs`, plus up to `minMs` of jitter (so many nodes do not reconnect in
 * step after a Redis restart); never gives up.
 *
 * @example
 * createClient({ socket: { reconnectStrategy: reconnectStrategy(100, 5000) } })
 */
export const reconnectStrategy = (minMs: number, maxMs: number) => (retries: number): number =>
  Math.min(minMs * 2 ** Math.min(retries, 20), maxMs) + Math.floor(Math.random() * minMs)

/** The metric names, for dashboards and tests. */
export const metricNames = {
  up: "wsreactor_broker_up",
  topics: "wsreactor_broker_topics",
  buffered: "wsreactor_broker_buffered",
  published: "wsreactor_broker_published_total",
  received: "wsreactor_broker_received_total",
  dropped: "wsreactor_broker_dropped_total",
  invalid: "wsreactor_broker_invalid_total",
  reconnects: "wsreactor_broker_reconnects_total"
} as const

// Wire format of one Redis message: [kind][nodeId length][nodeId][payload].
const KIND_TEXT = 0
const KIND_BINARY = 1
const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** The bytes published on Redis for one message (exported for tests). */
export const encodeWire = (nodeId: Uint8Array, message: Message.Message): Buffer => {
  const out = Buffer.allocUnsafe(2 + nodeId.length + message.data.length)
  out[0] = message._tag === "Text" ? KIND_TEXT : KIND_BINARY
  out[1] = nodeId.length
  out.set(nodeId, 2)
  out.set(message.data, 2 + nodeId.length)
  return out
}

/** Parse a Redis message; undefined when it is not one of ours (bad kind, too short, text not UTF-8). */
export const decodeWire = (
  wire: Uint8Array
): { readonly nodeId: string; readonly opcode: number; readonly payload: Uint8Array } | undefined => {
  if (wire.length < 2) return undefined
  const kind = wire[0]
  const idLength = wire[1]
  if ((kind !== KIND_TEXT && kind !== KIND_BINARY) || wire.length < 2 + idLength) return undefined
  const payload = wire.subarray(2 + idLength)
  // Anyone who can PUBLISH on this Redis can reach our clients: never forward invalid UTF-8
  // as a text frame, the client would have to fail the connection (RFC 6455 §8.1).
  if (kind === KIND_TEXT && !Utf8.isValid(payload)) return undefined
  return {
    nodeId: decoder.decode(wire.subarray(2, 2 + idLength)),
    opcode: kind === KIND_TEXT ? FrameDecoder.Opcode.Text : FrameDecoder.Opcode.Binary,
    payload
  }
}

/**
 * Build the broker in the current scope (the Redis connections close with it).
 * Never waits for Redis: the broker starts in `connecting` and works locally.
 *
 * @example
 * const broker = yield* RedisBroker.make({ url: "redis://127.0.0.1:6379" })
 */
export const make = (
  input: RedisBrokerOptions = {}
): Effect.Effect<Broker["Service"], Schema.SchemaError, Scope.Scope> =>
  Effect.gen(function*() {
    const options = yield* Schema.decodeUnknownEffect(RedisBrokerOptions)({ ...defaultOptions, ...input })
    const context = yield* Effect.context<never>()
    const runSync = Effect.runSyncWith(context)
    const nodeId = options.nodeId ?? randomBytes(16).toString("base64url")
    const nodeIdBytes = encoder.encode(nodeId)
    const local = makeLocal()

    const up = Metric.gauge(metricNames.up, { description: "1 when the broker's Redis connections are both ready" })
    const topicsGauge = Metric.gauge(metricNames.topics, { description: "Topics this node is subscribed to on Redis" })
    const bufferedGauge = Metric.gauge(metricNames.buffered, { description: "Publishes waiting for Redis to come back" })
    const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })
    const published = counter(metricNames.published, "Messages published to Redis")
    const received = counter(metricNames.received, "Messages received from other nodes through Redis")
    const droppedCounter = counter(metricNames.dropped, "Publishes that never reached Redis (buffer full while down, or lost in flight)")
    const invalid = counter(metricNames.invalid, "Redis messages ignored because they were malformed")
    const reconnects = counter(metricNames.reconnects, "Redis reconnect attempts")
    for (const metric of [published, received, droppedCounter, invalid, reconnects]) metric.updateUnsafe(0, context)
    up.updateUnsafe(0, context)
    topicsGauge.updateUnsafe(0, context)
    bufferedGauge.updateUnsafe(0, context)

    // The publisher fails commands at once while disconnected (we buffer ourselves, bounded);
    // the subscriber keeps node-redis' offline queue so a SUBSCRIBE issued while down is sent on reconnect.
    const { createClient } = yield* Effect.promise(() => import("redis") as Promise<typeof RedisModule>)
    const publisher = createClient({
      url: options.url,
      disableOfflineQueue: true,
      socket: {
        reconnectStrategy: reconnectStrategy(options.reconnectMinMs, options.reconnectMaxMs),
        connectTimeout: options.connectTimeoutMs
      }
    })
    const subscriber = publisher.duplicate({ disableOfflineQueue: false })

    let state: BrokerStatus["state"] = "connecting"
    let closed = false
    let dropped = 0
    const buffer: Array<{ channel: string; wire: Buffer }> = []
    const channelOf = (topic: string) => options.prefix + topic

    const drop = (count: number) => {
      dropped += count
      droppedCounter.updateUnsafe(count, context)
    }
    const send = (channel: string, wire: Buffer) => {
      published.updateUnsafe(1, context)
      // In flight when the connection drops: lost (at most once), counted.
      publisher.publish(channel, wire).catch(() => drop(1))
    }
    const refresh = () => {
      const ready = publisher.isReady && subscriber.isReady
      const next: BrokerStatus["state"] = closed ? "closed" : ready ? "ready" : state === "connecting" ? "connecting" : "reconnecting"
      if (next !== state) {
        const previous = state
        state = next
        if (next === "ready") {
          runSync(Effect.logInfo(`broker: Redis ready (node ${nodeId}, ${local.topics.size} topic(s), ${buffer.length} buffered)`))
        } else if (next === "reconnecting" && previous === "ready") {
          runSync(Effect.logWarning("broker: Redis connection lost; delivering locally and reconnecting"))
        }
      }
      up.updateUnsafe(state === "ready" ? 1 : 0, context)
      // Flush in publish order once both sides are back, before any newer publish can overtake.
      if (state === "ready" && buffer.length > 0) {
        for (const { channel, wire } of buffer.splice(0)) send(channel, wire)
        bufferedGauge.updateUnsafe(0, context)
      }
    }
    let lastError = ""
    for (const client of [publisher, subscriber]) {
      client.on("ready", refresh)
      client.on("end", refresh)
      client.on("reconnecting", () => {
        reconnects.updateUnsafe(1, context)
        refresh()
      })
      // node-redis throws an `error` event nobody listens to: that would crash the process.
      client.on("error", (error: unknown) => {
        refresh()
        const text = error instanceof Error ? error.message : String(error)
        if (text === lastError) return // one line per distinct error, not one per retry
        lastError = text
        runSync(Effect.logWarning(`broker: Redis error: ${text}`))
      })
      client.on("ready", () => (lastError = ""))
    }

    const onMessage = (wire: Buffer, channelBytes: Buffer) => {
      const parsed = decodeWire(wire)
      if (parsed === undefined) return void invalid.updateUnsafe(1, context)
      if (parsed.nodeId === nodeId) return // ours: already delivered locally
      const channel = channelBytes.toString("utf8")
      if (!channel.startsWith(options.prefix)) return
      const topic = channel.slice(options.prefix.length)
      if (!local.topics.has(topic)) return
      received.updateUnsafe(1, context)
      local.deliver(topic, FrameEncoder.encodeFrameConcat({ opcode: parsed.opcode }, parsed.payload))
    }

    // Pending SUBSCRIBE per topic, so a subscriber can wait until remote messages will reach it.
    const subscribed = new Map<string, Promise<void>>()
    const redisSubscribe = (topic: string) => {
      const pending = subscriber.subscribe(channelOf(topic), onMessage, true).catch(() => {
        // Failed while down: node-redis resubscribes its listeners when it reconnects.
      })
      subscribed.set(topic, pending)
      topicsGauge.updateUnsafe(local.topics.size, context)
    }
    const redisUnsubscribe = (topic: string) => {
      subscribed.delete(topic)
      subscriber.unsubscribe(channelOf(topic), onMessage, true).catch(() => {})
      topicsGauge.updateUnsafe(local.topics.size, context)
    }
    const remove = (topic: string, connection: Parameters<typeof local.remove>[1]) => {
      if (local.remove(topic, connection) && !closed) redisUnsubscribe(topic)
    }

    // Start connecting without waiting: Redis being down must not keep the server from starting.
    for (const client of [publisher, subscriber]) {
      client.connect().catch((error: unknown) =>
        runSync(Effect.logWarning(`broker: Redis connect stopped: ${error instanceof Error ? error.message : String(error)}`))
      )
    }
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        refresh()
        for (const client of [publisher, subscriber]) {
          if (client.isOpen) client.destroy()
        }
      })
    )

    const publishRemote = (topic: string, message: Message.Message) => {
      const wire = encodeWire(nodeIdBytes, message)
      const channel = channelOf(topic)
      if (state === "ready" && publisher.isReady) return send(channel, wire)
      if (options.publishBuffer === 0) return drop(1)
      buffer.push({ channel, wire })
      if (buffer.length > options.publishBuffer) drop(buffer.splice(0, buffer.length - options.publishBuffer).length)
      bufferedGauge.updateUnsafe(buffer.length, context)
    }

    return Broker.of({
      subscribe: (topic, connection) =>
        Effect.acquireRelease(
          Effect.suspend(() => {
            if (local.add(topic, connection)) redisSubscribe(topic)
            const pending = subscribed.get(topic)
            // Wait for Redis to confirm, so a message published elsewhere right after reaches this
            // subscriber; never long, and not at all while Redis is down.
            return pending === undefined || !subscriber.isReady
              ? Effect.void
              : Effect.promise(() => pending).pipe(Effect.timeoutOption(options.connectTimeoutMs), Effect.asVoid)
          }),
          () => Effect.sync(() => remove(topic, connection))
        ),
      unsubscribe: (topic, connection) => Effect.sync(() => remove(topic, connection)),
      publish: (topic, outgoing, publishOptions) =>
        Effect.sync(() => {
          const message = Message.toPayload(outgoing)
          publishRemote(topic, message)
          const set = local.topics.get(topic)
          if (set === undefined || set.size === 0) return { delivered: 0, dropped: 0 }
          return local.deliver(topic, encodeOnce(message), publishOptions?.except)
        }),
      subscriberCount: (topic) => local.topics.get(topic)?.size ?? 0,
      topics: () => [...local.topics.keys()],
      status: () => ({ kind: "redis", state, nodeId, topics: local.topics.size, buffered: buffer.length, dropped })
    })
  })

/**
 * The Redis broker as a Layer (connections closed when the layer's scope ends).
 * Fails only on invalid options.
 *
 * @example
 * Server.serve(app).pipe(Effect.provide([RedisBroker.layer({ url }), NodeTcp.layer({ port: 8888 })]))
 */
export const layer = (options: RedisBrokerOptions = {}): Layer.Layer<Broker, Schema.SchemaError> =>
  Layer.effect(Broker, make(options))
