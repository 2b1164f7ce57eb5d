import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Testing from "wsreactor/testing"
import { withMetrics } from "./metrics.ts"

const TestApp = Layer.unwrap(Effect.map(withMetrics, ({ app, hooks }) => Testing.layer(app, { hooks })))

describe("metrics", () => {
  it.effect("GET /metrics counts the connection and its messages", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const client = yield* server.connect({ path: "/echo" })
      yield* client.sendText("one")
      yield* client.expectText("one")
      const { status, body } = yield* server.request({ path: "/metrics" })
      expect(status).toBe(200)
      expect(body).toMatch(/^wsreactor_connections_open(\{[^}]*\})? 1$/m)
      expect(body).toMatch(/^wsreactor_messages_in_total(\{[^}]*\})? [1-9]/m)
    }).pipe(Effect.provide(TestApp)))
})
