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

/** A display name: trimmed, 1 to 32 characters. */
export const Name = Schema.Trim.check(Schema.isMinLength(1), Schema.isMaxLength(32))
/** A chat message's text: 1 to 2000 characters. */
export const Text = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(2000))

/** What a chat client sends. */
export const ClientMessage = Schema.Union([
  Schema.Struct({ type: Schema.Literal("join"), name: Name }),
  Schema.Struct({ type: Schema.Literal("message"), text: Text })
])
export type ClientMessage = typeof ClientMessage.Type

const Members = Schema.Array(Schema.String)

/** What the chat server sends. `time` is an ISO 8601 timestamp. */
export const ServerMessage = Schema.Union([
  Schema.Struct({ type: Schema.Literal("joined"), name: Schema.String, members: Members }),
  Schema.Struct({ type: Schema.Literal("left"), name: Schema.String, members: Members }),
  Schema.Struct({ type: Schema.Literal("message"), from: Schema.String, text: Schema.String, time: Schema.String }),
  Schema.Struct({ type: Schema.Literal("error"), message: Schema.String })
])
export type ServerMessage = typeof ServerMessage.Type

const errorReply = (error: Typed.CodecError): ServerMessage => ({
  type: "error",
  // The Schema message, on one line ("... at [\"name\"]").
  message: `invalid message: ${error.detail.replace(/\s*\n\s*/g, " ")}`
})

const roomPattern = /^[A-Za-z0-9_-]{1,32}$/

// Room names become topic names and appear on the page: keep them short and plain.
const validRoom: Router.UpgradeMiddleware<never> = (context, next) => {
  const room = context.params["room"]
  return room === undefined || roomPattern.test(room)
    ? next
    : Effect.succeed({ _tag: "Reject", response: Router.text("room names are 1-32 letters, digits, _ or -\n", 400) })
}

/** The chat handler: join once with a name, then messages go to everyone in the room (sender included). */
const chat = (broker: Broker["Service"], presence: Presence.Presence["Service"]) =>
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
        const publish = (message: ServerMessage) =>
          Effect.flatMap(conn.encode(message), (encoded) => broker.publish(topic, encoded))
        const reply = (message: string) => Effect.ignore(conn.send({ type: "error", message }))
        // The membership lives in its own scope, closed before "left" goes out (so the list is without us).
        const leave = (who: string, membership: Scope.Closeable) =>
          Scope.close(membership, Exit.void).pipe(
            Effect.andThen(broker.unsubscribe(topic, conn.raw)),
            Effect.andThen(presence.members(room)),
            Effect.flatMap((members) => Effect.ignore(publish({ type: "left", name: who, members })))
          )

        yield* conn.messages.pipe(
          Stream.runForEach((message) =>
            Effect.gen(function*() {
              switch (message.type) {
                case "join": {
                  if (name !== undefined) return yield* reply(`already joined as ${name}`)
                  const membership = yield* Scope.make()
                  // Presence (this process, or every node on Redis) keeps names unique per room.
                  const taken = yield* presence.join(room, message.name).pipe(
                    Scope.provide(membership),
                    Effect.as(false),
                    Effect.catchTag("NameTakenError", () => Effect.as(Scope.close(membership, Exit.void), true))
                  )
                  if (taken) return yield* reply(`the name ${message.name} is taken in ${room}`)
                  name = message.name
                  yield* broker.subscribe(topic, conn.raw)
                  yield* Effect.addFinalizer(() => leave(message.name, membership))
                  return yield* publish({ type: "joined", name, members: yield* presence.members(room) })
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
    const chatHandler = chat(broker, options.presence ?? Presence.makeMemory())
    const chatOptions: Router.WsRouteOptions<never> = {
      upgrade: [validRoom],
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
    const withFallback = Router.make([...routes, Router.ws("/*", echo)])
    const strict = Router.make(routes)
    return { http: strict.http, upgrade: withFallback.upgrade }
  })
