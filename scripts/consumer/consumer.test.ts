// The test kit from the installed package, under the scratch app's own vitest.
import { describe, it } from "@effect/vitest"
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
})
