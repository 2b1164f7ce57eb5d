// The Redis broker against a real redis-server (its own process on a free loopback port):
// two brokers stand for two nodes; some tests use fake connections (what the broker
// offers, byte for byte), the others two real servers and `ws` clients.
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Net from "node:net"
import { createClient } from "redis"
import WebSocket from "ws"
import * as RedisBroker from "../../src/layers/Redis.ts"
import type * as Broker from "../../src/services/Broker.ts"
import type { Connection } from "../../src/services/Connection.ts"
import * as Router from "../../src/services/Router.ts"
import { freePort, type RedisServer, startRedis } from "../support/RedisServer.ts"
import { startServer } from "../support/TcpServer.ts"
import { withTimeout } from "../support/Timeout.ts"

/** A connection that records the frames the broker offered it, decoded to text. */
const fake = (id: number) => {
  const received: Array<string> = []
  const frames: Array<Uint8Array> = []
  const connection = {
    id,
    offerFrame: (frame: Uint8Array) => {
      frames.push(frame)
      received.push(frameText(frame))
      return true
    }
  } as unknown as Connection
  return { connection, received, frames }
}

/** The payload of one unmasked server frame (RFC 6455 §5.2), as text. */
const frameText = (frame: Uint8Array): string => {
  let length = frame[1]! & 0x7f
  let offset = 2
  if (length === 126) {
    length = (frame[2]! << 8) | frame[3]!
    offset = 4
  } else if (length === 127) {
    length = Number(new DataView(frame.buffer, frame.byteOffset + 2, 8).getBigUint64(0))
    offset = 10
  }
  expect(frame.length).toBe(offset + length)
  return Buffer.from(frame.subarray(offset)).toString("utf8")
}

interface Node {
  readonly broker: Broker.Broker["Service"]
  readonly close: () => Promise<void>
}

const startNode = async (options: RedisBroker.RedisBrokerOptions): Promise<Node> => {
  const scope = await Effect.runPromise(Scope.make())
  const broker = await Effect.runPromise(RedisBroker.make({ reconnectMinMs: 20, reconnectMaxMs: 200, ...options }).pipe(
      Scope.provide(scope),
      // The broker logs each reconnect; the tests check its status instead.
      Effect.provideService(References.MinimumLogLevel, "Error")
    ))
  return { broker, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

/** Poll until `check` holds (every 10 ms), failing with `what` after `ms`. */
const waitUntil = (what: string, check: () => boolean, ms = 5_000): Promise<void> =>
  withTimeout(
    what,
    new Promise<void>((resolve) => {
      const poll = () => (check() ? resolve() : void setTimeout(poll, 10))
      poll()
    }),
    ms
  )

const ready = (node: Node) => waitUntil("the broker to be ready", () => node.broker.status?.().state === "ready")

/** A plain Redis client for looking at the server (PUBSUB NUMSUB, raw PUBLISH). */
const inspect = async (url: string) => {
  const client = createClient({ url })
  client.on("error", () => {})
  await client.connect()
  return client
}

/**
 * A TCP relay in front of Redis that a test can cut (every socket dropped, new
 * connections refused) and restore: Redis unreachable for one node only.
 */
const startRelay = async (targetPort: number) => {
  const port = await freePort()
  const sockets = new Set<Net.Socket>()
  let server: Net.Server | undefined
  const listen = () =>
    new Promise<void>((resolve) => {
      server = Net.createServer((client) => {
        const upstream = Net.connect(targetPort, "127.0.0.1")
        for (const s of [client, upstream]) {
          sockets.add(s)
          s.on("error", () => {})
          s.on("close", () => {
            sockets.delete(s)
            client.destroy()
            upstream.destroy()
          })
        }
        client.pipe(upstream).pipe(client)
      })
      server.listen(port, "127.0.0.1", () => resolve())
    })
  const cut = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      server?.close(() => resolve())
    })
  await listen()
  return { url: `redis://127.0.0.1:${port}`, cut, restore: listen }
}

const withRedis = (body: (redis: RedisServer) => Promise<void>) => async () => {
  const redis = await startRedis()
  try {
    await body(redis)
  } finally {
    await redis.stop()
  }
}

describe("Broker.layerRedis (real redis-server)", () => {
  it(
    "a publish on B reaches A's subscribers once and B's own once; one Redis subscription per topic per node",
    withRedis(async (redis) => {
      const a = await startNode({ url: redis.url, prefix: "t1:" })
      const b = await startNode({ url: redis.url, prefix: "t1:" })
      const observer = await inspect(redis.url)
      try {
        await Promise.all([ready(a), ready(b)])
        const onA = [fake(1), fake(2), fake(3)]
        const onB = fake(4)
        const scopeA = await Effect.runPromise(Scope.make())
        for (const f of onA) await Effect.runPromise(Scope.provide(a.broker.subscribe("lobby", f.connection), scopeA))
        const scopeB = await Effect.runPromise(Scope.make())
        await Effect.runPromise(Scope.provide(b.broker.subscribe("lobby", onB.connection), scopeB))

        // Three local subscribers on A, one on B: two subscriptions on Redis, on the prefixed channel.
        expect(await observer.pubSubNumSub("t1:lobby")).toEqual({ "t1:lobby": 2 })
        expect(await observer.pubSubChannels()).toEqual(["t1:lobby"])

        const result = await Effect.runPromise(b.broker.publish("lobby", "from B"))
        expect(result).toEqual({ delivered: 1, dropped: 0 })
        await waitUntil("A's subscribers to receive", () => onA.every((f) => f.received.length === 1))
        // Give an echo through Redis time to arrive, if there were one.
        await new Promise((resolve) => setTimeout(resolve, 100))
        for (const f of onA) expect(f.received).toEqual(["from B"])
        // Encoded once on the receiving node: its three subscribers hold the very same bytes.
        for (const f of onA) expect(f.frames[0]).toBe(onA[0]!.frames[0])
        expect(onB.received).toEqual(["from B"])

        // The last local subscriber leaving drops the node's Redis subscription.
        await Effect.runPromise(Scope.close(scopeA, Exit.void))
        await waitUntil("A to unsubscribe", () => a.broker.status?.().topics === 0)
        expect(await pollNumSub(observer, "t1:lobby", 1)).toBe(1)
        await Effect.runPromise(Scope.close(scopeB, Exit.void))
        expect(await pollNumSub(observer, "t1:lobby", 0)).toBe(0)
      } finally {
        await observer.close()
        await a.close()
        await b.close()
      }
    })
  )

  it(
    "malformed messages on a channel (unknown kind, invalid UTF-8 as text) are ignored and counted, never delivered",
    withRedis(async (redis) => {
      const a = await startNode({ url: redis.url, prefix: "t2:" })
      const raw = await inspect(redis.url)
      try {
        await ready(a)
        const f = fake(1)
        await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
          yield* a.broker.subscribe("room", f.connection)
          yield* Effect.promise(async () => {
            await raw.publish("t2:room", Buffer.from([9, 0, 1, 2]))
            await raw.publish("t2:room", Buffer.from([0, 1, 0x41, 0xff, 0xfe]))
            await raw.publish("t2:room", Buffer.from([0]))
            // A valid one from another node, so we know the others were seen before it.
            await raw.publish("t2:room", RedisBroker.encodeWire(new TextEncoder().encode("x"), { _tag: "Text", data: new TextEncoder().encode("ok") } as never))
            await waitUntil("the valid message", () => f.received.length === 1)
          })
        })))
        expect(f.received).toEqual(["ok"])
      } finally {
        await raw.close()
        await a.close()
      }
    })
  )

  it("Redis down at start: the broker builds at once, delivers locally, buffers for Redis, and connects when Redis appears", async () => {
    const port = await freePort()
    const node = await startNode({ url: `redis://127.0.0.1:${port}`, prefix: "t3:", publishBuffer: 10 })
    let redis: RedisServer | undefined
    try {
      expect(node.broker.status?.().state).toBe("connecting")
      const f = fake(1)
      await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        yield* node.broker.subscribe("room", f.connection)
        expect(yield* node.broker.publish("room", "local while down")).toEqual({ delivered: 1, dropped: 0 })
      })))
      expect(f.received).toEqual(["local while down"])
      expect(node.broker.status?.()).toMatchObject({ buffered: 1, dropped: 0 })
      redis = await startRedis(port)
      await ready(node)
      expect(node.broker.status?.()).toMatchObject({ state: "ready", buffered: 0 })
    } finally {
      await node.close()
      await redis?.stop()
    }
  })

  it(
    "Redis unreachable for node B: B buffers (bounded, oldest dropped), A stays connected; on reconnect B flushes in order",
    withRedis(async (redis) => {
      const relay = await startRelay(redis.port)
      const a = await startNode({ url: redis.url, prefix: "t4:" })
      const b = await startNode({ url: relay.url, prefix: "t4:", publishBuffer: 5 })
      try {
        await Promise.all([ready(a), ready(b)])
        const onA = fake(1)
        const onB = fake(2)
        const scope = await Effect.runPromise(Scope.make())
        await Effect.runPromise(Scope.provide(a.broker.subscribe("room", onA.connection), scope))
        await Effect.runPromise(Scope.provide(b.broker.subscribe("room", onB.connection), scope))
        await Effect.runPromise(b.broker.publish("room", "before"))
        await waitUntil("'before' on A", () => onA.received.length === 1)

        await relay.cut()
        await waitUntil("B to notice", () => b.broker.status?.().state === "reconnecting")
        for (let i = 0; i < 8; i++) await Effect.runPromise(b.broker.publish("room", `down ${i}`))
        // Local delivery kept working; 5 kept for Redis, the 3 oldest dropped and counted.
        expect(onB.received).toEqual(["before", ...Array.from({ length: 8 }, (_, i) => `down ${i}`)])
        expect(b.broker.status?.()).toMatchObject({ buffered: 5, dropped: 3 })
        expect(a.broker.status?.().state).toBe("ready")

        await relay.restore()
        await ready(b)
        await Effect.runPromise(b.broker.publish("room", "after"))
        await waitUntil("'after' on A", () => onA.received.at(-1) === "after")
        expect(onA.received).toEqual(["before", "down 3", "down 4", "down 5", "down 6", "down 7", "after"])
        expect(b.broker.status?.()).toMatchObject({ state: "ready", buffered: 0, dropped: 3 })
        await Effect.runPromise(Scope.close(scope, Exit.void))
      } finally {
        await a.close()
        await b.close()
        await relay.cut()
      }
    })
  )
})

/** NUMSUB of `channel`, polled until it equals `expected` (or 2 s pass). */
const pollNumSub = async (client: Awaited<ReturnType<typeof inspect>>, channel: string, expected: number) => {
  let count = -1
  const deadline = Date.now() + 2_000
  while (Date.now() < deadline) {
    count = (await client.pubSubNumSub(channel))[channel] ?? 0
    if (count === expected) break
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return count
}

// ---------------------------------------------------------------------------
// Two real servers, real WebSocket clients
// ---------------------------------------------------------------------------

/** `/topic/:name`: subscribe, and publish every message to the others on the topic. */
const relayApp = (broker: Broker.Broker["Service"]) =>
  Router.make([
    Router.ws("/topic/:name", (conn) =>
      Effect.gen(function*() {
        const topic = conn.params["name"]!
        yield* broker.subscribe(topic, conn)
        yield* conn.messages.pipe(Stream.runForEach((message) => broker.publish(topic, message, { except: conn })))
      }).pipe(Effect.scoped))
  ])

const openClient = (port: number, path: string) => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`)
  const received: Array<string> = []
  ws.on("message", (data) => received.push((data as Buffer).toString("utf8")))
  const closed = new Promise<number>((resolve) => ws.once("close", resolve))
  const opened = withTimeout("open", new Promise<void>((resolve, reject) => ws.once("open", resolve).once("error", reject)), 5_000)
  return { ws, received, closed, opened }
}

/**
 * Two nodes on one Redis, each serving `relayApp`, with a listener client on A and a sender client on B,
 * both subscribed to "feed"; everything is closed after `body`.
 */
const withRelayPair = async (
  redis: { readonly url: string },
  options: { readonly prefix: string; readonly publishBufferB?: number },
  body: (pair: {
    readonly a: Awaited<ReturnType<typeof startNode>>
    readonly b: Awaited<ReturnType<typeof startNode>>
    readonly listener: ReturnType<typeof openClient>
    readonly sender: ReturnType<typeof openClient>
  }) => Promise<void>
) => {
  const a = await startNode({ url: redis.url, prefix: options.prefix })
  const b = await startNode({
    url: redis.url,
    prefix: options.prefix,
    ...(options.publishBufferB === undefined ? {} : { publishBuffer: options.publishBufferB })
  })
  const serverA = await startServer(relayApp(a.broker), { heartbeatIntervalMs: 0 })
  const serverB = await startServer(relayApp(b.broker), { heartbeatIntervalMs: 0 })
  try {
    await Promise.all([ready(a), ready(b)])
    const listener = openClient(serverA.port, "/topic/feed")
    const sender = openClient(serverB.port, "/topic/feed")
    await Promise.all([listener.opened, sender.opened])
    await waitUntil("both subscribed", () => a.broker.subscriberCount("feed") === 1 && b.broker.subscriberCount("feed") === 1)
    await body({ a, b, listener, sender })
  } finally {
    await serverA.close()
    await serverB.close()
    await a.close()
    await b.close()
  }
}

describe("two servers on one Redis, real WebSocket clients", () => {
  it(
    "10,000 messages from a client on B reach a client on A in order, none lost or duplicated",
    withRedis(async (redis) => {
      await withRelayPair(redis, { prefix: "s1:" }, async ({ listener, sender }) => {
        const count = 10_000
        for (let i = 0; i < count; i++) sender.ws.send(String(i))
        await waitUntil(`${count} messages on A`, () => listener.received.length >= count, 20_000)
        await new Promise((resolve) => setTimeout(resolve, 100)) // a duplicate would arrive now
        expect(listener.received.length).toBe(count)
        expect(listener.received.every((m, i) => m === String(i))).toBe(true)
        expect(sender.received).toEqual([]) // `except` the sender, and no echo through Redis
        listener.ws.close()
        sender.ws.close()
      })
    }),
    40_000
  )

  it(
    "Redis killed and restarted mid-stream: servers and clients stay up, delivery resumes, nothing duplicated or reordered",
    withRedis(async (redis) => {
      await withRelayPair(redis, { prefix: "s2:", publishBufferB: 50 }, async ({ a, b, listener, sender }) => {
        let next = 0
        const sendSome = async (n: number) => {
          for (let i = 0; i < n; i++) sender.ws.send(String(next++))
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
        await sendSome(100)
        await waitUntil("the first 100", () => listener.received.length === 100)

        await redis.kill()
        await waitUntil("both brokers to notice", () =>
          a.broker.status?.().state !== "ready" && b.broker.status?.().state !== "ready")
        for (let k = 0; k < 10; k++) await sendSome(10) // 100 while down: 50 buffered, 50 dropped
        await waitUntil("B to have read all 100", () => {
          const status = b.broker.status?.()
          return status?.buffered === 50 && status.dropped === 50
        })
        await redis.restart()
        await Promise.all([ready(a), ready(b)])
        const resumedAt = next
        await sendSome(100)
        await waitUntil("the messages sent after the restart", () => listener.received.at(-1) === String(next - 1))

        // Clients never closed.
        expect(listener.ws.readyState).toBe(WebSocket.OPEN)
        expect(sender.ws.readyState).toBe(WebSocket.OPEN)
        const seen = listener.received.map(Number)
        // In order, no duplicates: strictly increasing.
        expect(seen.every((n, i) => i === 0 || n > seen[i - 1]!)).toBe(true)
        // Everything before the kill and after both nodes were back arrived; the gap is inside the outage
        // (at most the 50 oldest messages sent while down, dropped when B's buffer overflowed, plus
        // whatever B flushed before A had resubscribed).
        for (let i = 0; i < 100; i++) expect(seen).toContain(i)
        for (let i = resumedAt; i < next; i++) expect(seen).toContain(i)
        for (let i = 100; i < 150; i++) expect(seen).not.toContain(i)
      })
    }),
    40_000
  )
})
