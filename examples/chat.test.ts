import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Broker } from "wsreactor"
import * as Testing from "wsreactor/testing"
import { app } from "./chat.ts"

const Said = Schema.Struct({ room: Schema.String, text: Schema.String })
const TestApp = Layer.unwrap(Effect.map(app, (app) => Testing.layer(app))).pipe(
  Layer.provide(Broker.layerMemory)
)

describe("chat", () => {
  it.effect("a message reaches everyone in the room", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const ada = yield* server.connect({ path: "/room/lobby" })
      const bob = yield* server.connect({ path: "/room/lobby" })
      yield* ada.sendText(JSON.stringify({ text: "hi" }))
      expect(yield* bob.expectJson(Said)).toEqual({ room: "lobby", text: "hi" })
      expect(yield* ada.expectJson(Said)).toEqual({ room: "lobby", text: "hi" })
    }).pipe(Effect.provide(TestApp)))

  it.effect("a message that is not a Say closes with 1007", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const client = yield* server.connect({ path: "/room/lobby" })
      yield* client.sendText("not json")
      yield* client.expectClose(1007)
    }).pipe(Effect.provide(TestApp)))
})
