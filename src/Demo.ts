/**
 * The application `npm start` serves:
 * - WebSocket echo on `/echo`, `/` and every path no other route claims (what
 *   conformance suites drive);
 * - a chat on `/chat` and `/chat/:room`: typed JSON messages (Schema), rooms
 *   on the `Broker`, presence;
 * - `GET /`: the demo page (chat and echo in the browser), `GET /healthz`,
 *   `GET /metrics` (Prometheus).
 *
 * @example
 * const program = Effect.gen(function*() {
 *   const metrics = yield* Metrics.make
 *   let state: Server.ServerState | undefined
 *   const app = yield* Demo.make({ metrics, state: () => state })
 *   return yield* Server.serve(app, { hooks: metrics.hooks, onState: (s) => (state = s) })
 * }).pipe(Effect.provide(Broker.layerMemory))
 */
import { readFileSync } from "node:fs"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import * as SchemaGetter from "effect/SchemaGetter"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { Broker } from "./services/Broker.ts"
import type { Connection } from "./services/Connection.ts"
import * as Metrics from "./services/Metrics.ts"
import * as Middleware from "./services/Middleware.ts"
import type { App } from "./services/App.ts"
import * as Presence from "./services/Presence.ts"
import * as Router from "./services/Router.ts"
import type { HttpResponse, ServerState } from "./services/Server.ts"
import * as Typed from "./services/Typed.ts"

/** Echo every message back as the same type (text stays text, binary stays binary). */
export const echo = (connection: Connection) =>
  connection.messages.pipe(Stream.runForEachArray((messages) => connection.sendAll(messages)))

const echoPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wsreactor</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>wsreactor</h1>
<p>A WebSocket server (RFC 6455) built on Effect. Connect a WebSocket client to any path on this port:
every text and binary message is echoed back.</p>
</body></html>
`

/** Echo on every path; plain GETs get a short page, other methods 405. The conformance suites run against it. */
export const echoApp: App<never> = {
  http: (request) =>
    Effect.succeed(
      request.method === "GET" || request.method === "HEAD"
        ? { status: 200, headers: [["Content-Type", "text/html; charset=utf-8"]], body: echoPage }
        : { status: 405, headers: [["Allow", "GET"]], body: "method not allowed\n" }
    ),
  upgrade: () => Effect.succeed({ _tag: "Accept", handler: echo })
}

// ---------------------------------------------------------------------------
// Chat protocol
// ---------------------------------------------------------------------------

// Characters that render as nothing (or as a blank) and so make look-alike names: controls,
// format characters (zero-width space and joiners, bidi overrides, U+FEFF), private use,
// unassigned, line/paragraph separators, spaces other than U+0020, and the Hangul and braille
// fillers that are letters or symbols by category but print blank.
const invisible = /[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Zl}\p{Zp}\u115F\u1160\u3164\uFFA0\u2800]|(?! )\p{Zs}/u

/**
 * A display name: NFKC-normalised (UAX #15: full-width and compatibility forms
 * fold to one spelling, so `Ａdmin` is `Admin`), trimmed, 1 to 32 characters,
 * no invisible or format characters (`Admin\u200b` is refused, not a second Admin).
 *
 * @example
 * Schema.decodeUnknownSync(Name)(" Ａda ") // "Ada"
 */
export const Name = Schema.String.pipe(
  Schema.decode({
    decode: SchemaGetter.transform((s: string) => s.normalize("NFKC").trim()),
    encode: SchemaGetter.transform((s: string) => s)
  })
).check(
  Schema.isMinLength(1),
  Schema.isMaxLength(32),
  Schema.makeFilter((s: string) => !invisible.test(s) || "names cannot contain invisible or format characters")
)
/** A chat message's text: 1 to 2000 characters. */
export const Text = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(2000))

/** What a chat client sends. */
export const ClientMessage = Schema.Union([
  Schema.Struct({ type: Schema.Literal("join"), name: Name }),
  Schema.Struct({ type: Schema.Literal("message"), text: Text })
])
export type ClientMessage = typeof ClientMessage.Type

const Members = Schema.Array(Schema.String)

/**
 * What the chat server sends. `time` is an ISO 8601 timestamp. Presence: the
 * joiner's own `joined` carries the full member list; everyone else gets
 * `joined`/`left` with the name only (a delta), so a join costs O(members)
 * bytes, not O(members²).
 */
export const ServerMessage = Schema.Union([
  Schema.Struct({ type: Schema.Literal("joined"), name: Schema.String, members: Schema.optionalKey(Members) }),
  Schema.Struct({ type: Schema.Literal("left"), name: Schema.String }),
  Schema.Struct({ type: Schema.Literal("message"), from: Schema.String, text: Schema.String, time: Schema.String }),
  Schema.Struct({ type: Schema.Literal("error"), message: Schema.String })
])
export type ServerMessage = typeof ServerMessage.Type

const errorReply = (error: Typed.CodecError): ServerMessage => ({
  type: "error",
  // The Schema message, on one line ("... at [\"name\"]").
  message: `invalid message: ${error.detail.replace(/\s*\n\s*/g, " ")}`
})

/** Local members per room (this process), for the rooms cap. */
type LocalRooms = Map<string, number>

/** Bounds on the chat's presence state, so joins cannot grow it without end. */
export const ChatLimits = Schema.Struct({
  /** Members per room; a join beyond gets an error message (default 1000). */
  maxMembersPerRoom: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 1_000_000 })),
  /** Rooms with members, per process; joining a new room beyond gets an error message (default 1000). */
  maxRooms: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 1_000_000 }))
})
export type ChatLimits = typeof ChatLimits.Type

/** The defaults of {@link ChatLimits}. */
export const defaultChatLimits: ChatLimits = { maxMembersPerRoom: 1000, maxRooms: 1000 }

const sameName = (a: string, b: string) => a.toLowerCase() === b.toLowerCase()

const roomPattern = /^[A-Za-z0-9_-]{1,32}$/

// Room names become topic names and appear on the page: keep them short and plain.
const validRoom: Router.UpgradeMiddleware<never> = (context, next) => {
  const room = context.params["room"]
  return room === undefined || roomPattern.test(room)
    ? next
    : Effect.succeed({ _tag: "Reject", response: Router.text("room names are 1-32 letters, digits, _ or -\n", 400) })
}

/** The chat handler: join once with a name, then messages go to everyone in the room (sender included). */
const chat = (
  broker: Broker["Service"],
  presence: Presence.Presence["Service"],
  localRooms: LocalRooms,
  limits: ChatLimits
) =>
  Typed.handler(
    {
      incoming: ClientMessage,
      outgoing: ServerMessage,
      // A typo in a hand-written client should not cost the connection.
      onDecodeError: Typed.replyOnDecodeError(errorReply)
    },
    (conn) =>
      Effect.gen(function*() {
        const room = conn.raw.params["room"] ?? "lobby"
        const topic = `chat:${room}`
        let name: string | undefined
        const publish = (message: ServerMessage, except?: typeof conn.raw) =>
          Effect.flatMap(conn.encode(message), (encoded) => broker.publish(topic, encoded, { except }))
        const reply = (message: string) => Effect.ignore(conn.send({ type: "error", message }))
        // The membership lives in its own scope, closed before "left" goes out.
        const leave = (who: string, membership: Scope.Closeable) =>
          Effect.suspend(() => {
            const local = (localRooms.get(room) ?? 1) - 1
            if (local <= 0) localRooms.delete(room)
            else localRooms.set(room, local)
            return Scope.close(membership, Exit.void)
          }).pipe(
            Effect.andThen(broker.unsubscribe(topic, conn.raw)),
            // A delta to the others, not the whole list (N joins would cost N² otherwise).
            Effect.andThen(Effect.ignore(publish({ type: "left", name: who })))
          )

        yield* conn.messages.pipe(
          Stream.runForEach((message) =>
            Effect.gen(function*() {
              switch (message.type) {
                case "join": {
                  if (name !== undefined) return yield* reply(`already joined as ${name}`)
                  if (!localRooms.has(room) && localRooms.size >= limits.maxRooms) {
                    return yield* reply(`too many rooms are open (${limits.maxRooms}): join an existing one`)
                  }
                  const present = yield* presence.members(room)
                  if (present.length >= limits.maxMembersPerRoom) {
                    return yield* reply(`the room ${room} is full (${limits.maxMembersPerRoom} members)`)
                  }
                  if (present.some((n) => sameName(n, message.name))) {
                    return yield* reply(`the name ${message.name} is taken in ${room}`)
                  }
                  const membership = yield* Scope.make()
                  // Presence (this process, or every node on Redis) keeps names unique per room.
                  const taken = yield* presence.join(room, message.name).pipe(
                    Scope.provide(membership),
                    Effect.as(false),
                    Effect.catchTag("NameTakenError", () => Effect.as(Scope.close(membership, Exit.void), true))
                  )
                  if (taken) return yield* reply(`the name ${message.name} is taken in ${room}`)
                  name = message.name
                  localRooms.set(room, (localRooms.get(room) ?? 0) + 1)
                  yield* Effect.addFinalizer(() => leave(message.name, membership))
                  // The full list to the joiner only, then a delta to the others.
                  yield* conn.send({ type: "joined", name, members: yield* presence.members(room) })
                  yield* broker.subscribe(topic, conn.raw)
                  return yield* publish({ type: "joined", name }, conn.raw)
                }
                case "message": {
                  if (name === undefined) return yield* reply("join first: {\"type\":\"join\",\"name\":\"...\"}")
                  const now = yield* Clock.currentTimeMillis
                  return yield* publish({ type: "message", from: name, text: message.text, time: new Date(now).toISOString() })
                }
              }
            })
          )
        )
      }).pipe(Effect.scoped)
  )

// ---------------------------------------------------------------------------
// The app
// ---------------------------------------------------------------------------

const page = readFileSync(new URL("./demo/page.html", import.meta.url), "utf8")

// A small SVG icon (two arrows, one each way), so browsers opening the demo get a favicon instead of a 404.
// The page links it with rel="icon"; /favicon.ico answers too, for browsers that ask without a link.
const favicon = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">
<rect width="32" height="32" rx="7" fill="#0f1222"/>
<path d="M6 11h17l-4-4M26 21H9l4 4" fill="none" stroke="#7c8cff" stroke-width="3" stroke-linecap="round" stroke-linejoin="round"/>
</svg>`
const faviconResponse: HttpResponse = {
  status: 200,
  headers: [["Content-Type", "image/svg+xml"], ["Cache-Control", "public, max-age=86400"]],
  body: favicon
}

export interface DemoOptions {
  /** Served on `GET /metrics`; without it the route answers 404. */
  readonly metrics?: Metrics.ServerMetrics | undefined
  /** The running server's state (from `Server.serve`'s `onState`), for `/healthz`. */
  readonly state?: (() => ServerState | undefined) | undefined
  /** Who is in each chat room; default: this process only (`Presence.makeMemory()`). */
  readonly presence?: Presence.Presence["Service"] | undefined
  /**
   * Origins besides the page's own that may open the chat from a browser
   * (`https://app.example`). Same-origin pages always may; see `Middleware.originPolicy`.
   */
  readonly allowOrigins?: ReadonlyArray<string> | undefined
  /** Presence bounds (validated; defaults in {@link defaultChatLimits}). */
  readonly chatLimits?: Partial<ChatLimits> | undefined
  /** Open WebSocket connections per remote address on every route (429 beyond); 0 or absent: no limit. */
  readonly maxConnectionsPerIp?: number | undefined
}

/**
 * Build the demo app on the `Broker` in context.
 *
 * @example
 * const app = Effect.runSync(Demo.make().pipe(Effect.provide(Broker.layerMemory)))
 */
export const make = (options: DemoOptions = {}): Effect.Effect<App<never>, never, Broker> =>
  Effect.gen(function*() {
    const broker = yield* Broker
    const createdAt = yield* Clock.currentTimeMillis
    const limits = Schema.decodeUnknownSync(ChatLimits)({ ...defaultChatLimits, ...options.chatLimits })
    const chatHandler = chat(broker, options.presence ?? Presence.makeMemory(), new Map(), limits)
    const chatOptions: Router.WsRouteOptions<never> = {
      // The chat is browser-facing: a page on another site must not open it in a visitor's browser
      // (cross-site WebSocket hijacking, RFC 6455 §10.2).
      upgrade: [Middleware.originPolicy({ sameOriginOr: options.allowOrigins ?? [] }), validRoom],
      // A flood closes with 1008 (RFC 6455 §7.4.1) before it reaches the room.
      connection: [Middleware.rateLimit({ capacity: 20, refillPerSecond: 5 })]
    }
    const routes: ReadonlyArray<Router.Route<never>> = [
      Router.get("/", () => Effect.succeed(Router.html(page))),
      Router.get("/favicon.svg", () => Effect.succeed(faviconResponse)),
      Router.get("/favicon.ico", () => Effect.succeed(faviconResponse)),
      Router.get("/healthz", () =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          const state = options.state?.()
          return Router.json(
            {
              status: state?.shuttingDown === true ? "shutting-down" : "ok",
              uptimeSeconds: Math.max(0, Math.floor((now - (state?.startedAt ?? createdAt)) / 1000)),
              connections: state?.connections.size ?? 0,
              // Redis down is not a reason to take this node out of a load balancer: it still serves
              // its own clients; the state says why other nodes' messages are missing.
              broker: broker.status?.()
            },
            state?.shuttingDown === true ? 503 : 200
          )
        })),
      Router.get("/metrics", () =>
        options.metrics === undefined
          ? Effect.succeed(Router.text("metrics are not enabled\n", 404))
          : Effect.map(options.metrics.render, Metrics.response)),
      Router.ws("/", echo),
      Router.ws("/echo", echo),
      Router.ws("/chat", chatHandler, chatOptions),
      Router.ws("/chat/:room", chatHandler, chatOptions)
    ]
    // Upgrades on any other path echo (conformance suites pick their own paths); plain HTTP is
    // routed without that catch-all, so unknown pages are 404 and WebSocket-only paths 426.
    const perIp = options.maxConnectionsPerIp ?? 0
    const withFallback = Router.make([...routes, Router.ws("/*", echo)], {
      upgrade: perIp > 0 ? [Middleware.connectionLimitPerIp(perIp)] : []
    })
    const strict = Router.make(routes)
    return { http: strict.http, upgrade: withFallback.upgrade }
  })
