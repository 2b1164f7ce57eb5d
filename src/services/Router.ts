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
import type { Connection } from "./Connection.ts"
import type { App, HttpResponse, Peer, UpgradeDecision } from "./App.ts"

/** What upgrade-time middleware sees: the validated request, the peer, the route's parameters. */
export interface UpgradeContext {
  readonly upgrade: Handshake.UpgradeRequest
  readonly peer: Peer
  readonly path: string
  readonly query: URLSearchParams
  readonly params: Readonly<Record<string, string>>
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
 */
export type UpgradeMiddleware<R = never> = (
  context: UpgradeContext,
  next: Effect.Effect<UpgradeDecision<R>, never, R>
) => Effect.Effect<UpgradeDecision<R>, never, R>

/** What runs for the life of a WebSocket connection. */
export type Handler<R> = (connection: Connection) => Effect.Effect<void, unknown, R>

/**
 * Wraps a handler (like Effect's `HttpMiddleware`): it may hand the handler a
 * wrapped `Connection` (count, rate-limit, decode), run it in a span, or close
 * the connection with a code instead of calling it.
 */
export type ConnectionMiddleware<R = never> = <R2>(handler: Handler<R2>) => Handler<R | R2>

export interface WsRouteOptions<R> {
  /** Subprotocols this route speaks, in the server's order of preference (RFC 6455 §1.9). */
  readonly protocols?: ReadonlyArray<string> | undefined
  /** The client offered subprotocols and none is spoken here: refuse with 400 (default) or accept without one. */
  readonly onNoProtocol?: "reject" | "accept" | undefined
  readonly upgrade?: ReadonlyArray<UpgradeMiddleware<R>> | undefined
  readonly connection?: ReadonlyArray<ConnectionMiddleware<R>> | undefined
}

export interface WsRoute<R> {
  readonly _tag: "WsRoute"
  readonly path: string
  readonly match: (path: string) => Record<string, string> | undefined
  readonly handler: (connection: Connection) => Effect.Effect<void, unknown, R>
  readonly options: WsRouteOptions<R>
}

/** A plain HTTP request as a route handler sees it. */
export interface HttpContext {
  readonly request: Handshake.HttpRequest
  readonly peer: Peer
  readonly params: Readonly<Record<string, string>>
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

/** A WebSocket route. */
export const ws = <R = never>(
  path: string,
  handler: (connection: Connection) => Effect.Effect<void, unknown, R>,
  options: WsRouteOptions<R> = {}
): WsRoute<R> => ({ _tag: "WsRoute", path, match: compilePath(path), handler, options })

/** A plain HTTP route for any method. */
export const http = <R = never>(
  method: string,
  path: string,
  handler: (context: HttpContext) => Effect.Effect<HttpResponse, never, R>
): HttpRoute<R> => ({ _tag: "HttpRoute", method: method.toUpperCase(), path, match: compilePath(path), handler })

/** A plain HTTP GET route (also answers HEAD). */
export const get = <R = never>(path: string, handler: (context: HttpContext) => Effect.Effect<HttpResponse, never, R>) =>
  http("GET", path, handler)

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

export interface RouterOptions<R> {
  /** Upgrade-time middleware for every WebSocket route, run before the route's own. */
  readonly upgrade?: ReadonlyArray<UpgradeMiddleware<R>> | undefined
  /** Connection middleware for every WebSocket route, run before the route's own. */
  readonly connection?: ReadonlyArray<ConnectionMiddleware<R>> | undefined
}

const reject = (status: number, body: string): UpgradeDecision<never> => ({
  _tag: "Reject",
  response: text(body, status)
})

// The first middleware is the outermost wrapper, so it sees messages first.
const applyConnectionMiddleware = <R>(middleware: ReadonlyArray<ConnectionMiddleware<R>>, handler: Handler<R>): Handler<R> =>
  middleware.reduceRight<Handler<R>>((inner, m) => m(inner), handler)

/**
 * Build the reactor's `App` from routes. Unknown paths: 404 (HTTP and
 * upgrades); a known HTTP path with another method: 405.
 */
export const make = <R = never>(routes: ReadonlyArray<Route<R>>, options: RouterOptions<R> = {}): App<R> => {
  const wsRoutes = routes.filter((r): r is WsRoute<R> => r._tag === "WsRoute")
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
              handler: applyConnectionMiddleware(
                [...(options.connection ?? []), ...(route.options.connection ?? [])],
                route.handler
              )
            })
        const middleware = [...(options.upgrade ?? []), ...(route.options.upgrade ?? [])]
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
