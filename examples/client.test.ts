import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Stream } from "effect"
import { TestClock } from "effect/testing"
import { Broker, Client } from "wsreactor"
import * as Testing from "wsreactor/testing"
import { app } from "./chat.ts"

// The server closes connections that send no message for a minute.
const TestApp = Layer.unwrap(Effect.map(app, (app) => Testing.layer(app, { idleTimeoutMs: 60_000 }))).pipe(
  Layer.provide(Broker.layerMemory)
)

describe("the client against the test server", () => {
  it.effect("a message comes back; a silent minute of TestClock time closes with 1001", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      // `connector` runs the real client in memory: any host works, the path reaches the app.
      const conn = yield* Client.connect("ws://test/room/lobby", { connector: server.connector })
      yield* conn.send(JSON.stringify({ text: "hi" }))
      const [said] = yield* conn.messages.pipe(Stream.take(1), Stream.runCollect)
      expect(said).toMatchObject({ _tag: "Text", text: `{"room":"lobby","text":"hi"}` })
      yield* TestClock.adjust("1 minute") // nothing really waits
      expect(yield* conn.closed).toMatchObject({ code: 1001, initiatedBy: "peer" })
    }).pipe(Effect.scoped, Effect.provide(TestApp)))
})
