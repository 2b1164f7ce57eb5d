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
import * as Stream from "effect/Stream"
import * as CloseCode from "../domain/CloseCode.ts"
import { type Connection, withOverrides } from "./Connection.ts"
import type { UpgradeDecision } from "./App.ts"
import type { Message } from "./Message.ts"
import type { ConnectionMiddleware, Handler, UpgradeContext, UpgradeMiddleware } from "./Router.ts"

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

/** Where an auth token is read from. */
export type TokenSource =
  | { readonly header: string; readonly scheme?: string } // e.g. { header: "authorization", scheme: "Bearer" }
  | { readonly cookie: string }
  | { readonly query: string }

const readCookie = (cookieHeader: string | undefined, name: string): string | undefined => {
  if (cookieHeader === undefined) return undefined
  for (const part of cookieHeader.split(";")) {
    const eq = part.indexOf("=")
    if (eq > 0 && part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim())
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
 * Authenticate the upgrade: no token → 401, `verify` fails → 403. Given a
 * service key (`service`), the principal `verify` returns is provided as that
 * service to the rest of the upgrade and to the handler, so a handler may
 * `yield*` it and the route does not need it. It is also put in the
 * connection's `attributes.principal` (untyped: read with {@link principal}).
 *
 * @example
 * class User extends Context.Service<User, { readonly name: string }>()("app/User") {}
 * const login = Middleware.auth({ query: "token" }, (token) =>
 *   token === "secret" ? Effect.succeed({ name: "ada" }) : Effect.fail("bad token"), User)
 * Router.ws("/me", (conn) => Effect.flatMap(User, (user) => conn.send(user.name)), { upgrade: [login] })
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
  return <R2>(context: UpgradeContext, next: Effect.Effect<UpgradeDecision<R2>, never, R2>) => {
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
}

/** The principal stored by {@link auth} in `attributes` (untyped; prefer giving `auth` a service key). */
export const principal = <P>(connection: Connection): P | undefined => connection.attributes["principal"] as P | undefined

/**
 * At most `max` open connections per remote address; more get 429
 * (RFC 6585 §4). Counted from the 101 until the handler ends.
 */
export const connectionLimitPerIp = (max: number): UpgradeMiddleware<never> => {
  const open = new Map<string, number>()
  return <R>(context: UpgradeContext, next: Effect.Effect<UpgradeDecision<R>, never, R>) => {
    const ip = context.peer.remoteAddress ?? "unknown"
    if ((open.get(ip) ?? 0) >= max) return Effect.succeed(rejectWith(429, "too many connections\n"))
    // Reserve the slot before `next`, so concurrent upgrades behind an asynchronous middleware cannot overshoot.
    open.set(ip, (open.get(ip) ?? 0) + 1)
    const release = Effect.sync(() => {
      const n = (open.get(ip) ?? 1) - 1
      if (n <= 0) open.delete(ip)
      else open.set(ip, n)
    })
    return Effect.onExit(next, (exit) =>
      exit._tag === "Success" && exit.value._tag === "Accept" ? Effect.void : release).pipe(
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
