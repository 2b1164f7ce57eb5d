/**
 * Middleware that ships with wsreactor. Upgrade-time middleware decide before
 * the 101 (and may answer with any HTTP status); connection middleware wrap
 * the `Connection` a handler sees (and may close it with a code).
 *
 * Order is explicit: the list given to `Router.make` / `Router.ws` runs first
 * to last, and a middleware that answers stops the rest.
 *
 * @example
 * Router.ws("/chat", chat, {
 *   upgrade: [Middleware.originAllowList(["https://example.com"]), Middleware.connectionLimitPerIp(10)],
 *   connection: [Middleware.rateLimit({ capacity: 20, refillPerSecond: 10 })]
 * })
 */
import * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as CloseCode from "../domain/CloseCode.ts"
import { type Connection, withOverrides } from "./Connection.ts"
import type { UpgradeDecision } from "./App.ts"
import type { Message } from "./Message.ts"
import type { ConnectionMiddleware, Handler, UpgradeContext, UpgradeMiddleware } from "./Router.ts"

/** An upgrade middleware that works under any route's requirements (it adds none). */
export type AnyUpgradeMiddleware = <R>(
  context: UpgradeContext,
  next: Effect.Effect<UpgradeDecision<R>, never, R>
) => Effect.Effect<UpgradeDecision<R>, never, R>

const rejectWith = (status: number, body: string): UpgradeDecision<never> => ({
  _tag: "Reject",
  response: { status, headers: [["Content-Type", "text/plain; charset=utf-8"]], body }
})

/**
 * Refuse (403) an upgrade whose `Origin` is not listed. Browsers always send
 * `Origin` (RFC 6455 §4.1, §10.2); requests without one come from non-browser
 * clients and pass unless `requireOrigin` is set.
 */
export const originAllowList = (
  allowed: ReadonlyArray<string> | ((origin: string) => boolean),
  options: { readonly requireOrigin?: boolean } = {}
): UpgradeMiddleware<never> => {
  const test = typeof allowed === "function" ? allowed : (origin: string) => allowed.includes(origin)
  return (context, next) => {
    const origin = context.upgrade.origin
    if (origin === undefined) return options.requireOrigin === true ? Effect.succeed(rejectWith(403, "origin required\n")) : next
    return test(origin) ? next : Effect.succeed(rejectWith(403, "origin not allowed\n"))
  }
}

/**
 * Whether `origin` (an `Origin` header value) names the same host and port as
 * the request's `Host` header. A browser cannot forge `Origin` (RFC 6454 §7.3),
 * so a page on another site never passes; `null` (sandboxed pages, files) never passes.
 *
 * @example
 * isSameOrigin("http://localhost:8888", "localhost:8888") // true
 * isSameOrigin("https://evil.example", "localhost:8888") // false
 */
export const isSameOrigin = (origin: string, host: string | undefined): boolean => {
  if (host === undefined || origin === "null") return false
  try {
    const url = new URL(origin)
    if (url.protocol !== "http:" && url.protocol !== "https:") return false
    // Host parsed with the origin's scheme, so a default port written out (":443") still matches.
    return url.host === new URL(`${url.protocol}//${host}`).host
  } catch {
    return false
  }
}

/**
 * Who may open a WebSocket from a browser: `"same-origin"` (the page was served
 * by this host), a list of extra origins allowed besides same-origin, or a predicate.
 */
export type OriginPolicy =
  | "same-origin"
  | { readonly sameOriginOr: ReadonlyArray<string> }
  | ((origin: string, context: UpgradeContext) => boolean)

const originAllowed = (policy: OriginPolicy, origin: string, context: UpgradeContext): boolean =>
  typeof policy === "function"
    ? policy(origin, context)
    : isSameOrigin(origin, context.header("host")) ||
      (policy !== "same-origin" && policy.sameOriginOr.includes(origin))

/**
 * Refuse (403) a cross-site upgrade: cross-site WebSocket hijacking (RFC 6455
 * §10.2) lets any page open a socket with the visitor's cookies, and the
 * same-origin policy does not apply to WebSocket. Upgrades with an `Origin`
 * pass only if the policy allows it; upgrades without one (non-browser
 * clients, which carry no ambient credentials) pass unless `requireOrigin`.
 *
 * @example
 * Router.ws("/chat", chat, { upgrade: [Middleware.originPolicy({ sameOriginOr: ["https://app.example"] })] })
 */
export const originPolicy = (
  policy: OriginPolicy,
  options: { readonly requireOrigin?: boolean } = {}
): AnyUpgradeMiddleware =>
<R>(context: UpgradeContext, next: Effect.Effect<UpgradeDecision<R>, never, R>) => {
  const origin = context.upgrade.origin
  if (origin === undefined) return options.requireOrigin === true ? Effect.succeed(rejectWith(403, "origin required\n")) : next
  return originAllowed(policy, origin, context) ? next : Effect.succeed(rejectWith(403, "origin not allowed\n"))
}

/**
 * Where an auth token is read from. A cookie is sent by the browser on any
 * site's behalf, so a cookie source must say which origins may use it (see
 * {@link OriginPolicy}); `"any"` turns the check off and is only safe when the
 * cookie is not a credential (or `SameSite=Strict` is enforced elsewhere).
 */
export type TokenSource =
  | { readonly header: string; readonly scheme?: string } // e.g. { header: "authorization", scheme: "Bearer" }
  | { readonly cookie: string; readonly origin: OriginPolicy | "any" }
  | { readonly query: string }

const readCookie = (cookieHeader: string | undefined, name: string): string | undefined => {
  if (cookieHeader === undefined) return undefined
  for (const part of cookieHeader.split(";")) {
    const eq = part.indexOf("=")
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      // A malformed escape (`%E0%A4%A`) is no credential: undefined, so the caller answers 401.
      try {
        return decodeURIComponent(part.slice(eq + 1).trim())
      } catch {
        return undefined
      }
    }
  }
  return undefined
}

/** Read a token from the upgrade request. */
export const readToken = (context: UpgradeContext, source: TokenSource): string | undefined => {
  if ("header" in source) {
    const value = context.header(source.header)
    if (value === undefined) return undefined
    if (source.scheme === undefined) return value
    const prefix = `${source.scheme.toLowerCase()} `
    return value.toLowerCase().startsWith(prefix) ? value.slice(prefix.length).trim() : undefined
  }
  if ("cookie" in source) return readCookie(context.header("cookie"), source.cookie)
  return context.query.get(source.query) ?? undefined
}

/**
 * Authenticate the upgrade: no token (or an unreadable one) → 401, `verify`
 * fails → 403. Given a service key (`service`), the principal `verify`
 * returns is provided as that service to the rest of the upgrade and to the
 * handler, so a handler may `yield*` it and the route does not need it. It is
 * also put in the connection's `attributes.principal` (untyped: read with
 * {@link principal}). With a cookie source the origin is checked first (403
 * for a cross-site page): the source's `origin` policy is required, and `auth`
 * throws when it is missing, so cookie auth is never hijackable by default.
 *
 * @example
 * class User extends Context.Service<User, { readonly name: string }>()("app/User") {}
 * const login = Middleware.auth({ query: "token" }, (token) =>
 *   token === "secret" ? Effect.succeed({ name: "ada" }) : Effect.fail("bad token"), User)
 * Router.ws("/me", (conn) => Effect.flatMap(User, (user) => conn.send(user.name)), { upgrade: [login] })
 * Middleware.auth({ cookie: "session", origin: "same-origin" }, verifySession)
 */
export function auth<P, E, R>(
  source: TokenSource,
  verify: (token: string, context: UpgradeContext) => Effect.Effect<P, E, R>
): UpgradeMiddleware<R>
export function auth<I, P, E, R>(
  source: TokenSource,
  verify: (token: string, context: UpgradeContext) => Effect.Effect<P, E, R>,
  service: Context.Key<I, P>
): UpgradeMiddleware<R, I>
export function auth<I, P, E, R>(
  source: TokenSource,
  verify: (token: string, context: UpgradeContext) => Effect.Effect<P, E, R>,
  service?: Context.Key<I, P>
): UpgradeMiddleware<R, I> {
  if ("cookie" in source && (source as { readonly origin?: unknown }).origin === undefined) {
    // Plain JavaScript callers bypass the type: refuse at startup rather than serve a hijackable route.
    throw new TypeError(
      "Middleware.auth with a cookie needs an origin policy ({ cookie, origin: \"same-origin\" }): see docs/SECURITY.md"
    )
  }
  const checkOrigin = "cookie" in source && source.origin !== "any" ? originPolicy(source.origin) : undefined
  const authenticate = <R2>(context: UpgradeContext, next: Effect.Effect<UpgradeDecision<R2>, never, R2>) => {
    const token = readToken(context, source)
    if (token === undefined || token.length === 0) return Effect.succeed(rejectWith(401, "authentication required\n"))
    return verify(token, context).pipe(
      Effect.matchEffect({
        onFailure: () => Effect.succeed(rejectWith(403, "forbidden\n")),
        onSuccess: (principal) => {
          // Without a key nothing is provided; the casts only say what `Provides` promises.
          const provide = <A, E2, R3>(effect: Effect.Effect<A, E2, R3>) =>
            (service === undefined ? effect : Effect.provideService(effect, service, principal)) as Effect.Effect<
              A,
              E2,
              Exclude<R3, I>
            >
          return Effect.map(provide(next), (decision): UpgradeDecision<Exclude<R2, I>> =>
            decision._tag === "Accept"
              ? {
                ...decision,
                attributes: { ...decision.attributes, principal },
                handler: (connection) => provide(decision.handler(connection))
              }
              : decision)
        }
      })
    )
  }
  if (checkOrigin === undefined) return authenticate as UpgradeMiddleware<R, I>
  return (<R2>(context: UpgradeContext, next: Effect.Effect<UpgradeDecision<R2>, never, R2>) =>
    checkOrigin(context, authenticate(context, next))) as unknown as UpgradeMiddleware<R, I>
}

/** The principal stored by {@link auth} in `attributes` (untyped; prefer giving `auth` a service key). */
export const principal = <P>(connection: Connection): P | undefined => connection.attributes["principal"] as P | undefined

/**
 * At most `max` open connections per remote address; more get 429
 * (RFC 6585 §4). Counted from the upgrade until the handler ends, or until
 * the connection ends when the accepted decision never runs (an outer
 * middleware refused it, the peer left before the 101).
 *
 * @example
 * Router.ws("/chat", chat, { upgrade: [Middleware.connectionLimitPerIp(16)] })
 */
export const connectionLimitPerIp = (max: number): UpgradeMiddleware<never> => {
  const open = new Map<string, number>()
  return <R>(context: UpgradeContext, next: Effect.Effect<UpgradeDecision<R>, never, R>) => {
    const ip = context.peer.remoteAddress ?? "unknown"
    if ((open.get(ip) ?? 0) >= max) return Effect.succeed(rejectWith(429, "too many connections\n"))
    // Reserve the slot before `next`, so concurrent upgrades behind an asynchronous middleware cannot overshoot.
    open.set(ip, (open.get(ip) ?? 0) + 1)
    let released = false
    const release = Effect.sync(() => {
      if (released) return
      released = true
      const n = (open.get(ip) ?? 1) - 1
      if (n <= 0) open.delete(ip)
      else open.set(ip, n)
    })
    // Freed when the final decision (after every outer middleware) is a refusal, when the handler
    // ends, and at the latest with the connection's scope (the reactor runs the upgrade inside it):
    // an accepted decision that never runs (the peer left before the 101) gives its slot back too.
    context.whenRefused(release)
    const releaseWithConnection = Effect.flatMap(Effect.serviceOption(Scope.Scope), (scope) =>
      scope._tag === "Some" ? Scope.addFinalizer(scope.value, release) : Effect.void)
    return Effect.andThen(releaseWithConnection, next).pipe(
      Effect.onExit((exit) => exit._tag === "Success" && exit.value._tag === "Accept" ? Effect.void : release),
      Effect.map((decision): UpgradeDecision<R> =>
        decision._tag === "Accept"
          ? { ...decision, handler: (connection) => Effect.ensuring(decision.handler(connection), release) }
          : decision
      )
    )
  }
}

/** Log every upgrade decision (path, peer, status). */
export const logging: UpgradeMiddleware<never> = <R>(
  context: UpgradeContext,
  next: Effect.Effect<UpgradeDecision<R>, never, R>
) =>
  Effect.tap(next, (decision) =>
    Effect.logInfo(
      `upgrade ${context.path} from ${context.peer.remoteAddress ?? "?"}: ${
        decision._tag === "Accept" ? `101${decision.protocol ? ` (${decision.protocol})` : ""}` : decision.response.status
      }`
    ))

/**
 * Token bucket per connection, on Effect's `Clock` (so `TestClock` drives it):
 * each message takes a token; `capacity` tokens at most, `refillPerSecond`
 * added back. A message without a token closes the connection (1008 by
 * default, RFC 6455 §7.4.1) and never reaches the handler.
 */
export const rateLimit = (options: {
  readonly capacity: number
  readonly refillPerSecond: number
  readonly closeCode?: number
}): ConnectionMiddleware<never> =>
<R>(handler: Handler<R>): Handler<R> =>
(connection) =>
  Effect.gen(function*() {
    let tokens = options.capacity
    let last = yield* Clock.currentTimeMillis
    let exceeded = false
    const take = Effect.map(Clock.currentTimeMillis, (now) => {
      tokens = Math.min(options.capacity, tokens + ((now - last) / 1000) * options.refillPerSecond)
      last = now
      if (tokens < 1) return (exceeded = true, false)
      tokens -= 1
      return true
    })
    const messages = connection.messages.pipe(
      Stream.mapEffect((message) => Effect.map(take, (ok) => (ok ? message : undefined))),
      Stream.takeWhile((message): message is Message => message !== undefined),
      Stream.onEnd(Effect.suspend(() =>
        exceeded ? connection.close(options.closeCode ?? CloseCode.PolicyViolation, "rate limit exceeded") : Effect.void
      ))
    )
    return yield* handler(withOverrides(connection, { messages }))
  })

/**
 * Run the handler in a tracing span (`ws.connection`, Effect's tracer) with
 * the path, peer and subprotocol as attributes, and one `ws.message` span
 * event per message received.
 */
export const tracing: ConnectionMiddleware<never> = <R>(handler: Handler<R>): Handler<R> => (connection) =>
  handler(withOverrides(connection, {
    messages: connection.messages.pipe(
      Stream.tap((message) =>
        Effect.all([Effect.currentSpan, Clock.currentTimeNanos]).pipe(
          Effect.tap(([span, now]) =>
            Effect.sync(() => span.event("ws.message", now, { type: message._tag, bytes: message.data.length }))
          ),
          Effect.ignore
        )
      )
    )
  })).pipe(
    Effect.withSpan("ws.connection", {
      attributes: {
        "ws.path": connection.path,
        "ws.connection_id": connection.id,
        "net.peer.address": connection.remoteAddress ?? "",
        "ws.protocol": connection.protocol ?? ""
      }
    })
  )
