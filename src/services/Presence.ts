/**
 * Who is in a room (a chat room, a document), seen from any node. A member
 * joins for the life of a scope (a connection's, typically) and leaves when it
 * closes; names are unique per room, case-insensitively. Joins and leaves
 * reach every subscriber of the room's events.
 *
 * {@link layerMemory} serves one process; `layers/RedisPresence.ts` many
 * processes and machines (members kept in Redis with an expiry that live nodes
 * refresh, so a crashed node's members leave within a bounded time).
 *
 * @example
 * const room = Effect.gen(function*() {
 *   const presence = yield* Presence
 *   const events = yield* presence.subscribe("lobby") // Joined / Left from any node
 *   yield* presence.join("lobby", "Ada") // fails with NameTakenError if someone is "ada" already
 *   const names = yield* presence.members("lobby") // ["Ada", ...] in join order
 * }).pipe(Effect.scoped)
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"

/** A member joined or left a room (on any node; `Left` also when a crashed node's members expired). */
export interface PresenceEvent {
  readonly _tag: "Joined" | "Left"
  readonly room: string
  readonly name: string
}

/** Someone in the room already has this name (compared case-insensitively). */
export class NameTakenError extends Data.TaggedError("NameTakenError")<{
  readonly room: string
  readonly name: string
}> {
  override get message(): string {
    return `the name ${this.name} is taken in ${this.room}`
  }
}

/** Events kept per subscriber before the oldest are dropped (a subscriber that stopped reading). */
export const eventQueueCapacity = 1024

export class Presence extends Context.Service<Presence, {
  /** Be in `room` as `name` until the current scope closes. */
  readonly join: (room: string, name: string) => Effect.Effect<void, NameTakenError, Scope.Scope>
  /** The names in `room`, in join order. */
  readonly members: (room: string) => Effect.Effect<ReadonlyArray<string>>
  /** Joins and leaves in `room` from now until the scope closes (bounded: oldest dropped when not read). */
  readonly subscribe: (room: string) => Effect.Effect<Queue.Dequeue<PresenceEvent>, never, Scope.Scope>
}>()("wsreactor/Presence") {}

/**
 * Listeners per room: the part both implementations share.
 *
 * @example
 * const listeners = Presence.makeListeners()
 * listeners.emit({ _tag: "Joined", room: "lobby", name: "Ada" })
 */
export const makeListeners = () => {
  const rooms = new Map<string, Set<Queue.Queue<PresenceEvent>>>()
  return {
    rooms,
    /** A queue for `room`'s events; `onFirst`/`onLast` when the room gains its first / loses its last listener. */
    subscribe: (room: string, onFirst?: () => void, onLast?: () => void) =>
      Effect.acquireRelease(
        Effect.flatMap(Queue.sliding<PresenceEvent>(eventQueueCapacity), (queue) =>
          Effect.sync(() => {
            let set = rooms.get(room)
            if (set === undefined) {
              rooms.set(room, set = new Set())
              onFirst?.()
            }
            set.add(queue)
            return queue
          })),
        (queue) =>
          Effect.andThen(
            Effect.sync(() => {
              const set = rooms.get(room)
              set?.delete(queue)
              if (set?.size === 0) {
                rooms.delete(room)
                onLast?.()
              }
            }),
            Queue.shutdown(queue)
          )
      ).pipe(Effect.map((queue): Queue.Dequeue<PresenceEvent> => queue)),
    emit: (event: PresenceEvent) => {
      for (const queue of rooms.get(event.room) ?? []) Queue.offerUnsafe(queue, event)
    }
  }
}

/**
 * Presence for one process.
 *
 * @example
 * const presence = Presence.makeMemory()
 */
export const makeMemory = (): Presence["Service"] => {
  // room → join token → name; a Map keeps join order.
  const rooms = new Map<string, Map<symbol, string>>()
  const listeners = makeListeners()
  return Presence.of({
    join: (room, name) =>
      Effect.acquireRelease(
        Effect.suspend(() => {
          const members = rooms.get(room) ?? new Map<symbol, string>()
          const wanted = name.toLowerCase()
          for (const other of members.values()) {
            if (other.toLowerCase() === wanted) return Effect.fail(new NameTakenError({ room, name }))
          }
          const token = Symbol(name)
          members.set(token, name)
          rooms.set(room, members)
          listeners.emit({ _tag: "Joined", room, name })
          return Effect.succeed(token)
        }),
        (token) =>
          Effect.sync(() => {
            const members = rooms.get(room)
            if (members?.delete(token) !== true) return
            if (members.size === 0) rooms.delete(room)
            listeners.emit({ _tag: "Left", room, name })
          })
      ).pipe(Effect.asVoid),
    members: (room) => Effect.sync(() => [...(rooms.get(room)?.values() ?? [])]),
    subscribe: (room) => listeners.subscribe(room)
  })
}

/** In-process presence Layer. */
export const layerMemory: Layer.Layer<Presence> = Layer.sync(Presence, makeMemory)
