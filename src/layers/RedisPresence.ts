/**
 * `Presence` across processes and machines on one Redis.
 *
 * Each room is a sorted set `<prefix>presence:<room>`: one entry per member
 * (join time, node id, a sequence number, name), scored by its expiry time on
 * Redis's own clock (`TIME`, so node clocks may disagree). Every live node
 * re-adds its members every `ttlMs / 3`, so a crashed node's members expire
 * within `ttlMs` (plus one sweep interval): whichever node sweeps the room
 * first removes them (atomically, in a Lua script, so exactly once) and
 * publishes their `Left`. Joins and leaves go out on
 * `<prefix>presence-events:<room>` to every node that has a subscriber.
 * The room key itself expires after `2 * ttlMs` without a refresh.
 *
 * A join is checked and added in one script, so two nodes cannot both admit
 * "Ada" to one room. While Redis is down: joins are admitted with the
 * uniqueness checked on this node only, `members` answers with this node's
 * members, and the refresh writes them back when Redis returns (also after a
 * Redis restart that lost everything).
 *
 * @example
 * program.pipe(Effect.provide(RedisPresence.layer({ url: "redis://127.0.0.1:6379", ttlMs: 15_000 })))
 */
import { randomBytes } from "node:crypto"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
// `redis` is an optional peer dependency: loaded when a Redis layer is built, so apps that
// never use Redis need not install it.
import type * as RedisModule from "redis"
import { makeListeners, NameTakenError, Presence, type PresenceEvent } from "../services/Presence.ts"
import { connectionDefaults, connectionFields, reconnectStrategy } from "./Redis.ts"

/**
 * Options; every field has a default.
 *
 * @example
 * RedisPresence.layer({ url: "redis://10.0.0.5:6379", prefix: "prod:ws:", ttlMs: 30_000 })
 */
export const RedisPresenceOptions = Schema.Struct({
  ...connectionFields,
  /** A member of a node that stopped refreshing is gone after this long. */
  ttlMs: Schema.Int.check(Schema.isBetween({ minimum: 100, maximum: 86_400_000 }))
})
export type RedisPresenceOptions = Partial<typeof RedisPresenceOptions.Type>

export const defaultOptions: typeof RedisPresenceOptions.Type = { ...connectionDefaults, ttlMs: 15_000 }

// Entries are JSON arrays: [joinedAt, nodeId, seq, name, lowercased name].
type Entry = [number, string, number, string, string]

const SWEEP = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
`

// KEYS[1] room; ARGV[1] ttl, ARGV[2] entry, ARGV[3] lowercased name. Returns {admitted, expired}.
const JOIN = SWEEP + `
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if cjson.decode(m)[5] == ARGV[3] then return {0, expired} end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return {1, expired}
`

// KEYS[1] room; ARGV[1] ttl, ARGV[2..] this node's entries. Returns {live entries, expired}.
const REFRESH = SWEEP + `
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2) end
return {redis.call('ZRANGE', KEYS[1], 0, -1), expired}
`

const parse = (raw: unknown): Entry | undefined => {
  try {
    const entry = JSON.parse(String(raw)) as unknown
    return Array.isArray(entry) && entry.length === 5 && typeof entry[3] === "string" ? entry as Entry : undefined
  } catch {
    return undefined
  }
}

/**
 * Build Redis presence in the current scope. Never waits for Redis.
 *
 * @example
 * const presence = yield* RedisPresence.make({ url: "redis://127.0.0.1:6379" })
 */
export const make = (
  input: RedisPresenceOptions = {}
): Effect.Effect<Presence["Service"], Schema.SchemaError, Scope.Scope> =>
  Effect.gen(function*() {
    const options = yield* Schema.decodeUnknownEffect(RedisPresenceOptions)({ ...defaultOptions, ...input })
    const runSync = Effect.runSyncWith(yield* Effect.context<never>())
    const nodeId = options.nodeId ?? randomBytes(12).toString("base64url")
    const socket = {
      reconnectStrategy: reconnectStrategy(options.reconnectMinMs, options.reconnectMaxMs),
      connectTimeout: options.connectTimeoutMs
    }
    // Commands fail at once while disconnected (we fall back to this node's view).
    const { createClient } = yield* Effect.promise(() => import("redis") as Promise<typeof RedisModule>)
    const client = createClient({ url: options.url, disableOfflineQueue: true, socket })
    const subscriber = client.duplicate({ disableOfflineQueue: false })
    let lastError = ""
    for (const c of [client, subscriber]) {
      c.on("error", (error: unknown) => {
        const text = error instanceof Error ? error.message : String(error)
        if (text !== lastError) runSync(Effect.logWarning(`presence: Redis error: ${text}`))
        lastError = text
      })
      c.on("ready", () => (lastError = ""))
      c.connect().catch(() => {})
    }
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const c of [client, subscriber]) if (c.isOpen) c.destroy()
      })
    )

    const roomKey = (room: string) => `${options.prefix}presence:${room}`
    const eventsChannel = (room: string) => `${options.prefix}presence-events:${room}`
    // This node's members: room → serialized entry → name (insertion order = join order).
    const local = new Map<string, Map<string, string>>()
    const listeners = makeListeners()
    const subscribed = new Map<string, Promise<void>>()
    let seq = 0

    const announce = (event: PresenceEvent) => {
      // Local listeners hear it at once; other nodes through Redis (our own copy is skipped on receipt).
      listeners.emit(event)
      if (client.isReady) {
        client.publish(eventsChannel(event.room), JSON.stringify([nodeId, event._tag, event.name])).catch(() => {})
      }
    }
    const onEvent = (message: string, channel: string) => {
      const room = channel.slice(eventsChannel("").length)
      try {
        const [from, tag, name] = JSON.parse(message) as [unknown, unknown, unknown]
        if (from === nodeId || (tag !== "Joined" && tag !== "Left") || typeof name !== "string") return
        listeners.emit({ _tag: tag, room, name })
      } catch {
        // not one of ours: ignore
      }
    }
    const announceExpired = (room: string, expired: ReadonlyArray<unknown>) => {
      for (const raw of expired) {
        const entry = parse(raw)
        // Ours expired only if we could not refresh for a whole ttl; they are being re-added.
        if (entry !== undefined && entry[1] !== nodeId) announce({ _tag: "Left", room, name: entry[3] })
      }
    }
    const evalScript = (script: string, room: string, args: ReadonlyArray<string>) =>
      client.sendCommand<[unknown, unknown]>(["EVAL", script, "1", roomKey(room), String(options.ttlMs), ...args])

    // Refresh this node's members and sweep the rooms it cares about (members or listeners).
    const refresh = Effect.promise(async () => {
      if (!client.isReady) return
      const rooms = new Set([...local.keys(), ...listeners.rooms.keys()])
      await Promise.all([...rooms].map(async (room) => {
        try {
          const [, expired] = await evalScript(REFRESH, room, [...(local.get(room)?.keys() ?? [])])
          announceExpired(room, expired as Array<unknown>)
        } catch {
          // Redis went away mid-refresh: the next round retries.
        }
      }))
    })
    yield* Effect.forkScoped(Effect.repeat(refresh, Schedule.spaced(Math.max(1, Math.floor(options.ttlMs / 3)))))
    // Back after an outage (maybe a restart that lost the sets): write our members back at once.
    client.on("ready", () => void Effect.runFork(refresh))

    const localNames = (room: string) => [...(local.get(room)?.values() ?? [])]

    return Presence.of({
      join: (room, name) =>
        Effect.acquireRelease(
          Effect.gen(function*() {
            const lower = name.toLowerCase()
            if (localNames(room).some((n) => n.toLowerCase() === lower)) {
              return yield* Effect.fail(new NameTakenError({ room, name }))
            }
            const entry = JSON.stringify([Date.now(), nodeId, seq++, name, lower] satisfies Entry)
            const reply = client.isReady
              ? yield* Effect.promise(() => evalScript(JOIN, room, [entry, lower]).catch(() => undefined))
              : undefined
            if (reply !== undefined) {
              announceExpired(room, reply[1] as Array<unknown>)
              if (Number(reply[0]) !== 1) return yield* Effect.fail(new NameTakenError({ room, name }))
            }
            let members = local.get(room)
            if (members === undefined) local.set(room, members = new Map())
            members.set(entry, name)
            announce({ _tag: "Joined", room, name })
            return entry
          }),
          (entry) =>
            Effect.sync(() => {
              const members = local.get(room)
              if (members?.delete(entry) !== true) return
              if (members.size === 0) local.delete(room)
              if (client.isReady) client.zRem(roomKey(room), entry).catch(() => {})
              announce({ _tag: "Left", room, name })
            })
        ).pipe(Effect.asVoid),
      members: (room) =>
        Effect.promise(async () => {
          if (!client.isReady) return localNames(room)
          try {
            const [live, expired] = await evalScript(REFRESH, room, [...(local.get(room)?.keys() ?? [])])
            announceExpired(room, expired as Array<unknown>)
            return (live as Array<unknown>).map(parse).filter((e): e is Entry => e !== undefined)
              .sort((a, b) => a[0] - b[0] || a[2] - b[2]).map((e) => e[3])
          } catch {
            return localNames(room)
          }
        }),
      subscribe: (room) =>
        listeners.subscribe(
          room,
          () => subscribed.set(room, subscriber.subscribe(eventsChannel(room), onEvent).catch(() => {})),
          () => {
            subscribed.delete(room)
            subscriber.unsubscribe(eventsChannel(room), onEvent).catch(() => {})
          }
        ).pipe(
          // Wait for Redis to confirm the subscription (bounded), so a join elsewhere right after is heard.
          Effect.tap(() => {
            const pending = subscribed.get(room)
            return pending === undefined || !subscriber.isReady
              ? Effect.void
              : Effect.promise(() => pending).pipe(Effect.timeoutOption(options.connectTimeoutMs))
          })
        )
    })
  })

/**
 * Redis presence as a Layer. Fails only on invalid options.
 *
 * @example
 * Effect.provide(program, RedisPresence.layer({ url }))
 */
export const layer = (options: RedisPresenceOptions = {}): Layer.Layer<Presence, Schema.SchemaError> =>
  Layer.effect(Presence, make(options))
