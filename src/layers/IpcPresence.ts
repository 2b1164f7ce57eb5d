/**
 * `Presence` for the workers of one `--workers` cluster without Redis: the
 * primary holds every room's members ({@link makeRelay}) and the workers ask
 * it over the cluster's IPC channel. Names are unique across workers; joins
 * and leaves go to every worker; when a worker dies, the primary removes its
 * members at once and announces their `Left`.
 *
 * If the primary does not answer within `timeoutMs` (it is gone, and this
 * worker is about to be stopped), a join is admitted and `members` answers
 * with this worker's own members.
 *
 * @example
 * // in a cluster worker
 * program.pipe(Effect.provide(IpcPresence.layer))
 */
import type { Worker } from "node:cluster"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { makeListeners, NameTakenError, Presence } from "../services/Presence.ts"

type Request =
  | { readonly wsreactor: "presence-join"; readonly req: number; readonly room: string; readonly name: string }
  | { readonly wsreactor: "presence-leave"; readonly room: string; readonly token: number }
  | { readonly wsreactor: "presence-members"; readonly req: number; readonly room: string }
type Reply =
  | { readonly wsreactor: "presence-reply"; readonly req: number; readonly ok: boolean; readonly token?: number; readonly names?: ReadonlyArray<string> }
  | { readonly wsreactor: "presence-event"; readonly room: string; readonly tag: "Joined" | "Left"; readonly name: string }

const isMessage = <A extends { readonly wsreactor: string }>(value: unknown, prefix: string): value is A =>
  typeof value === "object" && value !== null && typeof (value as { wsreactor?: unknown }).wsreactor === "string" &&
  (value as { wsreactor: string }).wsreactor.startsWith(prefix)

/**
 * The primary's side: the members of every room, in join order.
 *
 * @example
 * const presence = IpcPresence.makeRelay(() => liveWorkers)
 * cluster.on("fork", presence.attach)
 */
export const makeRelay = (live: () => Iterable<Worker>) => {
  const rooms = new Map<string, Map<number, { readonly worker: Worker; readonly name: string }>>()
  let nextToken = 0
  const broadcast = (event: Reply) => {
    for (const worker of live()) if (worker.isConnected()) worker.send(event)
  }
  const remove = (room: string, token: number) => {
    const members = rooms.get(room)
    const member = members?.get(token)
    if (members === undefined || member === undefined) return
    members.delete(token)
    if (members.size === 0) rooms.delete(room)
    broadcast({ wsreactor: "presence-event", room, tag: "Left", name: member.name })
  }
  const attach = (worker: Worker) => {
    const reply = (message: Reply) => {
      if (worker.isConnected()) worker.send(message)
    }
    worker.on("message", (message: unknown) => {
      if (!isMessage<Request>(message, "presence-")) return
      switch (message.wsreactor) {
        case "presence-join": {
          const members = rooms.get(message.room) ?? new Map()
          const wanted = message.name.toLowerCase()
          for (const member of members.values()) {
            if (member.name.toLowerCase() === wanted) return reply({ wsreactor: "presence-reply", req: message.req, ok: false })
          }
          const token = nextToken++
          members.set(token, { worker, name: message.name })
          rooms.set(message.room, members)
          reply({ wsreactor: "presence-reply", req: message.req, ok: true, token })
          return broadcast({ wsreactor: "presence-event", room: message.room, tag: "Joined", name: message.name })
        }
        case "presence-leave":
          return remove(message.room, message.token)
        case "presence-members": {
          const names = [...(rooms.get(message.room)?.values() ?? [])].map((m) => m.name)
          return reply({ wsreactor: "presence-reply", req: message.req, ok: true, names })
        }
      }
    })
    // A dead worker's members leave now, not after an expiry: the primary saw it die.
    worker.once("exit", () => {
      for (const [room, members] of [...rooms]) {
        for (const [token, member] of [...members]) if (member.worker === worker) remove(room, token)
      }
    })
  }
  return { attach, rooms }
}

/**
 * The worker's side, in the current scope.
 *
 * @example
 * const presence = yield* IpcPresence.make()
 */
export const make = (timeoutMs = 2_000): Effect.Effect<Presence["Service"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const listeners = makeListeners()
    const waiting = new Map<number, (reply: Reply & { readonly wsreactor: "presence-reply" }) => void>()
    // This worker's own members, for when the primary cannot be asked.
    const own = new Map<string, Map<symbol, string>>()
    let nextReq = 0
    const onMessage = (message: unknown) => {
      if (!isMessage<Reply>(message, "presence-")) return
      if (message.wsreactor === "presence-event") listeners.emit({ _tag: message.tag, room: message.room, name: message.name })
      else {
        waiting.get(message.req)?.(message)
        waiting.delete(message.req)
      }
    }
    process.on("message", onMessage)
    yield* Effect.addFinalizer(() => Effect.sync(() => process.off("message", onMessage)))
    const send = (message: Request) => {
      if (process.send !== undefined && process.connected) process.send(message)
    }
    const ask = (request: (req: number) => Request) =>
      Effect.callback<(Reply & { readonly wsreactor: "presence-reply" }) | undefined>((resume) => {
        const req = nextReq++
        waiting.set(req, (reply) => resume(Effect.succeed(reply)))
        send(request(req))
        return Effect.sync(() => waiting.delete(req))
      }).pipe(Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => Effect.succeed(undefined) }))

    return Presence.of({
      join: (room, name) =>
        Effect.acquireRelease(
          Effect.gen(function*() {
            const reply = yield* ask((req) => ({ wsreactor: "presence-join", req, room, name }))
            if (reply !== undefined && !reply.ok) return yield* Effect.fail(new NameTakenError({ room, name }))
            const mine = Symbol(name)
            const members = own.get(room) ?? new Map<symbol, string>()
            members.set(mine, name)
            own.set(room, members)
            return { token: reply?.token, mine }
          }),
          ({ mine, token }) =>
            Effect.sync(() => {
              const members = own.get(room)
              members?.delete(mine)
              if (members?.size === 0) own.delete(room)
              if (token !== undefined) send({ wsreactor: "presence-leave", room, token })
            })
        ).pipe(Effect.asVoid),
      members: (room) =>
        Effect.map(
          ask((req) => ({ wsreactor: "presence-members", req, room })),
          (reply) => reply?.names ?? [...(own.get(room)?.values() ?? [])]
        ),
      subscribe: (room) => listeners.subscribe(room)
    })
  })

/** The worker-side presence as a Layer. */
export const layer: Layer.Layer<Presence> = Layer.effect(Presence, make())
