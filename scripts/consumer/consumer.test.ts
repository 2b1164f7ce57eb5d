// The test kit from the installed package, under the scratch app's own vitest.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { Router } from "wsreactor"
import * as Testing from "wsreactor/testing"

const app = Router.make([Router.ws("/echo", (conn) => conn.messages.pipe(Stream.runForEach(conn.send)))])

describe("wsreactor/testing from the packed tarball", () => {
  it.effect("echoes a text message and closes cleanly", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const client = yield* server.connect({ path: "/echo" })
      yield* client.sendText("hello")
      yield* client.expectText("hello")
      yield* client.close(1000)
      yield* client.expectClose(1000)
    }).pipe(Effect.provide(Testing.layer(app))))

  it.effect("a bad option fails at once with a typed error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.provide(Effect.service(Testing.TestServer), Testing.layer(app, { maxMessageSize: 0 }))
      )
      expect(error._tag).toBe("InvalidOptionsError")
    }))
})
