// Presence on a real redis-server: two nodes see one room; names are unique across nodes;
// joins and leaves reach the other node; a node killed with SIGKILL leaves within the expiry.
import { describe, expect, it, onTestFinished } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as RedisPresence from "../../src/layers/RedisPresence.ts"
import * as Presence from "../../src/services/Presence.ts"
import { startRedis } from "../support/RedisServer.ts"
import { withTimeout } from "../support/Timeout.ts"

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)

const startNode = async (url: string, ttlMs: number) => {
  const scope = await run(Scope.make())
  const presence = await run(
    RedisPresence.make({ url, prefix: "p:", ttlMs, reconnectMinMs: 20 }).pipe(
      Scope.provide(scope),
      Effect.provideService(References.MinimumLogLevel, "Error")
    )
  )
  return { presence, scope, close: () => run(Scope.close(scope, Exit.void)) }
}

/** Poll `members(room)` until it equals `expected`. */
const membersBecome = async (presence: Presence.Presence["Service"], room: string, expected: ReadonlyArray<string>, ms = 5_000) => {
  const deadline = Date.now() + ms
  let last: ReadonlyArray<string> = []
  while (Date.now() < deadline) {
    last = await run(presence.members(room))
    if (JSON.stringify(last) === JSON.stringify(expected)) return last
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`members of ${room}: expected ${JSON.stringify(expected)}, last ${JSON.stringify(last)}`)
}

const nextEvent = (queue: Queue.Dequeue<Presence.PresenceEvent>) => withTimeout("a presence event", run(Queue.take(queue)), 5_000)

describe("RedisPresence (real redis-server)", () => {
  it("two nodes see one room in join order; names are unique across nodes; joins and leaves reach the other node", async () => {
    const redis = await startRedis()
    const a = await startNode(redis.url, 5_000)
    const b = await startNode(redis.url, 5_000)
    try {
      // Both connected: a join on A is visible from B.
      const eventsOnA = await run(Scope.provide(a.presence.subscribe("room"), a.scope))
      await run(Scope.provide(a.presence.join("room", "Ada"), a.scope))
      await membersBecome(b.presence, "room", ["Ada"])

      const bob = await run(Scope.make())
      await run(Scope.provide(b.presence.join("room", "Bob"), bob))
      expect(await run(a.presence.members("room"))).toEqual(["Ada", "Bob"])
      expect(await run(b.presence.members("room"))).toEqual(["Ada", "Bob"])
      expect(await nextEvent(eventsOnA)).toEqual({ _tag: "Joined", room: "room", name: "Ada" })
      expect(await nextEvent(eventsOnA)).toEqual({ _tag: "Joined", room: "room", name: "Bob" })

      // "ada" is Ada's name on the other node.
      const taken = await run(Effect.flip(Effect.scoped(b.presence.join("room", "ada"))))
      expect(taken).toBeInstanceOf(Presence.NameTakenError)

      await run(Scope.close(bob, Exit.void))
      expect(await nextEvent(eventsOnA)).toEqual({ _tag: "Left", room: "room", name: "Bob" })
      expect(await run(a.presence.members("room"))).toEqual(["Ada"])
    } finally {
      await a.close()
      await b.close()
      await redis.stop()
    }
  }, 20_000)

  it("a node killed with SIGKILL: its members leave within the expiry, announced once on each live node", async () => {
    const redis = await startRedis()
    const ttlMs = 600
    const a = await startNode(redis.url, ttlMs)
    const b = await startNode(redis.url, ttlMs)
    const node = spawn(
      process.execPath,
      [fileURLToPath(new URL("../support/presence-node.ts", import.meta.url)), redis.url, "p:", String(ttlMs), "room", "Cy"],
      { stdio: ["ignore", "pipe", "inherit"] }
    )
    onTestFinished(() => void node.kill("SIGKILL")) // even if the test times out
    try {
      const events = await run(Scope.provide(a.presence.subscribe("room"), a.scope))
      // B sweeps the room too (it has a listener): still one Left per node, whoever sweeps first.
      const eventsOnB = await run(Scope.provide(b.presence.subscribe("room"), b.scope))
      await run(Scope.provide(a.presence.join("room", "Ada"), a.scope))
      await membersBecome(a.presence, "room", ["Ada", "Cy"])
      node.kill("SIGKILL")
      const killedAt = Date.now()
      // Drain to the Left of Cy (Ada's and Cy's Joined may come first).
      let event: Presence.PresenceEvent
      do event = await nextEvent(events)
      while (!(event._tag === "Left" && event.name === "Cy"))
      const took = Date.now() - killedAt
      // ttl, plus one sweep interval (ttl / 3), plus scheduling slack.
      expect(took).toBeLessThan(ttlMs + ttlMs / 3 + 1_000)
      expect(await run(a.presence.members("room"))).toEqual(["Ada"])
      // Announced once: nothing else is pending after another sweep.
      await new Promise((resolve) => setTimeout(resolve, ttlMs))
      expect(await run(Queue.clear(events))).toEqual([])
      const seenOnB = await run(Queue.clear(eventsOnB))
      expect(seenOnB.filter((e) => e._tag === "Left")).toEqual([{ _tag: "Left", room: "room", name: "Cy" }])
    } finally {
      node.kill("SIGKILL")
      await a.close()
      await b.close()
      await redis.stop()
    }
  }, 20_000)
})
