/**
 * A WebSocket client (RFC 6455 §4.1, RFC 7692) on the same protocol core as
 * the server: `Handshake.clientRequest` / `validateResponse`, the `Protocol`
 * in the client role (every frame masked with a fresh key from the CSPRNG,
 * §5.3), the server's `Inbox` (bounded: the socket is paused while it is
 * full) and `Outbox` (batched writes, `bufferedAmount`, a backpressure policy).
 *
 * @example
 * import { Effect, Stream } from "effect"
 * import { Client } from "wsreactor"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const conn = yield* Client.connect("ws://localhost:8888/echo")
 *   yield* conn.send("hello")
 *   const [reply] = yield* conn.messages.pipe(Stream.take(1), Stream.runCollect)
 * })) // leaving the scope closes with 1000 and waits for the server to close TCP (§7.1.1)
 */
import { randomFillSync } from "node:crypto"
import * as Net from "node:net"
import * as Tls from "node:tls"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as ClientDeflate from "../domain/ClientDeflate.ts"
import * as CloseCode from "../domain/CloseCode.ts"
import * as Handshake from "../domain/Handshake.ts"
import { type DeflateOptions, resolveDeflateOptions } from "../domain/PerMessageDeflate.ts"
import { NodeIncoming } from "../layers/NodeTcp.ts"
import { CompressionLimiter, makeCompressor } from "./Compression.ts"
import { ClientConnection, ClientSession } from "./ClientSession.ts"
import type { CloseInfo, MessageDroppedError } from "./Connection.ts"
import type * as Message from "./Message.ts"
import type { Incoming } from "./Transport.ts"
import * as Deadlines from "./Deadlines.ts"
import * as Options from "./Options.ts"
import * as OptionsSchema from "./OptionsSchema.ts"

export { ClientConnection } from "./ClientSession.ts"

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

const Token = Schema.String.check(Schema.isPattern(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/))

// The limits and timeouts a connection has on either end, with the server's ranges (no idle timeout).
const { idleTimeoutMs: _serverOnly, ...connectionFields } = OptionsSchema.ServerOptions.fields
const { idleTimeoutMs: _serverDefault, ...connectionDefaults } = Options.defaultOptions

/**
 * Client limits and handshake settings. Every field has a safe default
 * ({@link defaultOptions}). The limits and timeouts are the server's
 * (`Options.ServerOptions`), read from the client's side: `maxHeaderBytes`
 * bounds the server's response head, `handshakeTimeoutMs` runs from the TCP
 * connect to a valid 101 (TLS included), `closeTimeoutMs` is the time the
 * server has to answer our close and close TCP (RFC 6455 §7.1.1), and the
 * heartbeat pings the server.
 */
export const ClientOptions = Schema.Struct({
  ...connectionFields,
  /** Extra request headers (Authorization, Cookie...). Headers the handshake manages itself are ignored. */
  headers: Schema.Record(Schema.String, Schema.String),
  /** Subprotocols to offer (RFC 6455 §1.9), in order of preference; each must be an HTTP token. */
  protocols: Schema.Array(Token),
  /** The `Origin` header (RFC 6455 §10.2), for servers that check it. */
  origin: Schema.UndefinedOr(Schema.String)
})
export type ClientOptions = typeof ClientOptions.Type

export const defaultOptions: ClientOptions = {
  ...connectionDefaults,
  headers: {},
  protocols: [],
  origin: undefined
}

/** TLS settings for `wss://` (passed to `tls.connect`). */
export interface TlsOptions {
  /** Trusted CA certificates (PEM), instead of Node's bundled roots. */
  readonly ca?: string | Uint8Array | ReadonlyArray<string | Uint8Array> | undefined
  /** SNI and certificate name to check; defaults to the URL's host name (none for an IP address). */
  readonly servername?: string | undefined
  /** Refuse a certificate that does not verify (default true: never turn it off outside tests). */
  readonly rejectUnauthorized?: boolean | undefined
  /** A client certificate and key (mutual TLS). */
  readonly cert?: string | Uint8Array | undefined
  readonly key?: string | Uint8Array | undefined
}

/** What {@link connect} takes: any {@link ClientOptions} field, plus compression and TLS. */
export interface ConnectOptions extends Partial<ClientOptions> {
  /**
   * Offer permessage-deflate (RFC 7692): `true` for the defaults, or options read from the client's
   * side (`clientMaxWindowBits`: the window we compress with, 9..15, offered as
   * `client_max_window_bits`; `serverMaxWindowBits`: asked of the server). Off by default.
   */
  readonly perMessageDeflate?: boolean | Partial<DeflateOptions> | undefined
  readonly tls?: TlsOptions | undefined
  /**
   * Opens the byte stream the WebSocket runs over, instead of TCP/TLS (`tls`
   * is then unused). `wsreactor/testing`'s `TestServer.connector` serves the
   * client in memory, so client code runs under `TestClock`.
   */
  readonly connector?: Connector | undefined
}

/** Where {@link connect} goes: the parsed `ws://` / `wss://` URL. */
export interface ConnectTarget {
  readonly href: string
  readonly secure: boolean
  /** The host name or IP address (no brackets around IPv6). */
  readonly host: string
  readonly port: number
}

/**
 * Opens a byte stream to `target` (the `Transport.Incoming` shape the server
 * uses, in the client's hands); a failure is a {@link ConnectError}. The
 * client owns the stream from then on and destroys it when done.
 *
 * @example
 * const server = yield* Testing.TestServer
 * const conn = yield* Client.connect("ws://test/chat", { connector: server.connector })
 */
export type Connector = (target: ConnectTarget) => Effect.Effect<Incoming, ConnectError>

/** Options that fail validation (or a URL that is not ws:// or wss://). */
export class ClientOptionsError extends Data.TaggedError("ClientOptionsError")<{
  readonly detail: string
}> {
  override get message(): string {
    return `invalid client options: ${this.detail}`
  }
}

interface Resolved {
  readonly options: ClientOptions
  readonly deflate: DeflateOptions | undefined
  readonly tls: TlsOptions
  readonly connector: Connector | undefined
}

const resolve = (input: ConnectOptions): Effect.Effect<Resolved, ClientOptionsError> =>
  Effect.gen(function*() {
    const { perMessageDeflate, tls, connector, ...rest } = input
    const defined = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined))
    const decoded = yield* Effect.mapError(
      Schema.decodeUnknownEffect(ClientOptions)({ ...defaultOptions, ...defined }, { errors: "all" }),
      (error) => new ClientOptionsError({ detail: error.message.replace(/\s*\n\s*/g, " ") })
    )
    let deflate: DeflateOptions | undefined
    if (perMessageDeflate !== undefined && perMessageDeflate !== false) {
      const resolved = resolveDeflateOptions(perMessageDeflate === true ? {} : perMessageDeflate)
      if (resolved._tag === "Error") return yield* new ClientOptionsError({ detail: resolved.error.detail })
      if (resolved.options.clientMaxWindowBits === 8) {
        return yield* new ClientOptionsError({ detail: "perMessageDeflate.clientMaxWindowBits: 8 is not supported (9..15)" })
      }
      deflate = resolved.options
    }
    return { options: decoded, deflate, tls: tls ?? {}, connector }
  })

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** Why the opening handshake failed. */
export type HandshakeErrorReason =
  /** No valid 101 within `handshakeTimeoutMs` (TCP and TLS included). */
  | "Timeout"
  /** The server closed the connection before a complete response. */
  | "Closed"
  /** The response head is not HTTP/1.1 (or too large). */
  | "Malformed"
  /** The status is not 101 (`status` says which). */
  | "BadStatus"
  /** Upgrade / Connection headers missing (RFC 6455 §4.1, client steps 2-3). */
  | "NotUpgrade"
  /** Sec-WebSocket-Accept does not match our key (§4.1 step 4). */
  | "BadAccept"
  /** The server chose a subprotocol we did not offer (§4.1 step 6). */
  | "UnexpectedProtocol"
  /** We offered subprotocols and the server chose none. */
  | "MissingProtocol"
  /** An extension we did not offer, or permessage-deflate parameters we cannot accept (§4.1 step 5, RFC 7692 §7.1). */
  | "UnexpectedExtension"

/**
 * The opening handshake failed: the server answered with another status, or
 * its 101 was invalid.
 *
 * @example
 * Client.connect(url).pipe(Effect.catchTag("HandshakeError", (e) =>
 *   e.status === 401 ? login : Effect.fail(e)))
 */
export class HandshakeError extends Data.TaggedError("HandshakeError")<{
  readonly reason: HandshakeErrorReason
  /** The HTTP status of the response, when one came. */
  readonly status: number | undefined
  readonly detail: string
  /** The response head, when one came (for a 401's WWW-Authenticate, a 3xx's Location...). */
  readonly response?: Handshake.HttpResponseHead | undefined
}> {
  override get message(): string {
    return `WebSocket handshake failed: ${this.reason}${this.status === undefined ? "" : ` (${this.status})`}: ${this.detail}`
  }
}

/** The TCP connection or the TLS handshake failed (DNS, refused, certificate...). */
export class ConnectError extends Data.TaggedError("ConnectError")<{
  readonly url: string
  readonly cause: unknown
}> {
  override get message(): string {
    return `cannot connect to ${this.url}: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

export type ConnectFailure = HandshakeError | ConnectError | ClientOptionsError

// ---------------------------------------------------------------------------
// Masking keys (RFC 6455 §5.3: from a strong source of entropy, fresh per frame)
// ---------------------------------------------------------------------------

const POOL_SIZE = 4096
const pool = new Uint8Array(POOL_SIZE)
let poolAt = POOL_SIZE // filled on first use: nothing random is drawn at import
// One 4-byte key handed out again and again: the encoder reads it at once (into the frame header
// and the masking loop) and never keeps it, so refilling it beats allocating a view per frame.
const key = new Uint8Array(4)
const maskKey = (): Uint8Array => {
  if (poolAt === POOL_SIZE) {
    randomFillSync(pool)
    poolAt = 0
  }
  key[0] = pool[poolAt]!
  key[1] = pool[poolAt + 1]!
  key[2] = pool[poolAt + 2]!
  key[3] = pool[poolAt + 3]!
  poolAt += 4
  return key
}

// ---------------------------------------------------------------------------
// connect
// ---------------------------------------------------------------------------

interface Target {
  readonly href: string
  readonly secure: boolean
  /** For net.connect: no brackets around IPv6. */
  readonly host: string
  readonly port: number
  /** The Host header (RFC 6455 §4.1 item 4: port only when not the default). */
  readonly hostHeader: string
  readonly path: string
  readonly query: string
}

const parseUrl = (url: string | URL): Effect.Effect<Target, ClientOptionsError> =>
  Effect.suspend(() => {
    let parsed: URL
    try {
      parsed = typeof url === "string" ? new URL(url) : url
    } catch {
      return Effect.fail(new ClientOptionsError({ detail: `url: not a URL: ${String(url)}` }))
    }
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      return Effect.fail(new ClientOptionsError({ detail: `url: expected ws:// or wss://, got ${parsed.protocol}` }))
    }
    // RFC 6455 §3: no fragment in a WebSocket URI.
    if (parsed.hash !== "") return Effect.fail(new ClientOptionsError({ detail: "url: a WebSocket URL has no fragment" }))
    const secure = parsed.protocol === "wss:"
    const hostname = parsed.hostname.startsWith("[") ? parsed.hostname.slice(1, -1) : parsed.hostname
    return Effect.succeed({
      href: parsed.href,
      secure,
      host: hostname,
      port: parsed.port === "" ? (secure ? 443 : 80) : Number(parsed.port),
      hostHeader: parsed.host,
      path: parsed.pathname === "" ? "/" : parsed.pathname,
      query: parsed.search.startsWith("?") ? parsed.search.slice(1) : parsed.search
    })
  })

// Client reads, plain or TLS, go through `onread` (the client makes its socket, so it can ask for it; the
// server's accepted sockets cannot, see NodeIncoming): reads land in one reused buffer, instead of the
// stream's 'data' path (a 64 KiB allocation per read, Readable bookkeeping and a nextTick per chunk).
// One buffer serves every socket: a read is handled before its callback returns, and nothing else
// runs in between. A small read is copied out of it (a slice of Node's Buffer pool, then views per
// message); a large one is lent to the decoder (`borrowed`), which fills a large payload straight
// from it and copies out only what it keeps: no 64 KiB allocation and copy per read (64 KiB echoes
// went from 0.86x to 1.13-1.23x the ws client's rate).
let readBuffer: Uint8Array | undefined
const sharedReadBuffer = (): Uint8Array => (readBuffer ??= new Uint8Array(64 * 1024))
// Node's Buffer pool serves allocations below 4 KiB; above, a copy costs a backing store of its own.
const LEND_FROM = 4096

/** A client socket (TCP or TLS) read through `onread`: chunks wait in `early` until `listen`. */
class ClientIncoming extends NodeIncoming {
  private onData: ((chunk: Uint8Array, borrowed?: boolean) => void) | undefined = undefined
  private early: Array<Uint8Array> | undefined = undefined
  private finished = false

  /** The `onread` callback: the read, lent or copied (the buffer is reused), to `onData` or kept for it. */
  readonly onRead = (bytes: number, buffer: Uint8Array): boolean => {
    const onData = this.onData
    if (onData !== undefined && bytes >= LEND_FROM) {
      onData(bytes === buffer.length ? buffer : buffer.subarray(0, bytes), true)
      return true
    }
    const chunk = Buffer.allocUnsafe(bytes)
    chunk.set(bytes === buffer.length ? buffer : buffer.subarray(0, bytes))
    if (onData !== undefined) onData(chunk)
    else (this.early ??= []).push(chunk)
    return true
  }

  override listen(onData: (chunk: Uint8Array, borrowed?: boolean) => void, onEnd: () => void): void {
    const end = () => {
      if (this.finished) return
      this.finished = true
      onEnd()
    }
    this.conn.on("end", end)
    this.conn.on("close", end)
    const early = this.early
    this.early = undefined
    this.onData = onData
    if (early !== undefined) for (let i = 0; i < early.length; i++) onData(early[i]!)
    this.conn.resume()
  }
}

const openSocket = (target: Target, tls: TlsOptions): Effect.Effect<NodeIncoming, ConnectError> =>
  Effect.callback<NodeIncoming, ConnectError>((resume) => {
    // Reading starts once connected, when `incoming` exists. TLS takes `onread` too (decrypted records,
    // up to 16 KiB each; Node documents it for `tls.connect`, @types/node does not declare it yet).
    const onread: Net.OnReadOpts = {
      buffer: sharedReadBuffer(),
      callback: (bytes, buffer) => incoming.onRead(bytes, buffer)
    }
    const socket = target.secure
      ? Tls.connect({
        host: target.host,
        port: target.port,
        servername: tls.servername ?? (Net.isIP(target.host) === 0 ? target.host : undefined),
        ca: tls.ca as Tls.ConnectionOptions["ca"],
        cert: tls.cert as Tls.ConnectionOptions["cert"],
        key: tls.key as Tls.ConnectionOptions["key"],
        rejectUnauthorized: tls.rejectUnauthorized ?? true,
        ALPNProtocols: ["http/1.1"],
        onread
      } as Tls.ConnectionOptions)
      : Net.connect({ host: target.host, port: target.port, onread })
    const incoming = new ClientIncoming(socket)
    const onError = (cause: unknown) => {
      socket.destroy()
      resume(Effect.fail(new ConnectError({ url: target.href, cause })))
    }
    socket.once("error", onError)
    socket.once(target.secure ? "secureConnect" : "connect", () => {
      socket.off("error", onError)
      // Nagle would hold small frames back by up to 40 ms.
      socket.setNoDelay(true)
      resume(Effect.succeed(incoming))
    })
    return Effect.sync(() => {
      socket.off("error", onError)
      socket.destroy()
    })
  })

const handshakeError = (
  reason: HandshakeErrorReason,
  detail: string,
  response?: Handshake.HttpResponseHead
) => new HandshakeError({ reason, detail, status: response?.status, response })

const base64Key = (): string => Buffer.from(randomFillSync(new Uint8Array(16))).toString("base64")

/**
 * Open a WebSocket to `url` (`ws://` or `wss://`). The connection lives in
 * the current scope; closing the scope closes it with 1000 and waits (up to
 * `closeTimeoutMs`) for the server to answer and close TCP (RFC 6455 §7.1.1).
 * It yields the same `Connection` shape a server handler gets, plus the
 * server's `response`.
 *
 * Subprotocols: the server's choice must be one we offered; when we offered
 * some and it chose none, the handshake fails too (`MissingProtocol`).
 *
 * @example
 * const conn = yield* Client.connect("wss://example.com/feed", {
 *   protocols: ["v2.feed"],
 *   headers: { Authorization: `Bearer ${token}` },
 *   perMessageDeflate: true
 * })
 * yield* conn.send(JSON.stringify({ subscribe: "prices" }))
 */
export const connect = (
  url: string | URL,
  options: ConnectOptions = {}
): Effect.Effect<ClientConnection, ConnectFailure, Scope.Scope> =>
  Effect.gen(function*() {
    const { options: o, deflate, tls, connector } = yield* resolve(options)
    const target = yield* parseUrl(url)
    const scope = yield* Effect.scope
    // Deadline fibers live in a child scope made first, so they outlast the close below.
    const deadlines = yield* Scope.provide(Deadlines.make, yield* Scope.fork(scope))
    const clock = yield* Clock.Clock
    const limiter = Option.getOrUndefined(yield* Effect.serviceOption(CompressionLimiter))
      ?? CompressionLimiter.of({ withPermit: (yield* Semaphore.make(deflate?.concurrency ?? 10)).withPermit })

    const handshake = Effect.gen(function*() {
      const incoming = connector === undefined ? yield* openSocket(target, tls) : yield* connector(target)
      const session = new ClientSession(incoming, o, deadlines, clock, maskKey)
      return yield* Effect.onError(
        Effect.gen(function*() {
          session.listen()
          const key = base64Key()
          const offer = deflate === undefined ? undefined : ClientDeflate.clientOffer(deflate)
          // clientRequest leaves out user headers the handshake writes itself.
          const requestBytes = Handshake.clientRequest({
            host: target.hostHeader,
            path: target.query === "" ? target.path : `${target.path}?${target.query}`,
            key,
            protocols: o.protocols,
            extensions: offer,
            origin: o.origin,
            headers: Object.entries(o.headers)
          })
          // The connection's `request` is what went on the wire, read back by the server's own parser.
          const sent = Handshake.stepRequest(
            Handshake.initialRequestParser({ maxHeaderBytes: requestBytes.length + 1 }),
            requestBytes
          )
          if (sent._tag !== "Request") return yield* Effect.die(new Error("clientRequest wrote a head it cannot read back"))
          const request = sent.request
          session.incoming.write([requestBytes])
          const head = yield* session.readHead()
          if (head._tag === "Gone") return yield* handshakeError("Closed", "the server closed the connection before answering")
          if (head._tag === "Invalid") return yield* handshakeError("Malformed", head.error.detail)
          const response = head.response
          const checked = Handshake.validateResponse(response, key)
          if (checked._tag === "Error") {
            const reason: HandshakeErrorReason = checked.error.reason === "BadStatus" || checked.error.reason === "BadAccept" ||
                checked.error.reason === "NotUpgrade"
              ? checked.error.reason
              : "Malformed"
            return yield* handshakeError(reason, checked.error.detail, response)
          }
          // RFC 6455 §4.1 step 6: only a subprotocol we offered.
          const protocol = checked.protocol
          if (protocol !== undefined && !o.protocols.includes(protocol)) {
            return yield* handshakeError("UnexpectedProtocol", `server chose '${protocol}', which was not offered`, response)
          }
          if (protocol === undefined && o.protocols.length > 0) {
            return yield* handshakeError("MissingProtocol", `offered ${o.protocols.join(", ")}; the server chose none`, response)
          }
          // §4.1 step 5 and RFC 7692 §7.1: only the extension we offered, with parameters we accept.
          const answer = ClientDeflate.acceptAnswer(checked.extensions, deflate)
          if (answer._tag === "Invalid") return yield* handshakeError("UnexpectedExtension", answer.detail, response)
          const compression = answer._tag === "Agreed"
            ? {
              compressor: yield* makeCompressor(answer.params, deflate!).pipe(
                Effect.provideService(CompressionLimiter, limiter)
              ),
              threshold: deflate!.threshold
            }
            : undefined
          session.open(compression)
          return new ClientConnection(session, request, response, protocol, incoming.remoteAddress)
        }),
        () => Effect.sync(() => session.finish())
      ).pipe(Effect.map((connection) => ({ connection, session })))
    })

    const { connection, session } = yield* handshake.pipe(
      Effect.timeoutOrElse({
        duration: o.handshakeTimeoutMs,
        orElse: () => Effect.fail(handshakeError("Timeout", `no valid 101 within ${o.handshakeTimeoutMs} ms`))
      })
    )
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        session.startClose(CloseCode.Normal, "")
        return session.awaitClosed()
      }).pipe(
        // The session's own close timer ends it; this bound only guards against a bug.
        Effect.timeoutOrElse({ duration: o.closeTimeoutMs + 1000, orElse: () => Effect.void }),
        Effect.ensuring(Effect.sync(() => session.finish()))
      )
    )
    return connection
  })

// ---------------------------------------------------------------------------
// reconnecting
// ---------------------------------------------------------------------------

/** Where a {@link ReconnectingClient} stands. */
export type ConnectionState =
  /** Opening a connection (`attempt` counts from 1 since the last one that opened). */
  | { readonly _tag: "Connecting"; readonly attempt: number }
  /** Open, `onOpen` done and the messages buffered while down sent. */
  | { readonly _tag: "Open"; readonly connection: ClientConnection }
  /** Waiting for the schedule's next delay after `cause` (a failed attempt, or how the last connection closed). */
  | { readonly _tag: "Reconnecting"; readonly attempt: number; readonly cause: ReconnectCause }
  /** Stopped for good: `close` was called, the scope ended, or the schedule gave up (`cause` is the last one). */
  | { readonly _tag: "Closed"; readonly cause: ReconnectCause | undefined }

/** Why a connection is not open: it closed (how), or an attempt failed (why). */
export type ReconnectCause =
  | { readonly _tag: "Disconnected"; readonly info: CloseInfo }
  | { readonly _tag: "Failed"; readonly error: unknown }

/** `send` while no connection is open and the buffer is full (or the client is stopped). */
export class ClientDownError extends Data.TaggedError("ClientDownError")<{
  /** Messages waiting for the next connection. */
  readonly buffered: number
  readonly stopped: boolean
}> {
  override get message(): string {
    return this.stopped
      ? "the reconnecting client is closed"
      : `no open connection and ${this.buffered} message(s) already buffered`
  }
}

/**
 * The default backoff: exponential from 100 ms, doubling, jittered (x0.8..1.2),
 * never more than 30 s between attempts, forever.
 */
export const defaultReconnectSchedule: Schedule.Schedule<Duration.Duration> = Schedule.min([
  Schedule.exponential("100 millis", 2).pipe(Schedule.jittered),
  Schedule.spaced("30 seconds")
])

export interface ReconnectOptions<R = never> extends ConnectOptions {
  /**
   * When to try again, fed with each {@link ReconnectCause}; when it ends, the
   * client stops ({@link defaultReconnectSchedule} never ends). The schedule
   * restarts after every connection that opened.
   */
  readonly schedule?: Schedule.Schedule<unknown, ReconnectCause, never, R> | undefined
  /**
   * Runs after each (re)connect, before the buffered messages are sent and
   * the state turns `Open` (subscribe again, authenticate). A failure closes
   * that connection and counts as a failed attempt.
   */
  readonly onOpen?: ((connection: ClientConnection) => Effect.Effect<void, unknown, R>) | undefined
  /**
   * Messages `send` keeps while no connection is open, sent in order once one
   * is (default 256; 0: `send` fails at once). Past it `send` fails with
   * {@link ClientDownError}. Messages still buffered when the client stops are dropped.
   */
  readonly bufferWhileDown?: number | undefined
}

/** A connection that comes back: see {@link reconnecting}. */
export interface ReconnectingClient {
  /** The current state; `SubscriptionRef.changes(client.state)` streams every change. */
  readonly state: SubscriptionRef.SubscriptionRef<ConnectionState>
  /** The messages of every connection, in order; ends when the client stops. */
  readonly messages: Stream.Stream<Message.Message>
  /** Send on the open connection, or buffer while down (see `bufferWhileDown`). */
  readonly send: (message: Message.Outgoing) => Effect.Effect<void, ClientDownError | MessageDroppedError>
  /** Stop reconnecting and close the open connection (if any) with `code`; waits until it is closed. */
  readonly close: (code?: number, reason?: string) => Effect.Effect<void>
  /** Completes when the client has stopped for good. */
  readonly closed: Effect.Effect<void>
}

/**
 * A client that reconnects on its own: when the connection drops (or an
 * attempt fails) it waits as the `schedule` says and connects again, runs
 * `onOpen` on every new connection, and buffers what is sent while down.
 * The client lives in the current scope; leaving it closes with 1000.
 *
 * @example
 * const client = yield* Client.reconnecting("wss://example.com/feed", {
 *   onOpen: (conn) => conn.send(JSON.stringify({ subscribe: "prices" }))
 * })
 * yield* client.messages.pipe(Stream.runForEach((m) => Console.log(m)), Effect.forkScoped)
 * yield* SubscriptionRef.changes(client.state).pipe(Stream.runForEach((s) => Console.log(s._tag)), Effect.forkScoped)
 */
export const reconnecting = <R = never>(
  url: string | URL,
  options: ReconnectOptions<R> = {}
): Effect.Effect<ReconnectingClient, ClientOptionsError, Scope.Scope | R> =>
  Effect.gen(function*() {
    const { schedule = defaultReconnectSchedule, onOpen, bufferWhileDown = 256, ...connectOptions } = options
    // Bad options and URLs are reported now, not retried forever.
    const resolved = yield* resolve(connectOptions)
    yield* parseUrl(url)
    if (!Number.isInteger(bufferWhileDown) || bufferWhileDown < 0) {
      return yield* new ClientOptionsError({ detail: `bufferWhileDown: expected an integer >= 0, got ${bufferWhileDown}` })
    }
    const state = yield* SubscriptionRef.make<ConnectionState>({ _tag: "Connecting", attempt: 1 })
    const queue = yield* Queue.bounded<Message.Message, Cause.Done>(resolved.options.inboundQueueSize)
    const done = yield* Deferred.make<void>()
    let pending: Array<Message.Outgoing> = []
    let current: ClientConnection | undefined
    let stopped = false

    const buffer = (message: Message.Outgoing): Effect.Effect<void, ClientDownError> =>
      Effect.suspend(() => {
        if (stopped) return Effect.fail(new ClientDownError({ buffered: pending.length, stopped: true }))
        if (pending.length >= bufferWhileDown) {
          return Effect.fail(new ClientDownError({ buffered: pending.length, stopped: false }))
        }
        pending.push(message)
        return Effect.void
      })

    const send = (message: Message.Outgoing): Effect.Effect<void, ClientDownError | MessageDroppedError> =>
      Effect.suspend(() => {
        const conn = current
        if (conn === undefined) return buffer(message)
        // Closed under us: the message waits for the next connection.
        return Effect.catchTag(conn.send(message), "ConnectionClosedError", () => buffer(message))
      })

    // One connection, from connect to its end (how it closed).
    const session = Effect.gen(function*() {
      const conn = yield* connect(url, connectOptions)
      if (onOpen !== undefined) yield* onOpen(conn)
      while (pending.length > 0) {
        const batch = pending
        pending = []
        yield* Effect.tapError(conn.sendAll(batch), () => Effect.sync(() => (pending = batch.concat(pending))))
      }
      current = conn
      yield* SubscriptionRef.set(state, { _tag: "Open", connection: conn })
      // Every message of this connection is handed on before the next connection's (offer waits
      // while the reader is behind: backpressure reaches the socket).
      yield* conn.messages.pipe(Stream.runForEach((m) => Queue.offer(queue, m)))
      const info = yield* conn.closed
      return info
    }).pipe(
      Effect.ensuring(Effect.sync(() => (current = undefined))),
      Effect.scoped
    )

    const loop = Effect.gen(function*() {
      let step = yield* Schedule.toStepWithSleep(schedule)
      let attempt = 1
      let last: ReconnectCause | undefined
      while (!stopped) {
        yield* SubscriptionRef.set(state, { _tag: "Connecting", attempt })
        const exit = yield* Effect.exit(session)
        if (stopped) break
        if (exit._tag === "Success") {
          // It opened: the backoff starts over.
          step = yield* Schedule.toStepWithSleep(schedule)
          attempt = 1
          last = { _tag: "Disconnected", info: exit.value }
        } else {
          last = { _tag: "Failed", error: Cause.squash(exit.cause) }
          attempt++
        }
        yield* SubscriptionRef.set(state, { _tag: "Reconnecting", attempt, cause: last })
        const next = yield* Effect.exit(step(last))
        if (next._tag === "Failure") break // the schedule gave up
      }
      return last
    })

    const finish = (cause: ReconnectCause | undefined) =>
      Effect.gen(function*() {
        stopped = true
        pending = []
        yield* SubscriptionRef.set(state, { _tag: "Closed", cause })
        yield* Queue.end(queue)
        yield* Deferred.succeed(done, undefined)
      })

    const fiber = yield* loop.pipe(
      Effect.flatMap(finish),
      Effect.onInterrupt(() => finish(undefined)),
      Effect.forkDetach
    )

    const close = (code: number = CloseCode.Normal, reason = ""): Effect.Effect<void> =>
      Effect.suspend(() => {
        stopped = true
        const conn = current
        return Effect.andThen(
          conn === undefined ? Effect.void : conn.close(code, reason),
          // Interrupting the loop closes the connection's scope, which waits for the closing handshake.
          Fiber.interrupt(fiber)
        )
      }).pipe(Effect.andThen(Deferred.await(done)))

    yield* Effect.addFinalizer(() => close())

    return {
      state,
      messages: Stream.fromQueue(queue),
      send,
      close,
      closed: Deferred.await(done)
    } satisfies ReconnectingClient
  })
