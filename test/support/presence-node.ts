/**
 * A presence node in its own process, for "a node crashes" tests: joins
 * `room` as `name` on Redis presence, prints "joined", and stays until killed.
 * (Joined before Redis answers, the member is written when the connection is
 * ready: the test waits until other nodes see it.)
 *
 *   node test/support/presence-node.ts <redis url> <prefix> <ttlMs> <room> <name>
 */
import * as Effect from "effect/Effect"
import * as References from "effect/References"
import * as RedisPresence from "../../src/layers/RedisPresence.ts"

const [url, prefix, ttl, room, name] = process.argv.slice(2)

await Effect.runPromise(
  Effect.scoped(Effect.gen(function*() {
    const presence = yield* RedisPresence.make({ url: url!, prefix: prefix!, ttlMs: Number(ttl), reconnectMinMs: 20 })
    yield* presence.join(room!, name!)
    console.log("joined")
    return yield* Effect.never
  })).pipe(Effect.provideService(References.MinimumLogLevel, "Error"))
)
