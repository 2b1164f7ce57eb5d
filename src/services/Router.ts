/**
 * Routes: which path speaks WebSocket (and which subprotocols), which answers
 * plain HTTP, and the middleware around them. `Router.make` turns routes into
 * the `App` the reactor runs.
 *
 * @example
 * const app = Router.make([
 *   Router.ws("/echo", (conn) => conn.messages.pipe(Stream.runForEach(conn.send))),
 *   Router.ws("/chat/:room", chat, { protocols: ["chat.v1"] }),
 *   Router.get("/healthz", () => Effect.succeed(Router.json({ ok: true })))
 * ])
 */
import * as Effect from "effect/Effect"
import * as Handshake from "../domain/Handshake.ts"
import type { Connection, Params } from "./Connection.ts"
import type { App, HttpResponse, Peer, UpgradeDecision } from "./App.ts"

/** What upgrade-time middleware sees: the validated request, the peer, the route's parameters. */
export interface UpgradeContext {
  readonly upgrade: Handshake.UpgradeRequest
  readonly peer: Peer
  readonly path: string
  readonly query: URLSearchParams
  readonly params: Params
  readonly header: (name: string) => string | undefined
  /**
   * Run `release` if this upgrade ends refused: whatever decision a middleware
   * saw from `next`, an outer one may still turn it into a refusal, and what
   * was reserved for the connection (a per-IP slot) must be given back then.
   */
  readonly whenRefused: (release: Effect.Effect<void>) => void
}

/**
 * Runs before the 101: may reject with any HTTP status (short-circuit) or call
 * `next` and adjust the decision. Listed middleware run in order, outermost first.
 *
 * `R` is what the middleware itself needs. `Provides` is what it provides to
 * everything inside it (the rest of the upgrade and the handler), so a route's
 * handler may need it without the route (or the app) needing it: see
 * `Middleware.auth`. Generic in what it wraps (`R2`), it fits any route.
 *
 * @example
 * const needsRoomsDb: Router.UpgradeMiddleware<RoomsDb> = (context, next) =>
 *   Effect.flatMap(RoomsDb, (db) => db.exists(context.params["room"]) ? next : Effect.succeed(notFound))
 */
export interface UpgradeMiddleware<R = never, Provides = never> {
  <R2>(
    context: UpgradeContext,
    next: Effect.Effect<UpgradeDecision<R2>, never, R2>
  ): Effect.Effect<UpgradeDecision<Exclude<R2, Provides>>, never, R | Exclude<R2, Provides>>
}

/** What runs for the life of a WebSocket connection (`P`: the route's parameters). */
export type Handler<R, P extends Params = Params> = (connection: Connection<P>) => Effect.Effect<void, unknown, R>

/**
 * Wraps a handler (like Effect's `HttpMiddleware`): it may hand the handler a
 * wrapped `Connection` (count, rate-limit, decode), run it in a span, provide it
 * a service (`Provides`, then gone from the route's requirements), or close the
 * connection with a code instead of calling it. `R` is what the middleware needs.
 *
 * @example
 * const withClock: Router.ConnectionMiddleware<never, RoomClock> = (handler) => (conn) =>
 *   Effect.provideService(handler(conn), RoomClock, RoomClock.of({ now: () => Date.now() }))
 */
export interface ConnectionMiddleware<R = never, Provides = never> {
  <R2>(handler: Handler<R2>): Handler<R | Exclude<R2, Provides>>
}

/**
 * The route parameters of a path pattern, by name: `PathParams<"/chat/:room">` is
 * `{ readonly room: string }`; a final `*` gives the param `"*"`; a path only known
 * as `string` gives a record.
 */
export type PathParams<Path extends string> = string extends Path ? Params
  : { readonly [K in ParamNames<Path>]: string }

// Mirrors compilePath: `:name` segments anywhere, `*` only as the last segment.
type ParamNames<Path extends string> = Path extends `${infer Head}/${infer Rest}`
  ? (Head extends `:${infer Name}` ? Name : never) | ParamNames<Rest>
  : Path extends `:${infer Name}` ? Name
  : Path extends "*" ? "*"
  : never

export interface WsRouteOptions<R = never, Provides = never> {
  /** Subprotocols this route speaks, in the server's order of preference (RFC 6455 §1.9). */
  readonly protocols?: ReadonlyArray<string> | undefined
  /** The client offered subprotocols and none is spoken here: refuse with 400 (default) or accept without one. */
  readonly onNoProtocol?: "reject" | "accept" | undefined
  readonly upgrade?: ReadonlyArray<UpgradeMiddleware<R, Provides>> | undefined
  readonly connection?: ReadonlyArray<ConnectionMiddleware<R, Provides>> | undefined
}

// What fits in a route's or a router's middleware lists (any needs, any provides): loose enough for a
// middleware written inline to be typed from it; the exact needs are read from the values (WithMiddleware).
type AnyUpgradeMiddleware = <R2>(
  context: UpgradeContext,
  next: Effect.Effect<UpgradeDecision<R2>, never, R2>
) => Effect.Effect<UpgradeDecision<any>, never, any>
type AnyConnectionMiddleware = <R2>(handler: Handler<R2>) => Handler<any>
interface MiddlewareLists {
  readonly upgrade?: ReadonlyArray<AnyUpgradeMiddleware> | undefined
  readonly connection?: ReadonlyArray<AnyConnectionMiddleware> | undefined
}

/** A WebSocket route; `R` is what it needs once its middleware provided theirs. */
export interface WsRoute<R> {
  readonly _tag: "WsRoute"
  readonly path: string
  readonly match: (path: string) => Record<string, string> | undefined
  /**
   * The route's handler. It may need more than `R`: what the route's middleware
   * provide, which `Router.make` always runs it inside.
   */
  readonly handler: Handler<R>
  readonly options: WsRouteOptions<any, any>
}

/** A plain HTTP request as a route handler sees it (`P`: the route's parameters). */
export interface HttpContext<P extends Params = Params> {
  readonly request: Handshake.HttpRequest
  readonly peer: Peer
  readonly params: P
  readonly query: URLSearchParams
  readonly header: (name: string) => string | undefined
}

export interface HttpRoute<R> {
  readonly _tag: "HttpRoute"
  readonly method: string
  readonly path: string
  readonly match: (path: string) => Record<string, string> | undefined
  readonly handler: (context: HttpContext) => Effect.Effect<HttpResponse, never, R>
}

export type Route<R> = WsRoute<R> | HttpRoute<R>

// ---- What a list of middleware needs and provides (each list element on its own: a union of
// element types would infer one candidate, not their union) ----

// A middleware written inline (not typed as `UpgradeMiddleware<…>`) has no type arguments to read:
// it needs nothing if it fits the plain middleware type, and otherwise `unknown` (the app cannot
// run until the middleware is annotated); it provides nothing.
type NeedsOf<R, Matched extends boolean, Fits extends boolean> = Matched extends true
  ? (unknown extends R ? (Fits extends true ? never : unknown) : R)
  : (Fits extends true ? never : unknown)
type ProvidesOf<P> = unknown extends P ? never : P

type UpgradeNeeds<L> = L extends ReadonlyArray<unknown> ? {
    [K in keyof L]: [L[K]] extends [UpgradeMiddleware<infer R, infer _P>]
      ? NeedsOf<R, true, [L[K]] extends [UpgradeMiddleware] ? true : false>
      : NeedsOf<unknown, false, [L[K]] extends [UpgradeMiddleware] ? true : false>
  }[number]
  : never
type UpgradeProvides<L> = L extends ReadonlyArray<unknown>
  ? { [K in keyof L]: [L[K]] extends [UpgradeMiddleware<infer _R, infer P>] ? ProvidesOf<P> : never }[number]
  : never
type ConnectionNeeds<L> = L extends ReadonlyArray<unknown> ? {
    [K in keyof L]: [L[K]] extends [ConnectionMiddleware<infer R, infer _P>]
      ? NeedsOf<R, true, [L[K]] extends [ConnectionMiddleware] ? true : false>
      : NeedsOf<unknown, false, [L[K]] extends [ConnectionMiddleware] ? true : false>
  }[number]
  : never
type ConnectionProvides<L> = L extends ReadonlyArray<unknown>
  ? { [K in keyof L]: [L[K]] extends [ConnectionMiddleware<infer _R, infer P>] ? ProvidesOf<P> : never }[number]
  : never

/**
 * What a handler needing `R` needs once wrapped in the middleware of `O` (a route's or a
 * router's options). The handler is inside every middleware, so anything one provides is
 * gone from its needs; connection middleware run inside the upgrade middleware, so what the
 * upgrade middleware provide is gone from theirs. What an upgrade middleware itself needs
 * stays (even if another provides it: only the handler's and the connection middleware's
 * needs are narrowed).
 */
export type WithMiddleware<R, O> = O extends { readonly upgrade?: infer U; readonly connection?: infer C }
  ? Exclude<R, UpgradeProvides<U> | ConnectionProvides<C>> | Exclude<ConnectionNeeds<C>, UpgradeProvides<U>> | UpgradeNeeds<U>
  : R

/** The services a list of routes needs: the union of every route's. */
export type RoutesServices<Routes> = Routes extends ReadonlyArray<unknown>
  ? { [K in keyof Routes]: [Routes[K]] extends [Route<infer R>] ? R : never }[number]
  : never
type WsRoutesServices<Routes> = Routes extends ReadonlyArray<unknown>
  ? { [K in keyof Routes]: [Routes[K]] extends [WsRoute<infer R>] ? R : never }[number]
  : never
type HttpRoutesServices<Routes> = Routes extends ReadonlyArray<unknown>
  ? { [K in keyof Routes]: [Routes[K]] extends [HttpRoute<infer R>] ? R : never }[number]
  : never

/**
 * Compile a path pattern: literal segments, `:name` parameters, and a final
 * `*` that matches the rest (as param `*`).
 */
export const compilePath = (pattern: string): (path: string) => Record<string, string> | undefined => {
  const parts = pattern.split("/").filter((s) => s.length > 0)
  const wildcard = parts.length > 0 && parts[parts.length - 1] === "*"
  const fixed = wildcard ? parts.slice(0, -1) : parts
  return (path) => {
    const segments = path.split("/").filter((s) => s.length > 0)
    if (wildcard ? segments.length < fixed.length : segments.length !== fixed.length) return undefined
    const params: Record<string, string> = {}
    for (let i = 0; i < fixed.length; i++) {
      const part = fixed[i]
      if (part.startsWith(":")) {
        try {
          params[part.slice(1)] = decodeURIComponent(segments[i])
        } catch {
          return undefined
        }
      } else if (part !== segments[i]) {
        return undefined
      }
    }
    if (wildcard) params["*"] = segments.slice(fixed.length).join("/")
    return params
  }
}

/**
 * A WebSocket route. The handler's `conn.params` is typed from the path, and the
 * route needs what the handler and the middleware need, less what the middleware
 * provide (see {@link WithMiddleware}).
 *
 * @example
 * Router.ws("/chat/:room", (conn) => conn.send(`welcome to ${conn.params.room}`), {
 *   upgrade: [Middleware.auth({ query: "token" }, verify)] // the handler may `yield* Middleware.Principal`
 * })
 */
export const ws = <
  const Path extends string,
  RH = never,
  const O extends MiddlewareLists = {}
>(
  path: Path,
  handler: Handler<RH, PathParams<Path>>,
  options?: Omit<WsRouteOptions, keyof MiddlewareLists> & MiddlewareLists & O
): WsRoute<WithMiddleware<RH, O>> => ({
  _tag: "WsRoute",
  path,
  match: compilePath(path),
  // The params come from `compilePath(path)`, so they have the names `PathParams<Path>` says.
  handler: handler as Handler<any>,
  options: (options ?? {}) as WsRouteOptions<any, any>
})

/** A plain HTTP route for any method; `context.params` is typed from the path. */
export const http = <const Path extends string, R = never>(
  method: string,
  path: Path,
  handler: (context: HttpContext<PathParams<Path>>) => Effect.Effect<HttpResponse, never, R>
): HttpRoute<R> => ({
  _tag: "HttpRoute",
  method: method.toUpperCase(),
  path,
  match: compilePath(path),
  handler: handler as (context: HttpContext) => Effect.Effect<HttpResponse, never, R>
})

/** A plain HTTP GET route (also answers HEAD). */
export const get = <const Path extends string, R = never>(
  path: Path,
  handler: (context: HttpContext<PathParams<Path>>) => Effect.Effect<HttpResponse, never, R>
): HttpRoute<R> => http("GET", path, handler)

/** A text response. */
export const text = (body: string, status = 200): HttpResponse => ({
  status,
  headers: [["Content-Type", "text/plain; charset=utf-8"]],
  body
})

/** A JSON response. */
export const json = (value: unknown, status = 200): HttpResponse => ({
  status,
  headers: [["Content-Type", "application/json"]],
  body: JSON.stringify(value)
})

/** An HTML response. */
export const html = (body: string, status = 200): HttpResponse => ({
  status,
  headers: [["Content-Type", "text/html; charset=utf-8"]],
  body
})

/**
 * Choose the subprotocol (RFC 6455 §4.2.2 step 5.4): the first of the route's
 * protocols, in the server's order, that the client offered.
 */
export const chooseProtocol = (spoken: ReadonlyArray<string>, offered: ReadonlyArray<string>): string | undefined => {
  for (const protocol of spoken) if (offered.includes(protocol)) return protocol
  return undefined
}

export interface RouterOptions<R = never, Provides = never> {
  /** Upgrade-time middleware for every WebSocket route, run before the route's own. */
  readonly upgrade?: ReadonlyArray<UpgradeMiddleware<R, Provides>> | undefined
  /** Connection middleware for every WebSocket route, run before the route's own. */
  readonly connection?: ReadonlyArray<ConnectionMiddleware<R, Provides>> | undefined
}

/**
 * What `Router.make(routes, options)` needs: every route's needs (a WebSocket route's less what
 * the router-level middleware provide; they do not wrap plain HTTP routes), and the middleware's.
 */
export type AppServices<Routes, O> = WithMiddleware<WsRoutesServices<Routes>, O> | HttpRoutesServices<Routes>

const reject = (status: number, body: string): UpgradeDecision<never> => ({
  _tag: "Reject",
  response: text(body, status)
})

// The first middleware is the outermost wrapper, so it sees messages first.
const applyConnectionMiddleware = (
  middleware: ReadonlyArray<ConnectionMiddleware<any, any>>,
  handler: Handler<any>
): Handler<any> => middleware.reduceRight<Handler<any>>((inner, m) => m(inner), handler)

/**
 * Build the reactor's `App` from routes. Unknown paths: 404 (HTTP and
 * upgrades); a known HTTP path with another method: 405. Routes with different
 * needs mix: the app needs their union (see {@link AppServices}).
 *
 * @example
 * const app = Router.make([
 *   Router.ws("/rooms/:room", rooms), // needs RoomsDb
 *   Router.get("/healthz", health)    // needs Health
 * ]) // App<RoomsDb | Health>
 */
export const make = <
  const Routes extends ReadonlyArray<Route<any>>,
  const O extends MiddlewareLists = {}
>(routes: Routes, options?: MiddlewareLists & O): App<AppServices<Routes, O>> =>
  make_(routes, (options ?? {}) as RouterOptions<any, any>)

// Untyped inside: the signature of `make` says what the whole needs.
const make_ = (routes: ReadonlyArray<Route<any>>, options: RouterOptions<any, any>): App<any> => {
  type R = any
  const wsRoutes = routes.filter((r): r is WsRoute<R> => r._tag === "WsRoute")
  // Per route, once: the handler wrapped in its connection middleware, and its upgrade middleware.
  const wrapped = new Map(wsRoutes.map((route) => [route, {
    handler: applyConnectionMiddleware([...(options.connection ?? []), ...(route.options.connection ?? [])], route.handler),
    upgrade: [...(options.upgrade ?? []), ...(route.options.upgrade ?? [])]
  }]))
  const httpRoutes = routes.filter((r): r is HttpRoute<R> => r._tag === "HttpRoute")
  return {
    http: (request, peer) => {
      let pathMatched = false
      for (const route of httpRoutes) {
        const params = route.match(request.path)
        if (params === undefined) continue
        pathMatched = true
        if (route.method === request.method || (route.method === "GET" && request.method === "HEAD")) {
          return route.handler({
            request,
            peer,
            params,
            query: new URLSearchParams(request.query),
            header: (name) => Handshake.header(request, name)
          })
        }
      }
      if (!pathMatched && wsRoutes.some((r) => r.match(request.path) !== undefined)) {
        // RFC 6455 §4.2.2: a WebSocket-only resource answers plain HTTP with 426 Upgrade Required.
        return Effect.succeed({
          status: 426,
          headers: [["Upgrade", "websocket"], ["Connection", "Upgrade"], ["Content-Type", "text/plain; charset=utf-8"]],
          body: "this resource speaks WebSocket\n"
        })
      }
      if (!pathMatched) return Effect.succeed(text("not found\n", 404))
      // RFC 9110 §15.5.6: a 405 lists the methods the resource supports (GET routes also answer HEAD).
      const allow = new Set<string>()
      for (const route of httpRoutes) {
        if (route.match(request.path) === undefined) continue
        allow.add(route.method)
        if (route.method === "GET") allow.add("HEAD")
      }
      const response = text("method not allowed\n", 405)
      return Effect.succeed({ ...response, headers: [...(response.headers ?? []), ["Allow", [...allow].join(", ")]] })
    },
    upgrade: (upgrade, peer) => {
      const path = upgrade.request.path
      for (const route of wsRoutes) {
        const params = route.match(path)
        if (params === undefined) continue
        const spoken = route.options.protocols ?? []
        const protocol = chooseProtocol(spoken, upgrade.protocols)
        const accept: Effect.Effect<UpgradeDecision<R>, never, R> =
          protocol === undefined && upgrade.protocols.length > 0 && spoken.length > 0 &&
            (route.options.onNoProtocol ?? "reject") === "reject"
            ? Effect.succeed(reject(400, `no acceptable subprotocol (this route speaks: ${spoken.join(", ")})\n`))
            : Effect.succeed({
              _tag: "Accept",
              protocol,
              params,
              handler: wrapped.get(route)!.handler
            })
        const middleware = wrapped.get(route)!.upgrade
        if (middleware.length === 0) return accept
        const refusals: Array<Effect.Effect<void>> = []
        const context: UpgradeContext = {
          upgrade,
          peer,
          path,
          query: new URLSearchParams(upgrade.request.query),
          params,
          header: (name) => Handshake.header(upgrade.request, name),
          whenRefused: (release) => void refusals.push(release)
        }
        // Outermost first: middleware[0] wraps middleware[1] wraps ... wraps accept.
        return middleware.reduceRight<Effect.Effect<UpgradeDecision<R>, never, R>>(
          (next, m) => Effect.suspend(() => m(context, next)),
          accept
        ).pipe(Effect.onExit((exit) =>
          refusals.length === 0 || (exit._tag === "Success" && exit.value._tag === "Accept")
            ? Effect.void
            : Effect.forEach(refusals, (release) => release, { discard: true })
        ))
      }
      return Effect.succeed(reject(404, "no WebSocket route here\n"))
    }
  }
}
