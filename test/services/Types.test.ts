// Types that compose (issue 9, item 3). The `expectTypeOf` lines and the `@ts-expect-error`
// lines are checked by `npm run typecheck` (an expected error that does not happen fails it);
// the runtime tests show the types tell the truth: what a middleware provides reaches the
// handler, and a connection's Scope closes when the connection ends.
import { describe, expect, expectTypeOf, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { App } from "../../src/services/App.ts"
import * as Broker from "../../src/services/Broker.ts"
import type { Connection } from "../../src/services/Connection.ts"
import * as Middleware from "../../src/services/Middleware.ts"
import * as Options from "../../src/services/Options.ts"
import * as Router from "../../src/services/Router.ts"
import * as Server from "../../src/services/Server.ts"
import type { Transport } from "../../src/services/Transport.ts"
import * as Typed from "../../src/services/Typed.ts"
import * as Testing from "../../src/testing.ts"
import * as Schema from "effect/Schema"

// Services an app might define.
class Rooms extends Context.Service<Rooms, { readonly exists: (room: string) => boolean }>()("test/Rooms") {}
class Health extends Context.Service<Health, { readonly ok: boolean }>()("test/Health") {}
class Audit extends Context.Service<Audit, { readonly record: (line: string) => void }>()("test/Audit") {}
class User extends Context.Service<User, { readonly name: string }>()("test/User") {}

const roomsHandler = (conn: Connection) => Effect.flatMap(Rooms, (rooms) => conn.send(String(rooms.exists("x"))))
const healthHandler = () => Effect.map(Health, (h) => Router.json({ ok: h.ok }))
const userHandler = (conn: Connection) => Effect.flatMap(User, (user) => conn.send(user.name))
const verify = (token: string) => token === "good" ? Effect.succeed({ name: "ada" }) : Effect.fail("bad token")

describe("Router.make: routes with different needs mix", () => {
  it("the app needs the union of its routes' needs and its middleware's", () => {
    const app = Router.make([
      Router.ws("/rooms", roomsHandler),
      Router.get("/healthz", healthHandler),
      Router.ws("/echo", (conn) => conn.messages.pipe(Stream.runForEach(conn.send)))
    ])
    expectTypeOf(app).toEqualTypeOf<App<Rooms | Health>>()

    const audited: Router.UpgradeMiddleware<Audit> = (context, next) =>
      Effect.flatMap(Audit, (audit) => Effect.andThen(Effect.sync(() => audit.record(context.path)), next))
    const withMiddleware = Router.make([Router.ws("/rooms", roomsHandler)], { upgrade: [audited] })
    expectTypeOf(withMiddleware).toEqualTypeOf<App<Rooms | Audit>>()

    // An app that needs services cannot be served until they are provided.
    expectTypeOf(Server.serve(app)).toEqualTypeOf<
      Effect.Effect<never, Options.InvalidOptionsError, Rooms | Health | Transport>
    >()
    expectTypeOf(Testing.layer(app)).toEqualTypeOf<
      Layer.Layer<Testing.TestServer, Options.InvalidOptionsError, Rooms | Health>
    >()
    // @ts-expect-error an App<Rooms | Health> is not an App<never>
    const notNever: App<never> = app
    void notNever
  })

  it("an inline middleware that needs nothing adds nothing; one that needs a service is not silently dropped", () => {
    const inline = Router.make([Router.ws("/rooms", roomsHandler, { upgrade: [(_context, next) => next] })])
    expectTypeOf(inline).toEqualTypeOf<App<Rooms>>()
    const sneaky = Router.make([
      Router.ws("/rooms", roomsHandler, { upgrade: [(_context, next) => Effect.andThen(Audit, next)] })
    ])
    // Not annotated, so its needs are unknown: the app cannot run until it is typed.
    expectTypeOf(sneaky).toEqualTypeOf<App<unknown>>()
  })
})

describe("every built-in middleware fits a route that needs services", () => {
  it("upgrade and connection middleware keep the route's needs", () => {
    const route = Router.ws("/rooms", roomsHandler, {
      upgrade: [
        Middleware.originAllowList(["https://example.com"]),
        Middleware.connectionLimitPerIp(10),
        Middleware.logging,
        Middleware.auth({ query: "token" }, verify)
      ],
      connection: [Middleware.rateLimit({ capacity: 10, refillPerSecond: 5 }), Middleware.tracing]
    })
    expectTypeOf(route).toEqualTypeOf<Router.WsRoute<Rooms>>()
    const app = Router.make([route, Router.get("/healthz", healthHandler)], {
      upgrade: [Middleware.logging, Middleware.originAllowList(() => true)],
      connection: [Middleware.tracing]
    })
    expectTypeOf(app).toEqualTypeOf<App<Rooms | Health>>()
  })

  it("a verify that needs a service adds it to the route", () => {
    const lookup = (token: string) => Effect.map(Rooms, (rooms) => ({ name: rooms.exists(token) ? "ada" : "?" }))
    const route = Router.ws("/", (conn) => conn.send("hi"), { upgrade: [Middleware.auth({ query: "t" }, lookup)] })
    expectTypeOf(route).toEqualTypeOf<Router.WsRoute<Rooms>>()
  })
})

describe("middleware that provide a service", () => {
  const login = Middleware.auth({ query: "token" }, verify, User)

  it("auth with a service key: the handler's need for the principal is gone from the route's", () => {
    expectTypeOf(login).toEqualTypeOf<Router.UpgradeMiddleware<never, User>>()
    const route = Router.ws("/me", (conn) =>
      Effect.gen(function*() {
        const user = yield* User
        const rooms = yield* Rooms
        yield* conn.send(`${user.name}: ${rooms.exists("lobby")}`)
      }), { upgrade: [login] })
    expectTypeOf(route).toEqualTypeOf<Router.WsRoute<Rooms>>()
    // Router-level: every WebSocket route gets it, plain HTTP routes do not.
    const app = Router.make([
      Router.ws("/me", userHandler),
      Router.get("/whoami", () => Effect.map(User, (u) => Router.text(u.name)))
    ], { upgrade: [login] })
    expectTypeOf(app).toEqualTypeOf<App<User>>()
    // Without auth the route needs the principal, and the app cannot be served as is.
    expectTypeOf(Router.ws("/me", userHandler)).toEqualTypeOf<Router.WsRoute<User>>()
  })

  it("a verify that does not return the service's shape is refused", () => {
    // @ts-expect-error `User` is `{ name: string }`, verify returns a number
    Middleware.auth({ query: "token" }, () => Effect.succeed(42), User)
  })

  it("connection middleware see what upgrade middleware provide; connection middleware provide too", () => {
    const perUser: Router.ConnectionMiddleware<User> = (handler) => (conn) =>
      Effect.flatMap(User, (user) => user.name.length > 0 ? handler(conn) : conn.close(1008, "no name"))
    const withRooms: Router.ConnectionMiddleware<never, Rooms> = (handler) => (conn) =>
      Effect.provideService(handler(conn), Rooms, Rooms.of({ exists: () => true }))
    const route = Router.ws("/rooms", roomsHandler, { upgrade: [login], connection: [perUser, withRooms] })
    expectTypeOf(route).toEqualTypeOf<Router.WsRoute<never>>()
    // Applied by hand, a connection middleware gives the same answer.
    expectTypeOf(withRooms(roomsHandler)).toEqualTypeOf<Router.Handler<never>>()
  })

  const app = Router.make([
    Router.ws("/me", userHandler, { upgrade: [login] }),
    Router.ws("/legacy", (conn) => conn.send(JSON.stringify(Middleware.principal(conn))), {
      upgrade: [Middleware.auth({ query: "token" }, verify)]
    })
  ])

  it.effect("the principal reaches the handler as the service (and in attributes, untyped)", () =>
    Effect.gen(function*() {
      const server = yield* Testing.TestServer
      const me = yield* server.connect({ path: "/me?token=good" })
      yield* me.expectText("ada")
      const legacy = yield* server.connect({ path: "/legacy?token=good" })
      expect(JSON.parse(yield* legacy.expectText())).toEqual({ name: "ada" })
      const refused = yield* Effect.flip(server.connect({ path: "/me?token=bad" }))
      expect(refused.status).toBe(403)
    }).pipe(Effect.provide(Testing.layer(app))))
})

describe("route parameters are typed from the path", () => {
  it("`:name` segments and a final `*`", () => {
    expectTypeOf<Router.PathParams<"/chat/:room">>().toEqualTypeOf<{ readonly room: string }>()
    expectTypeOf<Router.PathParams<"/a/:x/b/:y">>().toEqualTypeOf<{ readonly x: string; readonly y: string }>()
    expectTypeOf<Router.PathParams<"/files/*">>().toEqualTypeOf<{ readonly "*": string }>()
    expectTypeOf<Router.PathParams<"/echo">>().toEqualTypeOf<{}>()
    expectTypeOf<Router.PathParams<string>>().toEqualTypeOf<Readonly<Record<string, string>>>()

    Router.ws("/chat/:room", (conn) => {
      expectTypeOf(conn.params).toEqualTypeOf<{ readonly room: string }>()
      // @ts-expect-error no such parameter in "/chat/:room"
      void conn.params.user
      return Effect.void
    })
    Router.get("/users/:id", (context) => Effect.succeed(Router.text(context.params.id)))
    // A handler written for any connection still fits a route with parameters.
    Router.ws("/chat/:room", (conn: Connection) => conn.send("hi"))
  })

  it("Typed.handler sees them too", () => {
    Router.ws("/chat/:room", Typed.handler({ incoming: Schema.String, outgoing: Schema.String }, (conn) => {
      expectTypeOf(conn.raw.params).toEqualTypeOf<{ readonly room: string }>()
      return Effect.void
    }))
  })

  it.effect("at run time the names are the path's", () =>
    Effect.gen(function*() {
      const client = yield* (yield* Testing.TestServer).connect({ path: "/chat/lobby" })
      yield* client.expectText("lobby")
    }).pipe(Effect.provide(Testing.layer(Router.make([Router.ws("/chat/:room", (conn) => conn.send(conn.params.room))])))))
})

describe("the connection's Scope comes from the server", () => {
  // A handler that needs a Scope (a broker subscription, a finalizer) without `Effect.scoped`.
  const subscriber = (closed: Deferred.Deferred<void>) => (conn: Connection) =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      yield* broker.subscribe("news", conn)
      yield* Effect.addFinalizer(() => Deferred.succeed(closed, undefined))
      yield* conn.send("subscribed")
      yield* conn.messages.pipe(Stream.runDrain)
    })

  it("a route may need Scope; the app served does not", () => {
    const app = Router.make([Router.ws("/news", subscriber(Deferred.makeUnsafe()))])
    expectTypeOf(app).toEqualTypeOf<App<Broker.Broker | Scope.Scope>>()
    expectTypeOf(Server.serve(app)).toEqualTypeOf<
      Effect.Effect<never, Options.InvalidOptionsError, Broker.Broker | Transport>
    >()
    expectTypeOf(Testing.layer(app)).toEqualTypeOf<
      Layer.Layer<Testing.TestServer, Options.InvalidOptionsError, Broker.Broker>
    >()
  })

  it.effect("closed when the connection ends, while the server runs on", () =>
    Effect.gen(function*() {
      const closed = yield* Deferred.make<void>()
      const app = Router.make([Router.ws("/news", subscriber(closed))])
      yield* Effect.gen(function*() {
        const server = yield* Testing.TestServer
        yield* Effect.scoped(Effect.gen(function*() {
          const client = yield* server.connect({ path: "/news" })
          yield* client.expectText("subscribed")
          yield* client.close(1000)
          yield* client.expectClose(1000)
        }))
        yield* Deferred.await(closed)
        // The server still serves: the scope was the connection's, not the server's.
        const again = yield* server.connect({ path: "/news" })
        yield* again.expectText("subscribed")
      }).pipe(Effect.provide(Testing.layer(app)), Effect.provide(Broker.layerMemory))
    }))
})
