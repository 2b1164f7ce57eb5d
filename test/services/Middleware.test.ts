// The shipped middleware, each on its own: upgrade-time decisions (origin, auth,
// per-IP limit, logging) and connection-time wrappers (rate limit on TestClock, tracing).
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Stream from "effect/Stream"
import { TestClock } from "effect/testing"
import * as Handshake from "../../src/domain/Handshake.ts"
import type { Connection } from "../../src/services/Connection.ts"
import * as Middleware from "../../src/services/Middleware.ts"
import type { Peer, UpgradeDecision } from "../../src/services/Reactor.ts"
import * as Router from "../../src/services/Router.ts"
import * as Testing from "../../src/testing.ts"

const echo = (conn: Connection) => conn.messages.pipe(Stream.runForEach((m) => conn.send(m)))

// App-level helpers: a validated upgrade request, as the reactor hands it to `app.upgrade`.
const upgradeRequest = (
  path: string,
  options: {
    readonly origin?: string
    readonly protocols?: ReadonlyArray<string>
    readonly headers?: ReadonlyArray<readonly [string, string]>
  } = {}
): Handshake.UpgradeRequest => {
  const step = Handshake.stepRequest(
    Handshake.initialRequestParser(),
    Handshake.clientRequest({ host: "test", path, key: "dGhlIHNhbXBsZSBub25jZQ==", ...options })
  )
  if (step._tag !== "Request") throw new Error(`test request did not parse: ${step._tag}`)
  const validated = Handshake.validateUpgrade(step.request)
  if (validated._tag !== "Ok") throw new Error(`test request is not a valid upgrade: ${validated.error.message}`)
  return validated.upgrade
}
const peer: Peer = { remoteAddress: "10.0.0.1", remotePort: 40000 }
const status = (decision: UpgradeDecision<unknown>) => (decision._tag === "Accept" ? 101 : decision.response.status)

describe("originAllowList", () => {
  const app = (options?: { readonly requireOrigin?: boolean }) =>
    Router.make([
      Router.ws("/ws", echo, {
        upgrade: [Middleware.originAllowList(["https://good.example", "http://localhost:8888"], options)]
      })
    ])

  it.effect("a listed origin is accepted", () =>
    Effect.gen(function*() {
      const decision = yield* app().upgrade(upgradeRequest("/ws", { origin: "https://good.example" }), peer)
      expect(status(decision)).toBe(101)
    }))

  it.effect("an unlisted origin is refused with 403", () =>
    Effect.gen(function*() {
      const decision = yield* app().upgrade(upgradeRequest("/ws", { origin: "https://evil.example" }), peer)
      expect(status(decision)).toBe(403)
      // Exact match: a prefix or another scheme is not the same origin.
      const prefix = yield* app().upgrade(upgradeRequest("/ws", { origin: "https://good.example.evil" }), peer)
      expect(status(prefix)).toBe(403)
      const scheme = yield* app().upgrade(upgradeRequest("/ws", { origin: "http://good.example" }), peer)
      expect(status(scheme)).toBe(403)
    }))

  it.effect("no Origin (a non-browser client) passes by default", () =>
    Effect.gen(function*() {
      expect(status(yield* app().upgrade(upgradeRequest("/ws"), peer))).toBe(101)
    }))

  it.effect("no Origin is refused (403) with requireOrigin", () =>
    Effect.gen(function*() {
      expect(status(yield* app({ requireOrigin: true }).upgrade(upgradeRequest("/ws"), peer))).toBe(403)
      const ok = yield* app({ requireOrigin: true }).upgrade(upgradeRequest("/ws", { origin: "http://localhost:8888" }), peer)
      expect(status(ok)).toBe(101)
    }))

  it.effect("a predicate works like a list", () =>
    Effect.gen(function*() {
      const byPredicate = Router.make([
        Router.ws("/ws", echo, { upgrade: [Middleware.originAllowList((o) => o.endsWith(".good.example"))] })
      ])
      expect(status(yield* byPredicate.upgrade(upgradeRequest("/ws", { origin: "https://a.good.example" }), peer))).toBe(101)
      expect(status(yield* byPredicate.upgrade(upgradeRequest("/ws", { origin: "https://bad.example" }), peer))).toBe(403)
    }))

  it.effect("the refusal reaches a real client as HTTP 403", () =>
    Effect.gen(function*() {
      const request = Handshake.clientRequest({
        host: "test",
        path: "/ws",
        key: "dGhlIHNhbXBsZSBub25jZQ==",
        origin: "https://evil.example"
      })
      const reply = yield* (yield* Testing.TestServer).request(request)
      expect(reply.status).toBe(403)
    }).pipe(Effect.provide(Testing.layer(app()))))
})

describe("originPolicy (cross-site WebSocket hijacking, RFC 6455 §10.2)", () => {
  // upgradeRequest sends `Host: test`.
  const app = (policy: Middleware.OriginPolicy, options?: { readonly requireOrigin?: boolean }) =>
    Router.make([Router.ws("/ws", echo, { upgrade: [Middleware.originPolicy(policy, options)] })])

  it.effect("same-origin: the Origin's host equals Host; any other site, another port or `null` gets 403", () =>
    Effect.gen(function*() {
      const decide = (origin?: string) =>
        Effect.map(app("same-origin").upgrade(upgradeRequest("/ws", origin === undefined ? {} : { origin }), peer), status)
      expect(yield* decide("http://test")).toBe(101)
      expect(yield* decide("https://test:443")).toBe(101) // a default port written out is the same origin
      expect(yield* decide("https://evil.example")).toBe(403)
      expect(yield* decide("http://test:8080")).toBe(403)
      expect(yield* decide("http://test.evil.example")).toBe(403)
      expect(yield* decide("null")).toBe(403)
      expect(yield* decide("not a url")).toBe(403)
      expect(yield* decide()).toBe(101) // no Origin: not a browser, no ambient credentials
    }))

  it.effect("sameOriginOr: listed origins pass too; requireOrigin refuses requests without one", () =>
    Effect.gen(function*() {
      const policy = { sameOriginOr: ["https://app.example"] }
      expect(status(yield* app(policy).upgrade(upgradeRequest("/ws", { origin: "https://app.example" }), peer))).toBe(101)
      expect(status(yield* app(policy).upgrade(upgradeRequest("/ws", { origin: "http://test" }), peer))).toBe(101)
      expect(status(yield* app(policy).upgrade(upgradeRequest("/ws", { origin: "https://evil.example" }), peer))).toBe(403)
      expect(status(yield* app(policy, { requireOrigin: true }).upgrade(upgradeRequest("/ws"), peer))).toBe(403)
    }))

  it.effect("over the reactor: Origin https://evil.example gets 403 whatever the Host (but its own)", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      for (const host of ["test", "localhost:8888", "evil.example:8888"]) {
        const request = Handshake.clientRequest({ host, path: "/ws", key: "dGhlIHNhbXBsZSBub25jZQ==", origin: "https://evil.example" })
        expect((yield* server.request(request)).status).toBe(403)
      }
      const client = yield* server.connect({ path: "/ws" })
      yield* client.sendText("hi")
      yield* client.expectText("hi")
    }).pipe(Effect.provide(Testing.layer(app("same-origin")))))
})

describe("auth", () => {
  const verify = (token: string) => token === "good" ? Effect.succeed({ user: "ada" }) : Effect.fail("bad token" as const)
  const whoAmI = (conn: Connection) => conn.send(JSON.stringify(Middleware.principal(conn) ?? null))
  const app = Router.make([
    Router.ws("/header", whoAmI, { upgrade: [Middleware.auth({ header: "authorization", scheme: "Bearer" }, verify)] }),
    Router.ws("/raw-header", whoAmI, { upgrade: [Middleware.auth({ header: "x-token" }, verify)] }),
    Router.ws("/cookie", whoAmI, { upgrade: [Middleware.auth({ cookie: "session", origin: "any" }, verify)] }),
    Router.ws("/query", whoAmI, { upgrade: [Middleware.auth({ query: "token" }, verify)] })
  ])
  const layer = Testing.layer(app)
  const statusOf = (options: Testing.ConnectOptions) =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const result = yield* Effect.result(server.connect(options))
      return result._tag === "Success" ? 101 : result.failure.status
    })

  it.effect("header with scheme: the token after the scheme, scheme case-insensitive", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({
        path: "/header",
        headers: [["Authorization", "bearer good"]]
      })
      // The principal `verify` returned reaches Middleware.principal(conn).
      expect(JSON.parse(yield* client.expectText())).toEqual({ user: "ada" })
      expect(yield* statusOf({ path: "/header", headers: [["Authorization", "Bearer good"]] })).toBe(101)
    }).pipe(Effect.provide(layer)))

  it.effect("header: missing → 401, other scheme → 401, bad token → 403", () =>
    Effect.gen(function*() {
      expect(yield* statusOf({ path: "/header" })).toBe(401)
      expect(yield* statusOf({ path: "/header", headers: [["Authorization", "Basic good"]] })).toBe(401)
      expect(yield* statusOf({ path: "/header", headers: [["Authorization", "Bearer "]] })).toBe(401)
      expect(yield* statusOf({ path: "/header", headers: [["Authorization", "Bearer bad"]] })).toBe(403)
    }).pipe(Effect.provide(layer)))

  it.effect("header without scheme: the whole value", () =>
    Effect.gen(function*() {
      expect(yield* statusOf({ path: "/raw-header", headers: [["X-Token", "good"]] })).toBe(101)
      expect(yield* statusOf({ path: "/raw-header", headers: [["X-Token", "Bearer good"]] })).toBe(403)
      expect(yield* statusOf({ path: "/raw-header" })).toBe(401)
    }).pipe(Effect.provide(layer)))

  it.effect("cookie: found among others; missing → 401; bad → 403", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({
        path: "/cookie",
        headers: [["Cookie", "theme=dark; session=good; other=1"]]
      })
      expect(JSON.parse(yield* client.expectText())).toEqual({ user: "ada" })
      expect(yield* statusOf({ path: "/cookie", headers: [["Cookie", "theme=dark"]] })).toBe(401)
      expect(yield* statusOf({ path: "/cookie" })).toBe(401)
      expect(yield* statusOf({ path: "/cookie", headers: [["Cookie", "session=bad"]] })).toBe(403)
    }).pipe(Effect.provide(layer)))

  it.effect("a malformed cookie value is no credential: 401, not a defect", () =>
    Effect.gen(function*() {
      expect(yield* statusOf({ path: "/cookie", headers: [["Cookie", "session=%E0%A4%A"]] })).toBe(401)
      expect(yield* statusOf({ path: "/cookie", headers: [["Cookie", "session=%"]] })).toBe(401)
      // The server is unharmed: a good cookie still works.
      expect(yield* statusOf({ path: "/cookie", headers: [["Cookie", "session=good"]] })).toBe(101)
    }).pipe(Effect.provide(layer)))

  it.effect("cookie auth checks the origin first: a cross-site page gets 403 even with the visitor's cookie", () =>
    Effect.gen(function*() {
      const guarded = Router.make([
        Router.ws("/", whoAmI, { upgrade: [Middleware.auth({ cookie: "session", origin: "same-origin" }, verify)] })
      ])
      const decide = (origin: string) =>
        Effect.map(
          guarded.upgrade(upgradeRequest("/", { origin, headers: [["Cookie", "session=good"]] }), peer),
          status
        )
      expect(yield* decide("https://evil.example")).toBe(403)
      expect(yield* decide("http://test")).toBe(101)
    }))

  it("cookie auth without an origin policy refuses to be built", () => {
    const source = { cookie: "session" } as unknown as Middleware.TokenSource
    expect(() => Middleware.auth(source, verify)).toThrow(/origin policy/)
  })

  it.effect("query: found; empty or missing → 401; bad → 403", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({ path: "/query?x=1&token=good" })
      expect(JSON.parse(yield* client.expectText())).toEqual({ user: "ada" })
      expect(yield* statusOf({ path: "/query" })).toBe(401)
      expect(yield* statusOf({ path: "/query?token=" })).toBe(401)
      expect(yield* statusOf({ path: "/query?token=bad" })).toBe(403)
    }).pipe(Effect.provide(layer)))

  it.effect("no principal without auth", () =>
    Effect.gen(function*() {
      const plain = Router.make([Router.ws("/", whoAmI)])
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* client.expectText("null")
      }).pipe(Effect.provide(Testing.layer(plain)))
    }))
})

describe("connectionLimitPerIp", () => {
  const app = () => Router.make([Router.ws("/", echo, { upgrade: [Middleware.connectionLimitPerIp(2)] })])

  it.effect("the (n+1)th connection from one IP gets 429; another IP is fine", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      yield* server.connect({ remoteAddress: "1.1.1.1" })
      yield* server.connect({ remoteAddress: "1.1.1.1" })
      const third = yield* Effect.flip(server.connect({ remoteAddress: "1.1.1.1" }))
      expect(third).toMatchObject({ _tag: "HandshakeFailed", status: 429 })
      const other = yield* server.connect({ remoteAddress: "2.2.2.2" })
      yield* other.sendText("hi")
      yield* other.expectText("hi")
    }).pipe(Effect.provide(Testing.layer(app()))))

  it.effect("after a connection ends, a new one from that IP is accepted", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const first = yield* server.connect({ remoteAddress: "1.1.1.1" })
      yield* server.connect({ remoteAddress: "1.1.1.1" })
      expect(yield* Effect.flip(server.connect({ remoteAddress: "1.1.1.1" }))).toMatchObject({ status: 429 })
      yield* first.close(1000)
      yield* first.expectClose(1000)
      yield* first.expectDisconnected
      const again = yield* server.connect({ remoteAddress: "1.1.1.1" })
      yield* again.sendText("back")
      yield* again.expectText("back")
    }).pipe(Effect.provide(Testing.layer(app()))))

  it.effect("an accept that an outer middleware turns into a refusal frees its slot", () =>
    Effect.gen(function*() {
      const limit = Middleware.connectionLimitPerIp(1)
      const refuseAfter: Router.UpgradeMiddleware<never> = (_context, next) =>
        Effect.as(next, { _tag: "Reject", response: Router.text("refused outside\n", 403) } as const)
      const shared = Router.make([
        Router.ws("/refused", echo, { upgrade: [refuseAfter, limit] }),
        Router.ws("/", echo, { upgrade: [limit] })
      ])
      yield* Effect.gen(function*() {
        const server = yield* Testing.TestServer
        for (let i = 0; i < 3; i++) {
          const refused = yield* Effect.flip(server.connect({ path: "/refused", remoteAddress: "1.1.1.1" }))
          expect(refused).toMatchObject({ status: 403 })
        }
        yield* Testing.settle
        // Without the fix the three refused upgrades hold the one slot forever: 429 here.
        const client = yield* server.connect({ path: "/", remoteAddress: "1.1.1.1" })
        yield* client.sendText("in")
        yield* client.expectText("in")
      }).pipe(Effect.provide(Testing.layer(shared)))
    }))

  it.effect("a refused upgrade (by a later middleware) is not counted", () =>
    Effect.gen(function*() {
      const refusing = Router.make([
        Router.ws("/", echo, {
          upgrade: [Middleware.connectionLimitPerIp(1), Middleware.originAllowList([], { requireOrigin: true })]
        })
      ])
      for (let i = 0; i < 3; i++) {
        expect(status(yield* refusing.upgrade(upgradeRequest("/"), peer))).toBe(403)
      }
    }))
})

describe("logging", () => {
  it.effect("logs each decision and leaves it unchanged", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const collector = Logger.make((options) => {
        lines.push((options.message as ReadonlyArray<unknown>).map(String).join(" "))
      })
      const app = Router.make([
        Router.ws("/ok", echo, { upgrade: [Middleware.logging] }),
        Router.ws("/no", echo, { upgrade: [Middleware.logging, Middleware.originAllowList([], { requireOrigin: true })] }),
        Router.ws("/proto", echo, { protocols: ["chat"], upgrade: [Middleware.logging] })
      ])
      const accepted = yield* app.upgrade(upgradeRequest("/ok"), peer).pipe(Effect.provide(Logger.layer([collector])))
      const refused = yield* app.upgrade(upgradeRequest("/no"), peer).pipe(Effect.provide(Logger.layer([collector])))
      const withProtocol = yield* app.upgrade(
        upgradeRequest("/proto", { protocols: ["chat"] }),
        peer
      ).pipe(Effect.provide(Logger.layer([collector])))
      expect(status(accepted)).toBe(101)
      expect(status(refused)).toBe(403)
      expect(status(withProtocol)).toBe(101)
      expect(lines).toEqual([
        "upgrade /ok from 10.0.0.1: 101",
        "upgrade /no from 10.0.0.1: 403",
        "upgrade /proto from 10.0.0.1: 101 (chat)"
      ])
    }))
})

describe("rateLimit (token bucket on Clock)", () => {
  const app = Router.make([
    Router.ws("/", echo, { connection: [Middleware.rateLimit({ capacity: 3, refillPerSecond: 1 })] })
  ])
  // No heartbeat pings in the way of the messages these tests read.
  const layer = Testing.layer(app, { heartbeatIntervalMs: 0 })

  it.effect("capacity 3: three messages pass, the fourth closes 1008 and never reaches the handler", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      for (const text of ["1", "2", "3", "4"]) yield* client.sendText(text)
      yield* client.expectText("1")
      yield* client.expectText("2")
      yield* client.expectText("3")
      expect(yield* client.next).toEqual({ _tag: "Close", code: 1008, reason: "rate limit exceeded" })
    }).pipe(Effect.provide(layer)))

  it.effect("refill 1/s: after 1 s one more passes, then the next is refused", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      for (const text of ["1", "2", "3"]) {
        yield* client.sendText(text)
        yield* client.expectText(text)
      }
      yield* TestClock.adjust(999)
      yield* client.sendText("early")
      expect(yield* client.next).toMatchObject({ _tag: "Close", code: 1008 })
    }).pipe(Effect.provide(layer)))

  it.effect("after TestClock.adjust(1 s), exactly one more message passes", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      for (const text of ["1", "2", "3"]) {
        yield* client.sendText(text)
        yield* client.expectText(text)
      }
      yield* TestClock.adjust(1000)
      yield* client.sendText("4")
      yield* client.expectText("4")
      yield* client.sendText("5")
      expect(yield* client.next).toMatchObject({ _tag: "Close", code: 1008 })
    }).pipe(Effect.provide(layer)))

  it.effect("the bucket never holds more than its capacity", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect()
      yield* TestClock.adjust(60_000)
      for (const text of ["1", "2", "3", "4"]) yield* client.sendText(text)
      for (const text of ["1", "2", "3"]) yield* client.expectText(text)
      expect(yield* client.next).toMatchObject({ _tag: "Close", code: 1008 })
    }).pipe(Effect.provide(layer)))

  it.effect("a custom close code", () =>
    Effect.gen(function*() {
      const custom = Router.make([
        Router.ws("/", echo, { connection: [Middleware.rateLimit({ capacity: 1, refillPerSecond: 1, closeCode: 1013 })] })
      ])
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect()
        yield* client.sendText("1")
        yield* client.sendText("2")
        yield* client.expectText("1")
        yield* client.expectClose(1013)
      }).pipe(Effect.provide(Testing.layer(custom, { heartbeatIntervalMs: 0 })))
    }))
})

describe("tracing", () => {
  it.effect("the handler runs inside a `ws.connection` span with the connection's attributes", () =>
    Effect.gen(function*() {
      const seen = yield* Deferred.make<{ name: string; attributes: ReadonlyMap<string, unknown> }>()
      const app = Router.make([
        Router.ws("/traced", (conn) =>
          Effect.gen(function*() {
            const span = yield* Effect.currentSpan
            yield* Deferred.succeed(seen, { name: span.name, attributes: span.attributes })
            yield* echo(conn)
          }), { connection: [Middleware.tracing], protocols: ["chat"] })
      ])
      yield* Effect.gen(function*() {
        const client = yield* (yield* Testing.TestServer).connect({ path: "/traced", protocols: ["chat"] })
        const { attributes, name } = yield* Deferred.await(seen)
        expect(name).toBe("ws.connection")
        expect(attributes.get("ws.path")).toBe("/traced")
        expect(attributes.get("ws.protocol")).toBe("chat")
        // Messages still flow through the wrapped stream.
        yield* client.sendText("traced")
        yield* client.expectText("traced")
      }).pipe(Effect.provide(Testing.layer(app)))
    }))

  it.effect("without tracing the handler has no span", () =>
    Effect.gen(function*() {
      const seen = yield* Deferred.make<boolean>()
      const app = Router.make([
        Router.ws("/", (conn) =>
          Effect.andThen(
            Effect.flatMap(Effect.option(Effect.currentSpan), (span) => Deferred.succeed(seen, span._tag === "Some")),
            echo(conn)
          ))
      ])
      yield* Effect.gen(function*() {
        yield* (yield* Testing.TestServer).connect()
        expect(yield* Deferred.await(seen)).toBe(false)
      }).pipe(Effect.provide(Testing.layer(app)))
    }))
})
