// In-process presence: unique names per room (case-insensitive), join order, leave on scope close,
// Joined/Left events to every subscriber of the room.
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Presence from "../../src/services/Presence.ts"

describe("Presence (memory)", () => {
  it.effect("members in join order; a taken name (any case) fails with NameTakenError; leaving frees it", () =>
    Effect.gen(function*() {
      const presence = Presence.makeMemory()
      const events = yield* presence.subscribe("lobby")
      const ada = yield* Scope.make()
      yield* presence.join("lobby", "Ada").pipe(Scope.provide(ada))
      yield* presence.join("lobby", "Bob")
      yield* presence.join("other", "Ada") // another room: no clash
      expect(yield* presence.members("lobby")).toEqual(["Ada", "Bob"])

      const taken = yield* Effect.flip(presence.join("lobby", "ADA"))
      expect(taken).toBeInstanceOf(Presence.NameTakenError)
      expect(taken.message).toBe("the name ADA is taken in lobby")

      yield* Scope.close(ada, Exit.void)
      expect(yield* presence.members("lobby")).toEqual(["Bob"])
      yield* presence.join("lobby", "ada")
      expect(yield* presence.members("lobby")).toEqual(["Bob", "ada"])
      expect(yield* Queue.clear(events)).toEqual([
        { _tag: "Joined", room: "lobby", name: "Ada" },
        { _tag: "Joined", room: "lobby", name: "Bob" },
        { _tag: "Left", room: "lobby", name: "Ada" },
        { _tag: "Joined", room: "lobby", name: "ada" }
      ])
    }).pipe(Effect.scoped))

  it.effect("a subscriber that never reads keeps only the newest events (bounded)", () =>
    Effect.gen(function*() {
      const presence = Presence.makeMemory()
      const events = yield* presence.subscribe("big")
      for (let i = 0; i < Presence.eventQueueCapacity + 10; i++) yield* presence.join("big", `m${i}`)
      const kept = yield* Queue.clear(events)
      expect(kept.length).toBe(Presence.eventQueueCapacity)
      expect(kept[0]).toEqual({ _tag: "Joined", room: "big", name: "m10" })
    }).pipe(Effect.scoped))
})
