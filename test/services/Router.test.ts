// Router: path patterns, HTTP answers (404/405/426, HEAD), subprotocol choice and
// middleware order, through the in-memory transport (wsreactor/testing).
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as Handshake from "../../src/domain/Handshake.ts"
import type { Connection } from "../../src/services/Connection.ts"
import * as Router from "../../src/services/Router.ts"
import * as Testing from "../../src/testing.ts"

const echo = (conn: Connection) => conn.messages.pipe(Stream.runForEach((m) => conn.send(m)))

describe("compilePath", () => {
  it("literal segments match exactly", () => {
    const match = Router.compilePath("/chat/lobby")
    expect(match("/chat/lobby")).toEqual({})
    expect(match("/chat/other")).toBeUndefined()
    expect(match("/chat")).toBeUndefined()
    expect(match("/chat/lobby/extra")).toBeUndefined()
  })

  it("`:param` captures one segment, URL-decoded", () => {
    const match = Router.compilePath("/rooms/:room/users/:user")
    expect(match("/rooms/lobby/users/ada")).toEqual({ room: "lobby", user: "ada" })
    expect(match("/rooms/caf%C3%A9%20bar/users/x%2Fy")).toEqual({ room: "café bar", user: "x/y" })
    expect(match("/rooms/lobby/users")).toBeUndefined()
  })

  it("a malformed percent-escape in a parameter does not match (no throw)", () => {
    expect(Router.compilePath("/rooms/:room")("/rooms/%E0%A4%A")).toBeUndefined()
  })

  it("`*` matches the rest (possibly empty) as param `*`", () => {
    const match = Router.compilePath("/static/*")
    expect(match("/static/css/site.css")).toEqual({ "*": "css/site.css" })
    expect(match("/static")).toEqual({ "*": "" })
    expect(match("/other/site.css")).toBeUndefined()
  })

  it("trailing and doubled slashes are ignored", () => {
    const match = Router.compilePath("/echo")
    expect(match("/echo/")).toEqual({})
    expect(match("//echo")).toEqual({})
    expect(Router.compilePath("/echo/")("/echo")).toEqual({})
    expect(Router.compilePath("/")("/")).toEqual({})
    expect(Router.compilePath("/")("/x")).toBeUndefined()
  })
})

describe("chooseProtocol", () => {
  it("follows the server's order of preference, not the client's", () => {
    expect(Router.chooseProtocol(["v2", "v1"], ["v1", "v2"])).toBe("v2")
    expect(Router.chooseProtocol(["v1"], ["v2", "v1"])).toBe("v1")
    expect(Router.chooseProtocol(["v1"], ["v2"])).toBeUndefined()
    expect(Router.chooseProtocol([], ["v1"])).toBeUndefined()
  })
})

describe("HTTP answers", () => {
  const app = Router.make([
    Router.ws("/ws", echo),
    Router.get("/healthz", () => Effect.succeed(Router.json({ ok: true }))),
    Router.http("POST", "/items/:id", (ctx) => Effect.succeed(Router.text(`posted ${ctx.params["id"]}`)))
  ])
  const layer = Testing.layer(app)

  it.effect("a GET route answers, with params", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const reply = yield* server.request({ path: "/healthz" })
      expect(reply.status).toBe(200)
      expect(JSON.parse(reply.body)).toEqual({ ok: true })
      const posted = yield* server.request({ method: "POST", path: "/items/42" })
      expect(posted).toMatchObject({ status: 200, body: "posted 42" })
    }).pipe(Effect.provide(layer)))

  it.effect("unknown HTTP path → 404", () =>
    Effect.gen(function*() {
      const reply = yield* (yield* Testing.TestServer).request({ path: "/nope" })
      expect(reply.status).toBe(404)
    }).pipe(Effect.provide(layer)))

  it.effect("unknown WebSocket path → 404 at upgrade", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.flip((yield* Testing.TestServer).connect({ path: "/nope" }))
      expect(failed).toMatchObject({ _tag: "HandshakeFailed", status: 404 })
    }).pipe(Effect.provide(layer)))

  it.effect("an upgrade on an HTTP-only path → 404 (no WebSocket route there)", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.flip((yield* Testing.TestServer).connect({ path: "/healthz" }))
      expect(failed).toMatchObject({ _tag: "HandshakeFailed", status: 404 })
    }).pipe(Effect.provide(layer)))

  it.effect("known HTTP path, other method → 405 with Allow (RFC 9110 §15.5.6)", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const reply = yield* server.request({ method: "DELETE", path: "/healthz" })
      expect(reply.status).toBe(405)
      expect(Handshake.header(reply, "allow")).toBe("GET, HEAD")
      const post = yield* server.request({ method: "GET", path: "/items/1" })
      expect(post.status).toBe(405)
      expect(Handshake.header(post, "allow")).toBe("POST")
    }).pipe(Effect.provide(layer)))

  it.effect("plain GET on a WebSocket-only path → 426 Upgrade Required (RFC 6455 §4.2.2)", () =>
    Effect.gen(function*() {
      const reply = yield* (yield* Testing.TestServer).request({ path: "/ws" })
      expect(reply.status).toBe(426)
      expect(Handshake.header(reply, "upgrade")).toBe("websocket")
    }).pipe(Effect.provide(layer)))

  it.effect("HEAD is served by the GET route, without a body (RFC 9110 §9.3.2)", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const get = yield* server.request({ path: "/healthz" })
      const head = yield* server.request({ method: "HEAD", path: "/healthz" })
      expect(head.status).toBe(200)
      expect(head.body).toBe("")
      // Content-Length, if sent, is the GET body's length (RFC 9110 §8.6).
      expect(Handshake.header(head, "content-length")).toBe(String(get.body.length))
    }).pipe(Effect.provide(layer)))
})

describe("WebSocket routes", () => {
  it.effect("route parameters reach the connection", () =>
    Effect.gen(function*() {
      const seen = yield* Deferred.make<Connection>()
      const app = Router.make([
        Router.ws("/chat/:room", (conn) => Effect.andThen(Deferred.succeed(seen, conn), echo(conn))),
        Router.ws("/files/*", echo)
      ])
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect({ path: "/chat/caf%C3%A9?x=1" })
        const conn = yield* Deferred.await(seen)
        expect(conn.params).toEqual({ room: "café" })
        expect(conn.path).toBe("/chat/caf%C3%A9")
        expect(conn.query.get("x")).toBe("1")
        yield* client.sendText("hi")
        yield* client.expectText("hi")
      }).pipe(Effect.provide(Testing.layer(app)))
    }))

  it.effect("the first matching route wins", () =>
    Effect.gen(function*() {
      const app = Router.make([
        Router.ws("/a/special", (conn) => conn.send("special")),
        Router.ws("/a/:x", (conn) => conn.send(`param ${conn.params["x"]}`))
      ])
      yield* Effect.gen(function*() {
        const server = yield* Testing.TestServer
        const special = yield* server.connect({ path: "/a/special" })
        yield* special.expectText("special")
        const other = yield* server.connect({ path: "/a/b" })
        yield* other.expectText("param b")
      }).pipe(Effect.provide(Testing.layer(app)))
    }))
})

describe("subprotocol choice", () => {
  const report = (conn: Connection) => conn.send(`protocol=${conn.protocol ?? "none"}`)
  const app = Router.make([
    Router.ws("/strict", report, { protocols: ["chat.v2", "chat.v1"] }),
    Router.ws("/lenient", report, { protocols: ["chat.v2", "chat.v1"], onNoProtocol: "accept" }),
    Router.ws("/any", report)
  ])
  const layer = Testing.layer(app)

  it.effect("the server's preference wins over the client's order", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({ path: "/strict", protocols: ["chat.v1", "chat.v2"] })
      expect(client.protocol).toBe("chat.v2")
      yield* client.expectText("protocol=chat.v2")
    }).pipe(Effect.provide(layer)))

  it.effect("only one acceptable: that one", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({ path: "/strict", protocols: ["x", "chat.v1"] })
      expect(client.protocol).toBe("chat.v1")
      yield* client.expectText("protocol=chat.v1")
    }).pipe(Effect.provide(layer)))

  it.effect("none acceptable → 400 by default", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.flip((yield* Testing.TestServer).connect({ path: "/strict", protocols: ["x", "y"] }))
      expect(failed).toMatchObject({ _tag: "HandshakeFailed", status: 400 })
      expect(failed._tag === "HandshakeFailed" && failed.body).toContain("chat.v2")
    }).pipe(Effect.provide(layer)))

  it.effect("none acceptable with onNoProtocol: \"accept\" → accepted without a subprotocol", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({ path: "/lenient", protocols: ["x"] })
      expect(client.protocol).toBeUndefined()
      yield* client.expectText("protocol=none")
    }).pipe(Effect.provide(layer)))

  it.effect("a client offering none is accepted without one", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({ path: "/strict" })
      expect(client.protocol).toBeUndefined()
      yield* client.expectText("protocol=none")
    }).pipe(Effect.provide(layer)))

  it.effect("a route that declares none ignores the client's offer", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({ path: "/any", protocols: ["x"] })
      expect(client.protocol).toBeUndefined()
      yield* client.expectText("protocol=none")
    }).pipe(Effect.provide(layer)))
})

describe("middleware order", () => {
  const recordingUpgrade = (log: Array<string>, name: string): Router.UpgradeMiddleware<never> => (_, next) =>
    Effect.sync(() => log.push(`${name}>`)).pipe(
      Effect.andThen(next),
      Effect.tap(() => Effect.sync(() => log.push(`<${name}`)))
    )
  const recordingConnection = (log: Array<string>, name: string): Router.ConnectionMiddleware<never> => (handler) => (conn) =>
    Effect.sync(() => log.push(`${name}>`)).pipe(
      Effect.andThen(handler(conn)),
      Effect.ensuring(Effect.sync(() => log.push(`<${name}`)))
    )

  it.effect("global before route; first listed is outermost (upgrade and connection)", () =>
    Effect.gen(function*() {
      const upgradeLog: Array<string> = []
      const connectionLog: Array<string> = []
      const done = yield* Deferred.make<void>()
      const app = Router.make([
        Router.ws("/ws", (conn) => Effect.andThen(Effect.sync(() => connectionLog.push("handler")), conn.send("ok")), {
          upgrade: [recordingUpgrade(upgradeLog, "r1"), recordingUpgrade(upgradeLog, "r2")],
          connection: [
            recordingConnection(connectionLog, "r1"),
            (handler) => (conn) => Effect.ensuring(recordingConnection(connectionLog, "r2")(handler)(conn), Deferred.succeed(done, undefined))
          ]
        })
      ], {
        upgrade: [recordingUpgrade(upgradeLog, "g1"), recordingUpgrade(upgradeLog, "g2")],
        connection: [recordingConnection(connectionLog, "g1"), recordingConnection(connectionLog, "g2")]
      })
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect({ path: "/ws" })
        yield* client.expectText("ok")
        yield* Deferred.await(done)
        expect(upgradeLog).toEqual(["g1>", "g2>", "r1>", "r2>", "<r2", "<r1", "<g2", "<g1"])
        expect(connectionLog.slice(0, 5)).toEqual(["g1>", "g2>", "r1>", "r2>", "handler"])
      }).pipe(Effect.provide(Testing.layer(app)))
    }))

  it.effect("an upgrade middleware that answers stops the rest (and the route)", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const stop: Router.UpgradeMiddleware<never> = () =>
        Effect.sync(() => {
          log.push("stop")
          return { _tag: "Reject", response: Router.text("teapot\n", 418) } as const
        })
      const app = Router.make([
        Router.ws("/ws", (conn) => Effect.sync(() => log.push("handler")).pipe(Effect.andThen(echo(conn))), {
          upgrade: [recordingUpgrade(log, "r1")]
        })
      ], { upgrade: [recordingUpgrade(log, "g1"), stop, recordingUpgrade(log, "g3")] })
      yield* Effect.gen(function*() {
        const failed = yield* Effect.flip((yield* Testing.TestServer).connect({ path: "/ws" }))
        expect(failed).toMatchObject({ _tag: "HandshakeFailed", status: 418, body: "teapot\n" })
        expect(log).toEqual(["g1>", "stop", "<g1"])
      }).pipe(Effect.provide(Testing.layer(app)))
    }))

  it.effect("a connection middleware that closes with a code stops the rest (and the handler)", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const closer: Router.ConnectionMiddleware<never> = () => (conn) =>
        Effect.andThen(Effect.sync(() => log.push("closer")), conn.close(4001, "no"))
      const app = Router.make([
        Router.ws("/ws", (conn) => Effect.sync(() => log.push("handler")).pipe(Effect.andThen(echo(conn))), {
          connection: [recordingConnection(log, "r1")]
        })
      ], { connection: [recordingConnection(log, "g1"), closer] })
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect({ path: "/ws" })
        yield* client.expectClose(4001)
        expect(log).toEqual(["g1>", "closer", "<g1"])
      }).pipe(Effect.provide(Testing.layer(app)))
    }))
})
