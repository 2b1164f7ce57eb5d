/**
 * `Client.reconnecting` against a `ws` server that is stopped and started
 * again on the same port: the state goes Open → Reconnecting → Open, `onOpen`
 * runs again, messages sent while down are buffered up to the bound and sent
 * in order after `onOpen`, and the schedule decides when to give up.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type { AddressInfo } from "node:net"
import { WebSocketServer } from "ws"
import * as Client from "../../src/services/Client.ts"
import type * as Message from "../../src/services/Message.ts"

const bounded = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.timeout(self, "5 seconds")

/** A `ws` echo server; `received` logs every message it got, in order. */
const startWs = (port: number, received: Array<string>) =>
  Effect.callback<WebSocketServer>((resume) => {
    const wss = new WebSocketServer({ port, host: "127.0.0.1" })
    wss.on("connection", (ws) =>
      ws.on("message", (data) => {
        received.push(String(data))
        ws.send(String(data))
      }))
    wss.once("listening", () => resume(Effect.succeed(wss)))
  })

const stopWs = (wss: WebSocketServer) =>
  Effect.callback<void>((resume) => {
    for (const client of wss.clients) client.terminate()
    wss.close(() => resume(Effect.void))
  })

const waitFor = (client: Client.ReconnectingClient, tag: Client.ConnectionState["_tag"]) =>
  bounded(SubscriptionRef.changes(client.state).pipe(Stream.filter((s) => s._tag === tag), Stream.runHead, Effect.map(Option.getOrThrow)))

const text = (m: Message.Message) => (m._tag === "Text" ? m.text : "<binary>")

describe("Client.reconnecting", () => {
  it.live("survives a server restart: onOpen again, buffered sends in order, bounded buffer", () =>
    Effect.scoped(Effect.gen(function*() {
      const received: Array<string> = []
      let server = yield* startWs(0, received)
      const port = (server.address() as AddressInfo).port
      yield* Effect.addFinalizer(() => stopWs(server))
      let opened = 0
      const client = yield* Client.reconnecting(`ws://127.0.0.1:${port}/`, {
        schedule: Schedule.spaced("50 millis"),
        bufferWhileDown: 2,
        onOpen: (conn) => Effect.suspend(() => conn.send(`hello ${++opened}`))
      })
      const collected = yield* client.messages.pipe(Stream.map(text), Stream.take(5), Stream.runCollect, Effect.forkScoped)
      yield* waitFor(client, "Open")
      yield* client.send("a")
      yield* bounded(Effect.sync(() => received.length).pipe(Effect.repeat({ until: (n) => n >= 2, schedule: Schedule.spaced("10 millis") })))

      yield* stopWs(server)
      const down = yield* waitFor(client, "Reconnecting")
      expect(down._tag === "Reconnecting" && down.cause._tag).toBe("Disconnected")
      yield* client.send("b")
      yield* client.send("c")
      const full = yield* Effect.flip(client.send("d"))
      expect(full).toMatchObject({ _tag: "ClientDownError", buffered: 2, stopped: false })
      // A few attempts fail while the port is closed.
      yield* Effect.sleep("150 millis")

      server = yield* startWs(port, received)
      yield* waitFor(client, "Open")
      expect(opened).toBe(2)
      expect(yield* bounded(Fiber.join(collected))).toEqual(["hello 1", "a", "hello 2", "b", "c"])
      expect(received).toEqual(["hello 1", "a", "hello 2", "b", "c"])

      yield* client.close()
      expect((yield* SubscriptionRef.get(client.state))._tag).toBe("Closed")
      expect(yield* bounded(Stream.runCollect(client.messages))).toEqual([])
      const afterClose = yield* Effect.flip(client.send("late"))
      expect(afterClose).toMatchObject({ _tag: "ClientDownError", stopped: true })
    })))

  it.live("stops when the schedule gives up, with the last failure as the cause", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* startWs(0, [])
      const port = (server.address() as AddressInfo).port
      yield* stopWs(server) // nobody listens there now
      const client = yield* Client.reconnecting(`ws://127.0.0.1:${port}/`, { schedule: Schedule.recurs(2) })
      yield* bounded(client.closed)
      const state = yield* SubscriptionRef.get(client.state)
      expect(state._tag).toBe("Closed")
      if (state._tag === "Closed" && state.cause?._tag === "Failed") {
        expect((state.cause.error as Client.ConnectError)._tag).toBe("ConnectError")
      } else expect.unreachable(`unexpected state ${JSON.stringify(state)}`)
    })))

  it.effect("the default schedule: exponential from 100 ms with jitter, capped at 30 s", () =>
    Effect.gen(function*() {
      const step = yield* Schedule.toStep(Client.defaultReconnectSchedule)
      const delays: Array<number> = []
      for (let i = 0; i < 14; i++) {
        const [, delay] = yield* step(i * 1000, { _tag: "Failed", error: "x" })
        delays.push(Duration.toMillis(delay))
      }
      delays.slice(0, 8).forEach((d, i) => {
        const base = 100 * 2 ** i
        expect(d).toBeGreaterThanOrEqual(Math.min(base * 0.8, 30_000) - 1)
        expect(d).toBeLessThanOrEqual(Math.min(base * 1.2, 30_000) + 1)
      })
      expect(delays.slice(10)).toEqual([30_000, 30_000, 30_000, 30_000])
    }))

  it.live("bad options fail at once, typed, instead of being retried", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(Client.reconnecting("ftp://x/", {})))
      expect(error._tag).toBe("ClientOptionsError")
      const bound = yield* Effect.flip(Effect.scoped(Client.reconnecting("ws://x/", { bufferWhileDown: -1 })))
      expect(bound._tag).toBe("ClientOptionsError")
    }))
})
