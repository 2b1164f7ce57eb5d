/**
 * wsreactor/testing: test an app's routes without ports or real time. The
 * server runs on the in-memory transport; clients speak WebSocket through the
 * project's own handshake and `Protocol` (client role), and can still send raw
 * bytes and hostile frames.
 * Reading is event-driven, so everything works under `it.effect` and its
 * `TestClock`: deadlines fire on `TestClock.adjust`, never on a real timer.
 *
 * @example
 * import { it } from "@effect/vitest"
 * import { Effect } from "effect"
 * import * as Testing from "wsreactor/testing"
 *
 * it.effect("echoes", () =>
 *   Effect.gen(function*() {
 *     const server = yield* Testing.TestServer
 *     const client = yield* server.connect({ path: "/chat" })
 *     yield* client.sendText("hello")
 *     yield* client.expectText("hello")
 *     yield* client.close(1000)
 *     yield* client.expectClose(1000)
 *   }).pipe(Effect.provide(Testing.layer(app)))
 * )
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as CloseCode from "./domain/CloseCode.ts"
import * as FrameDecoder from "./domain/FrameDecoder.ts"
import * as FrameEncoder from "./domain/FrameEncoder.ts"
import * as Handshake from "./domain/Handshake.ts"
import { Protocol } from "./domain/Protocol.ts"
import * as Memory from "./layers/Memory.ts"
import type { App } from "./services/App.ts"
import type * as Client from "./services/Client.ts"
import { decode, type InvalidOptionsError } from "./services/Options.ts"
import { serve, type ServeOptions } from "./services/Server.ts"
import type { Incoming } from "./services/Transport.ts"

// ---------------------------------------------------------------------------
// Events and errors
// ---------------------------------------------------------------------------

/** What a test client can observe from the server, one message or control frame at a time. */
export type ServerEvent =
  | { readonly _tag: "Text"; readonly text: string }
  | { readonly _tag: "Binary"; readonly data: Uint8Array }
  | { readonly _tag: "Ping"; readonly data: Uint8Array }
  | { readonly _tag: "Pong"; readonly data: Uint8Array }
  | { readonly _tag: "Close"; readonly code: number | undefined; readonly reason: string }
  /** The server ended TCP (EOF) without anything further. */
  | { readonly _tag: "Disconnected" }

const describe = (event: ServerEvent | undefined): string => {
  if (event === undefined) return "nothing"
  switch (event._tag) {
    case "Text":
      return `Text(${JSON.stringify(event.text.length > 80 ? `${event.text.slice(0, 80)}…` : event.text)})`
    case "Binary":
    case "Ping":
    case "Pong":
      return `${event._tag}(${event.data.length} bytes)`
    case "Close":
      return `Close(${event.code ?? "no code"}${event.reason === "" ? "" : `, ${JSON.stringify(event.reason)}`})`
    case "Disconnected":
      return "Disconnected"
  }
}

/** The server sent something the test did not expect (or broke the protocol). */
export class ClientError extends Data.TaggedError("ClientError")<{
  /** What the test waited for. */
  readonly wanted: string
  /** What arrived instead; undefined when the server's bytes were not valid WebSocket. */
  readonly received: ServerEvent | undefined
  readonly detail?: string | undefined
}> {
  override get message(): string {
    return `expected ${this.wanted}, got ${describe(this.received)}${this.detail === undefined ? "" : ` (${this.detail})`}`
  }
}

/** The server did not accept the upgrade. `status` is 0 when it hung up without an answer. */
export class HandshakeFailed extends Data.TaggedError("HandshakeFailed")<{
  readonly status: number
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: string
  readonly detail: string
}> {
  override get message(): string {
    return `handshake failed with ${this.status}: ${this.detail}`
  }
}

// ---------------------------------------------------------------------------
// Client frames
// ---------------------------------------------------------------------------

/** A frame as a test writes it. Masked by default, as RFC 6455 §5.3 requires of clients. */
export interface FrameSpec {
  readonly opcode: number
  readonly payload?: Uint8Array | string | undefined
  readonly fin?: boolean | undefined
  readonly rsv1?: boolean | undefined
  readonly masked?: boolean | undefined
}

// A fixed key keeps the exchange reproducible (RFC 6455 §1.3 sample).
const CLIENT_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
const FIXED_MASK = new Uint8Array([0x37, 0xfa, 0x21, 0x3d])
const encoder = new TextEncoder()
const textDecoder = new TextDecoder()

const bytesOf = (payload: Uint8Array | string | undefined): Uint8Array =>
  payload === undefined ? new Uint8Array(0) : typeof payload === "string" ? encoder.encode(payload) : payload

/**
 * The bytes of one client frame, masked with a fixed key unless `masked: false`.
 * For protocol tests that need the bytes themselves (split writes, pipelining).
 *
 * @example
 * clientFrame({ opcode: 0x1, payload: "hi" }) // 81 82 37 fa 21 3d 5f 93
 */
export const clientFrame = (frame: FrameSpec): Uint8Array =>
  FrameEncoder.encodeFrameConcat(
    { opcode: frame.opcode, fin: frame.fin, rsv1: frame.rsv1, mask: frame.masked === false ? undefined : FIXED_MASK },
    bytesOf(frame.payload)
  )

const concatAll = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => concatAll([a, b])

// ---------------------------------------------------------------------------
// Test client
// ---------------------------------------------------------------------------

/** One WebSocket client connected to the {@link TestServer}. Reads are sequential: one reader at a time. */
export interface TestClient {
  /** The subprotocol the server chose. */
  readonly protocol: string | undefined
  readonly sendText: (text: string) => Effect.Effect<void>
  readonly sendBinary: (data: Uint8Array) => Effect.Effect<void>
  /** Any frame, including invalid ones (reserved opcodes, RSV bits, unmasked, fragments). */
  readonly sendFrame: (frame: FrameSpec) => Effect.Effect<void>
  /** Raw bytes, as one write. */
  readonly sendRaw: (bytes: Uint8Array) => Effect.Effect<void>
  readonly ping: (payload?: Uint8Array | string) => Effect.Effect<void>
  /** Send a close frame (no code: an empty close frame). */
  readonly close: (code?: number, reason?: string) => Effect.Effect<void>
  /** Half-close TCP from the client side (the server reads EOF). */
  readonly end: Effect.Effect<void>
  /** The next event; waits for it. After `Disconnected` it keeps answering `Disconnected`. */
  readonly next: Effect.Effect<ServerEvent, ClientError>
  /** The next event if one has already arrived, without waiting (use after `TestClock.adjust` or {@link settle}). */
  readonly poll: Effect.Effect<ServerEvent | undefined, ClientError>
  readonly expectText: (expected?: string) => Effect.Effect<string, ClientError>
  readonly expectBinary: (expected?: Uint8Array) => Effect.Effect<Uint8Array, ClientError>
  readonly expectPong: (expected?: Uint8Array | string) => Effect.Effect<Uint8Array, ClientError>
  /** A text message holding JSON, decoded with `schema` when given. */
  readonly expectJson: {
    (): Effect.Effect<unknown, ClientError>
    <S extends Schema.Constraint>(schema: S): Effect.Effect<S["Type"], ClientError, S["DecodingServices"]>
  }
  /**
   * Read until a close frame (data and control frames before it are skipped),
   * answer it unless this client sent its own close first (completing the
   * closing handshake), and return it; fails on a different `code`.
   */
  readonly expectClose: (code?: number) => Effect.Effect<{ readonly code: number | undefined; readonly reason: string }, ClientError>
  /** The next event must be the server ending TCP. */
  readonly expectDisconnected: Effect.Effect<void, ClientError>
  /** Bytes sent that the server has not read yet: it stops reading while its handler is behind. */
  readonly serverBacklog: Effect.Effect<number>
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i])

const makeClient = (end: Memory.ClientEnd, leftover: Uint8Array, protocol: string | undefined): TestClient => {
  // The protocol's client role decodes the server's frames, keeps the closing
  // handshake's state and masks what the client sends. Two settings keep the
  // test in charge: pings are not answered by themselves (a test answers with
  // `sendFrame`, or plays a dead peer), and the answer to the server's close
  // is held until `expectClose` (or `close`) sends it.
  const ws = new Protocol({
    role: "client",
    maxMessageSize: 2 ** 31 - 1,
    maskKey: () => FIXED_MASK,
    autoPong: false,
    holdClose: true
  })
  const pending: Array<ServerEvent> = []
  // The test answered the server's close with a close of its own choosing: the held echo stays unsent.
  let answeredByTest = false

  // The server broke the protocol: reported after the events decoded before it.
  let violation: ClientError | undefined

  // Decode bytes into `pending` (and `violation`).
  const feed = (bytes: Uint8Array): void => {
    if (violation !== undefined || bytes.length === 0) return
    if (ws.closeReceived !== undefined) {
      violation = new ClientError({
        wanted: "nothing after the server's close frame",
        received: undefined,
        detail: `${bytes.length} more bytes`
      })
      return
    }
    for (const event of ws.receiveData(bytes)) {
      switch (event._tag) {
        case "Message":
          pending.push(event.binary ? { _tag: "Binary", data: event.data } : { _tag: "Text", text: textDecoder.decode(event.data) })
          break
        case "Ping":
        case "Pong":
          pending.push({ _tag: event._tag, data: event.data })
          break
        case "Close":
          pending.push(event)
          break
      }
    }
    if (ws.failure !== undefined) {
      violation = new ClientError({ wanted: "valid frames from the server", received: undefined, detail: ws.failure.message })
    }
  }
  feed(leftover)

  // EOF: like a real client, close our side of TCP once the server closed its side.
  const onEof = Effect.suspend(() => {
    ws.receiveEof()
    pending.push({ _tag: "Disconnected" })
    return end.end
  })

  const take = (wait: boolean): Effect.Effect<ServerEvent | undefined, ClientError> =>
    Effect.gen(function*() {
      while (true) {
        const event = pending.shift()
        if (event !== undefined) {
          if (event._tag === "Disconnected") pending.unshift(event) // sticky
          return event
        }
        if (violation !== undefined) return yield* Effect.fail(violation)
        const read = yield* Effect.exit(wait ? Effect.map(end.read, Option.some) : end.poll)
        if (read._tag === "Failure") {
          yield* onEof
          continue
        }
        if (read.value._tag === "None") return undefined
        feed(read.value.value)
      }
    })
  const next = Effect.map(take(true), (e) => e!)

  const expect = <A>(wanted: string, match: (event: ServerEvent) => A | undefined): Effect.Effect<A, ClientError> =>
    Effect.flatMap(next, (event) => {
      const value = match(event)
      return value === undefined ? Effect.fail(new ClientError({ wanted, received: event })) : Effect.succeed(value)
    })

  const write = (bytes: Uint8Array) => end.write(bytes)
  // What the protocol queued, as one write.
  const flush = Effect.suspend(() => {
    const out = ws.dataToSend()
    return out.length === 0 ? Effect.void : write(out.length === 1 ? out[0]! : concatAll(out))
  })
  const sendFrame = (frame: FrameSpec) => write(clientFrame(frame))
  // Once the closing handshake is under way the protocol refuses data and
  // pings; a test may still send them (does the server ignore them?), raw.
  const send = (binary: boolean, payload: Uint8Array | string) =>
    Effect.suspend(() =>
      ws.sendMessage(binary, bytesOf(payload))
        ? flush
        : sendFrame({ opcode: binary ? FrameDecoder.Opcode.Binary : FrameDecoder.Opcode.Text, payload })
    )
  const ping = (payload?: Uint8Array | string) =>
    Effect.suspend(() => (ws.sendPing(bytesOf(payload)) ? flush : sendFrame({ opcode: FrameDecoder.Opcode.Ping, payload })))
  const close = (code?: number, reason?: string) =>
    Effect.suspend(() => {
      // No code: a close frame without a body (the protocol's 1005).
      if (ws.sendClose(code ?? CloseCode.NoStatus, reason)) return flush
      // The server's close came first: this close, with the test's code, is the answer.
      if (ws.closeHeld) answeredByTest = true
      return write(FrameEncoder.encodeClose(code, reason, FIXED_MASK))
    })

  const expectText = (expected?: string) =>
    expect(expected === undefined ? "a text message" : `Text(${JSON.stringify(expected)})`, (e) =>
      e._tag === "Text" && (expected === undefined || e.text === expected) ? e.text : undefined)

  const expectJson = ((schema?: Schema.Constraint) =>
    Effect.flatMap(expectText(), (text) => {
      let json: unknown
      try {
        json = JSON.parse(text)
      } catch (e) {
        return Effect.fail(new ClientError({ wanted: "JSON", received: { _tag: "Text", text }, detail: String(e) }))
      }
      if (schema === undefined) return Effect.succeed(json)
      return Schema.decodeUnknownEffect(schema)(json).pipe(
        Effect.mapError((e) => new ClientError({ wanted: "JSON matching the schema", received: { _tag: "Text", text }, detail: e.message }))
      )
    })) as TestClient["expectJson"]

  const expectClose = (code?: number) =>
    Effect.gen(function*() {
      while (true) {
        const event = yield* next
        if (event._tag === "Disconnected") {
          return yield* Effect.fail(new ClientError({ wanted: `Close(${code ?? "any"})`, received: event }))
        }
        if (event._tag !== "Close") continue
        // RFC 6455 §5.5.1: send the echo of the status code the protocol holds
        // (none when this client closed first, or the test answered already).
        if (ws.closeHeld && !answeredByTest) {
          ws.releaseClose()
          yield* flush
        }
        if (code !== undefined && event.code !== code) {
          return yield* Effect.fail(new ClientError({ wanted: `Close(${code})`, received: event }))
        }
        return { code: event.code, reason: event.reason }
      }
    })

  return {
    protocol,
    sendText: (text) => send(false, text),
    sendBinary: (data) => send(true, data),
    sendFrame,
    sendRaw: write,
    ping,
    close,
    end: end.end,
    next,
    poll: take(false),
    expectText,
    expectBinary: (expected) =>
      expect(expected === undefined ? "a binary message" : `Binary(${expected.length} bytes)`, (e) =>
        e._tag === "Binary" && (expected === undefined || sameBytes(e.data, expected)) ? e.data : undefined),
    expectPong: (expected) => {
      const want = expected === undefined ? undefined : bytesOf(expected)
      return expect(want === undefined ? "a pong" : `Pong(${want.length} bytes)`, (e) =>
        e._tag === "Pong" && (want === undefined || sameBytes(e.data, want)) ? e.data : undefined)
    },
    expectJson,
    expectClose,
    expectDisconnected: expect("Disconnected", (e) => (e._tag === "Disconnected" ? true : undefined)).pipe(Effect.asVoid),
    serverBacklog: end.unreadByServer
  }
}

// ---------------------------------------------------------------------------
// Test server
// ---------------------------------------------------------------------------

export interface ConnectOptions {
  readonly path?: string | undefined
  /** Extra request headers (the WebSocket ones are set by the client). */
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
  readonly protocols?: ReadonlyArray<string> | undefined
  readonly remoteAddress?: string | undefined
  /** Bytes sent in the same write as the upgrade request, e.g. a first frame ({@link clientFrame}). */
  readonly pipelined?: Uint8Array | undefined
  /** Client receive window in bytes (see `Memory.ConnectOptions`): a small one lets the server's send buffer fill. */
  readonly receiveWindow?: number | undefined
}

/** A plain HTTP request: raw bytes / text, or a method, path and headers (Host is added when missing). */
export type HttpRequest =
  | string
  | Uint8Array
  | {
    readonly method?: string | undefined
    readonly path?: string | undefined
    readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
  }

/** A complete HTTP answer, read until the server closed the connection. */
export interface HttpReply {
  readonly status: number
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: string
}

/** The server under test. */
export class TestServer extends Context.Service<TestServer, {
  /** Open a WebSocket (a scoped connection: the scope's end drops it). */
  readonly connect: (options?: ConnectOptions) => Effect.Effect<TestClient, HandshakeFailed, Scope.Scope>
  /** Send one plain HTTP request and read the answer. Fails with `HandshakeFailed` (status 0) on an unreadable answer. */
  readonly request: (request: HttpRequest) => Effect.Effect<HttpReply, HandshakeFailed>
  /** A byte-level connection with nothing sent yet (slow or broken clients). */
  readonly open: (options?: Memory.ConnectOptions) => Effect.Effect<Memory.ClientEnd, never, Scope.Scope>
  /** Interrupt the server: graceful shutdown (close 1001 to every open connection), then return. */
  readonly shutdown: Effect.Effect<void>
  /**
   * Connects wsreactor's real client (`Client.connect`, `Client.reconnecting`)
   * to this server in memory: pass it as the `connector` option (any URL
   * host works; the path and query reach the app). Everything stays
   * event-driven, so reconnect backoff, heartbeats and timeouts run on
   * `TestClock` (advance them with `TestClock.adjust`).
   *
   * @example
   * const server = yield* Testing.TestServer
   * const conn = yield* Client.connect("ws://test/chat", { connector: server.connector })
   */
  readonly connector: Client.Connector
}>()("wsreactor/testing/TestServer") {}

/**
 * The client's side of an in-memory connection as a `Transport.Incoming`, for
 * wsreactor's client: a fiber (run with `context`) reads what the server
 * wrote while not paused.
 */
const clientIncoming = (end: Memory.ClientEnd, context: Context.Context<never>, onDestroy: () => void): Incoming => {
  const run = Effect.runForkWith(context)
  const flowing = Latch.makeUnsafe(true)
  let reader: Fiber.Fiber<void> | undefined
  let onEnd: (() => void) | undefined
  const ended = () => {
    const callback = onEnd
    onEnd = undefined
    callback?.()
  }
  return {
    remoteAddress: "memory",
    remotePort: 0,
    listen: (onData, end_) => {
      onEnd = end_
      reader = run(Effect.gen(function*() {
        while (true) {
          yield* flowing.await
          const read = yield* Effect.exit(end.read)
          if (read._tag === "Failure") return ended()
          onData(read.value)
        }
      }))
    },
    pause: () => flowing.closeUnsafe(),
    resume: () => flowing.openUnsafe(),
    write: (chunks) => {
      for (const chunk of chunks) Effect.runSync(end.write(chunk))
      return true
    },
    onDrain: (callback) => queueMicrotask(callback),
    end: () => Effect.runSync(end.end),
    destroy: () => {
      Effect.runSync(end.destroy)
      onDestroy()
      if (reader !== undefined) run(Fiber.interrupt(reader))
      ended()
    }
  }
}

/**
 * Let every fiber that has work run before going on: the server reacting to
 * the last write, timers being armed. It yields to the scheduler a number of
 * rounds; no time passes. Use before `TestClock.adjust` and `poll`.
 *
 * @example
 * yield* client.sendRaw(bytes)
 * yield* Testing.settle
 * expect(yield* client.serverBacklog).toBe(0)
 */
export const settle: Effect.Effect<void> = Effect.suspend(() => {
  let effect: Effect.Effect<void> = Effect.yieldNow
  for (let i = 0; i < 63; i++) effect = Effect.andThen(effect, Effect.yieldNow)
  return effect
})

const readAll = (end: Memory.ClientEnd, first: Uint8Array): Effect.Effect<Uint8Array> =>
  Effect.gen(function*() {
    let all = first
    while (true) {
      const read = yield* Effect.exit(end.read)
      if (read._tag === "Failure") return all
      all = concat(all, read.value)
    }
  })

const readHead = (
  end: Memory.ClientEnd
): Effect.Effect<{ readonly response: Handshake.HttpResponseHead; readonly rest: Uint8Array }, HandshakeFailed> =>
  Effect.gen(function*() {
    let parser = Handshake.initialResponseParser({ maxHeaderBytes: 1 << 20 })
    while (true) {
      const read = yield* Effect.exit(end.read)
      if (read._tag === "Failure") {
        return yield* new HandshakeFailed({ status: 0, headers: [], body: "", detail: "the server closed the connection without an answer" })
      }
      const step = Handshake.stepResponse(parser, read.value)
      if (step._tag === "NeedMore") parser = step.parser
      else if (step._tag === "Invalid") {
        return yield* new HandshakeFailed({ status: 0, headers: [], body: "", detail: step.error.message })
      } else return step
    }
  })

const requestBytes = (request: HttpRequest): Uint8Array => {
  if (typeof request === "string") return encoder.encode(request)
  if (request instanceof Uint8Array) return request
  const headers = request.headers ?? []
  const hasHost = headers.some(([name]) => name.toLowerCase() === "host")
  const lines = [`${request.method ?? "GET"} ${request.path ?? "/"} HTTP/1.1`]
  if (!hasHost) lines.push("Host: test")
  for (const [name, value] of headers) lines.push(`${name}: ${value}`)
  return encoder.encode(`${lines.join("\r\n")}\r\n\r\n`)
}

/**
 * The in-memory transport with `app` served on it (forked for the life of the
 * layer), as a {@link TestServer}. When the layer closes, every client still
 * open is dropped, then the server is interrupted.
 *
 * @example
 * it.effect("404 for plain GET", () =>
 *   Effect.gen(function*() {
 *     const reply = yield* (yield* TestServer).request({ path: "/nope" })
 *     expect(reply.status).toBe(404)
 *   }).pipe(Effect.provide(Testing.layer(app, { maxMessageSize: 1024 })))
 * )
 */
export const layer = <R>(
  app: App<R>,
  options?: ServeOptions
): Layer.Layer<TestServer, InvalidOptionsError, Exclude<R, Scope.Scope>> =>
  Layer.effect(
    TestServer,
    Effect.gen(function*() {
      // Bad options fail the layer at once, typed, rather than a forked server that never answers.
      yield* decode(options)
      const network = yield* Memory.MemoryNetwork
      const server = yield* Effect.forkScoped(serve(app, options))
      const open = new Set<Memory.ClientEnd>()
      // Runs before the server fiber is interrupted (finalizers run in reverse order): no client left to wait for.
      yield* Effect.addFinalizer(() => Effect.forEach([...open], (end) => end.destroy, { discard: true }))

      const openEnd = (connectOptions?: Memory.ConnectOptions) =>
        Effect.acquireRelease(
          Effect.tap(network.connect(connectOptions), (end) => Effect.sync(() => open.add(end))),
          (end) => Effect.andThen(end.destroy, Effect.sync(() => open.delete(end)))
        )

      const connect = (connectOptions: ConnectOptions = {}) =>
        Effect.gen(function*() {
          const end = yield* openEnd({ remoteAddress: connectOptions.remoteAddress, receiveWindow: connectOptions.receiveWindow })
          const request = Handshake.clientRequest({
            host: "test",
            path: connectOptions.path ?? "/",
            key: CLIENT_KEY,
            protocols: connectOptions.protocols,
            headers: connectOptions.headers
          })
          yield* end.write(connectOptions.pipelined === undefined ? request : concat(request, connectOptions.pipelined))
          const { response, rest } = yield* readHead(end)
          if (response.status !== 101) {
            const body = yield* readAll(end, rest)
            return yield* new HandshakeFailed({
              status: response.status,
              headers: response.headers,
              body: textDecoder.decode(body),
              detail: response.reason
            })
          }
          const valid = Handshake.validateResponse(response, CLIENT_KEY, { protocols: connectOptions.protocols })
          if (valid._tag === "Error") {
            return yield* new HandshakeFailed({ status: 101, headers: response.headers, body: "", detail: valid.error.message })
          }
          return makeClient(end, rest, valid.protocol)
        })

      const request = (req: HttpRequest) =>
        Effect.scoped(
          Effect.gen(function*() {
            const end = yield* openEnd()
            yield* end.write(requestBytes(req))
            const { response, rest } = yield* readHead(end)
            const body = yield* readAll(end, rest)
            return { status: response.status, headers: response.headers, body: textDecoder.decode(body) }
          })
        )

      const connector: Client.Connector = () =>
        Effect.gen(function*() {
          const end = yield* network.connect()
          open.add(end)
          return clientIncoming(end, yield* Effect.context<never>(), () => open.delete(end))
        })

      return TestServer.of({
        connect,
        request,
        open: openEnd,
        connector,
        shutdown: Fiber.interrupt(server).pipe(Effect.asVoid)
      })
    })
  ).pipe(Layer.provide(Layer.fresh(Memory.layer)))
