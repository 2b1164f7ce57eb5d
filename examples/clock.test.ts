import { describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Broker } from "wsreactor"
import * as Testing from "wsreactor/testing"
import { app } from "./chat.ts"

// Close connections silent for a minute: TestClock moves the time, nothing really waits.
const TestApp = Layer.unwrap(
  Effect.map(app, (app) => Testing.layer(app, { idleTimeoutMs: 60_000, heartbeatIntervalMs: 0 }))
).pipe(Layer.provide(Broker.layerMemory))

describe("idle timeout", () => {
  it.effect("a message restarts the minute; a silent minute closes with 1001", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const client = yield* server.connect({ path: "/echo" })
      yield* Testing.settle // the connection is running before the clock moves
      yield* TestClock.adjust("50 seconds")
      yield* client.sendText("still here")
      yield* client.expectText("still here")
      yield* TestClock.adjust("50 seconds") // 100 s after connecting, 50 s of silence: still open
      yield* client.ping()
      yield* client.expectPong()
      yield* TestClock.adjust("10 seconds")
      yield* client.expectClose(1001)
    }).pipe(Effect.provide(TestApp)))
})
