/**
 * The reactor: one scoped fiber per connection, in the spirit of the original
 * epoll design (a state per socket: handshake → open → closing → closed) but
 * with the protocol itself in the pure `Handshake` and `FrameDecoder`
 * transducers. This module owns the I/O: reading, writing, deadlines and the
 * close handshake. It never lets one connection's failure reach another.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as CloseCode from "../domain/CloseCode.ts"
import * as FrameDecoder from "../domain/FrameDecoder.ts"
import * as FrameEncoder from "../domain/FrameEncoder.ts"
import * as Handshake from "../domain/Handshake.ts"
import * as PerMessageDeflate from "../domain/PerMessageDeflate.ts"
import { protocolError as makeProtocolError } from "../domain/ProtocolError.ts"
import * as Utf8 from "../domain/Utf8.ts"
import { type Compressor, CompressionLimiter, makeCompressor } from "./Compression.ts"
import type { Deadlines } from "./Deadlines.ts"
import type { ProtocolError } from "../domain/ProtocolError.ts"
import {
  type CloseInfo,
  type Connection,
  ConnectionClosedError,
  type ConnectionInfo,
  MessageDroppedError
} from "./Connection.ts"
import * as Message from "./Message.ts"
import type { ServerOptions } from "./Options.ts"
import type { Incoming } from "./Transport.ts"

/** A plain HTTP answer (non-upgrade requests, refused upgrades). */
export interface HttpResponse {
  readonly status: number
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
  readonly body?: string | Uint8Array | undefined
}

/** Who is on the other end, as far as the transport knows. */
export interface Peer {
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
}

/** Accept an upgrade: the handler runs for the life of the connection. */
export interface Accept<R> {
  readonly _tag: "Accept"
  readonly protocol?: string | undefined
  readonly extensions?: string | undefined
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
  readonly params?: Readonly<Record<string, string>> | undefined
  readonly attributes?: Readonly<Record<string, unknown>> | undefined
  readonly handler: (connection: Connection) => Effect.Effect<void, unknown, R>
}

/** Refuse an upgrade with any HTTP status (401, 403, 404, 429 ...). */
export interface Reject {
  readonly _tag: "Reject"
  readonly response: HttpResponse
}

export type UpgradeDecision<R> = Accept<R> | Reject

/**
 * What the reactor asks of the application, once per connection: how to
 * answer a plain HTTP request, and whether (and how) to accept an upgrade.
 * `Router` builds one from routes.
 */
export interface App<R> {
  readonly http: (request: Handshake.HttpRequest, peer: Peer) => Effect.Effect<HttpResponse, never, R>
  readonly upgrade: (upgrade: Handshake.UpgradeRequest, peer: Peer) => Effect.Effect<UpgradeDecision<R>, never, R>
}

/** Lifecycle callbacks for the server around the reactor (registry, logs, metrics). */
export interface Hooks {
  readonly onHandshake?: (status: number) => void
  readonly onOpen?: (handle: ConnectionHandle) => void
  readonly onClose?: (handle: ConnectionHandle, info: CloseInfo) => void
  readonly onProtocolError?: (handle: ConnectionHandle, error: ProtocolError) => void
  /** Data messages handed to handlers (called once per read batch). */
  readonly onMessagesIn?: (count: number, bytes: number) => void
  /** Data messages queued by `send`/`sendAll`/`sendFrame`/`offerFrame` (called once per call, not per frame). */
  readonly onMessagesOut?: (count: number) => void
  /** Bytes handed to the socket (called once per write batch). */
  readonly onBytesOut?: (bytes: number) => void
  /** A `send` refused or a connection closed by the backpressure policy. */
  readonly onBackpressure?: (policy: "drop" | "close") => void
  readonly onHeartbeatTimeout?: (handle: ConnectionHandle) => void
}

/** The server's view of a live connection: enough to count it and to close it at shutdown. */
export interface ConnectionHandle {
  readonly info: ConnectionInfo
  readonly close: (code: number, reason: string) => Effect.Effect<void>
  readonly closed: Effect.Effect<CloseInfo>
  /** Heartbeat, driven server-wide by `Server.serve`: send a ping and start listening for an answer. */
  readonly heartbeat: () => void
  /** Anything arrived from the peer since the last `heartbeat()`? */
  readonly heardSinceHeartbeat: () => boolean
  /** Drop the connection now, without a close frame (heartbeat timeout). */
  readonly terminate: () => void
}

let nextConnectionId = 1

// RFC 6455 §7.1.1 wants the server to close TCP first; these states say how far the closing handshake got.
const OPEN = 0
const CLOSING = 1 // our close frame is queued, waiting for the peer's
const CLOSED = 2 // no more frames will be sent
// Reading stopped (peer's close frame, or a protocol error); the handler may still answer the
// messages that arrived before it, then our close frame goes out.
const DRAINING = 3

/** permessage-deflate for a server: the options, and the process-wide zlib limiter. */
export interface DeflateSupport {
  readonly options: PerMessageDeflate.DeflateOptions
  readonly limiter: CompressionLimiter["Service"]
}

/**
 * Where the transport's bytes go: the current phase (handshake parser, frame
 * decoder, discard) installs its own functions. EOF is remembered.
 */
interface Wiring {
  onData: (chunk: Uint8Array) => void
  onEof: () => void
  eof: boolean
}

/**
 * Run one accepted connection to its end: read the HTTP request under the
 * handshake deadline, answer it, and for an accepted upgrade run the frame
 * loop and the application's handler. Never fails; always releases the socket.
 */
export const runConnection = <R>(
  incoming: Incoming,
  app: App<R>,
  options: ServerOptions,
  hooks: Hooks,
  deadlines: Deadlines,
  deflate?: DeflateSupport
): Effect.Effect<void, never, R> =>
  Effect.scoped(
    Effect.gen(function*() {
      yield* Effect.addFinalizer(() => Effect.sync(incoming.destroy))
      // Bytes that arrive before the request parser is installed wait here (a transport may deliver
      // synchronously from `listen`).
      const early: Array<Uint8Array> = []
      const wiring: Wiring = { onData: (chunk) => void early.push(chunk), onEof: noop, eof: false }
      // Socket callbacks run outside any fiber: a throw there would reach the process. A bug or a
      // throwing hook costs this connection only: logged, then the socket is dropped.
      const services = yield* Effect.context<never>()
      const onDefect = (defect: unknown) => {
        Effect.runForkWith(services)(Effect.logError("connection dropped after a defect", defect))
        incoming.destroy()
      }
      const guard = (run: () => void) => {
        try {
          run()
        } catch (defect) {
          onDefect(defect)
        }
      }
      incoming.listen(
        (chunk) => guard(() => wiring.onData(chunk)),
        () =>
          guard(() => {
            wiring.eof = true
            wiring.onEof()
          })
      )
      // Getters: the address costs a syscall on TCP, paid only if someone asks.
      const peer: Peer = {
        get remoteAddress() {
          return incoming.remoteAddress
        },
        get remotePort() {
          return incoming.remotePort
        }
      }

      const head = yield* readRequest(incoming, wiring, early, options, deadlines)
      // An HTTP answer ends the connection: FIN after it, then wait (briefly) for the peer to go.
      const answer = (bytes: Uint8Array, status: number) =>
        Effect.suspend(() => {
          hooks.onHandshake?.(status)
          incoming.write([bytes])
          incoming.end()
          wiring.onData = discard
          incoming.resume()
          return awaitEof(wiring, deadlines, options.closeTimeoutMs)
        })
      switch (head._tag) {
        case "Timeout":
        case "Gone":
          return
        case "Invalid":
          return yield* answer(Handshake.rejectResponse(head.error), head.error.status)
        case "Request":
          break
      }
      const request = head.request
      if (!Handshake.isUpgradeAttempt(request)) {
        const response = yield* app.http(request, peer)
        const bytes = Handshake.httpResponse(response)
        // RFC 9110 §9.3.2: HEAD gets the GET response's header fields, without content.
        return yield* answer(request.method === "HEAD" ? headOnly(bytes) : bytes, response.status)
      }
      const validated = Handshake.validateUpgrade(request)
      if (validated._tag === "Error") {
        return yield* answer(Handshake.rejectResponse(validated.error), validated.error.status)
      }
      const decision = yield* app.upgrade(validated.upgrade, peer)
      if (decision._tag === "Reject") {
        return yield* answer(Handshake.httpResponse(decision.response), decision.response.status)
      }
      // RFC 7692 §5: accept the first acceptable permessage-deflate offer, unless the app answered extensions itself.
      const negotiated = deflate !== undefined && decision.extensions === undefined
        ? PerMessageDeflate.negotiate(validated.upgrade.extensions, deflate.options)
        : undefined
      const accepted: Accept<R> = negotiated === undefined ? decision : { ...decision, extensions: negotiated.response }
      hooks.onHandshake?.(101)
      incoming.write([
        Handshake.acceptResponse({
          key: validated.upgrade.key,
          protocol: accepted.protocol,
          extensions: accepted.extensions,
          headers: accepted.headers
        })
      ])
      const compressor = negotiated === undefined || deflate === undefined
        ? undefined
        : yield* makeCompressor(negotiated.params, deflate.options).pipe(
          Effect.provideService(CompressionLimiter, deflate.limiter)
        )
      yield* runOpen({
        deadlines,
        onDefect,
        incoming,
        wiring,
        request,
        peer,
        decision: accepted,
        leftover: head.rest,
        options,
        hooks,
        compression: compressor === undefined || deflate === undefined
          ? undefined
          : { compressor, threshold: deflate.options.threshold }
      })
    })
  ).pipe(Effect.catchCause((cause) => Effect.logError("connection failed", cause)))

const noop = () => {}
const discard = (_chunk: Uint8Array) => {}

/** Completes at the peer's EOF (or at once if it already came), or after `timeoutMs`. */
const awaitEof = (wiring: Wiring, deadlines: Deadlines, timeoutMs: number): Effect.Effect<void> =>
  wiring.eof ? Effect.void : deadlines.within<void>(timeoutMs, (done) => {
    if (wiring.eof) return done()
    wiring.onEof = done
    return () => {
      wiring.onEof = noop
    }
  }, undefined)

const headOnly = (response: Uint8Array): Uint8Array => {
  for (let i = 3; i < response.length; i++) {
    if (response[i] === 10 && response[i - 1] === 13 && response[i - 2] === 10 && response[i - 3] === 13) {
      return response.subarray(0, i + 1)
    }
  }
  return response
}

type Head =
  | { readonly _tag: "Request"; readonly request: Handshake.HttpRequest; readonly rest: Array<Uint8Array> }
  | { readonly _tag: "Invalid"; readonly error: Handshake.HandshakeError }
  | { readonly _tag: "Gone" }

/** Feed chunks to the request parser until the head is complete (or the handshake deadline); bytes after it are kept for the frame decoder. */
const readRequest = (
  incoming: Incoming,
  wiring: Wiring,
  early: ReadonlyArray<Uint8Array>,
  options: ServerOptions,
  deadlines: Deadlines
): Effect.Effect<Head | { readonly _tag: "Timeout" }> =>
  deadlines.within<Head | { readonly _tag: "Timeout" }>(options.handshakeTimeoutMs, (done) => {
    let parser = Handshake.initialRequestParser({ maxHeaderBytes: options.maxHeaderBytes })
    let rest: Array<Uint8Array> | undefined
    let restBytes = 0
    wiring.onData = (chunk) => {
      if (rest !== undefined) {
        // After the head: the decoder's, once installed. Bounded while the app decides.
        rest.push(chunk)
        restBytes += chunk.length
        if (restBytes > 65536) incoming.pause()
        return
      }
      const result = Handshake.stepRequest(parser, chunk)
      if (result._tag === "NeedMore") {
        parser = result.parser
        return
      }
      if (result._tag === "Invalid") {
        rest = []
        return done(result)
      }
      rest = result.rest.length > 0 ? [result.rest] : []
      done({ _tag: "Request", request: result.request, rest })
    }
    wiring.onEof = () => {
      if (rest === undefined) done({ _tag: "Gone" })
    }
    for (const chunk of early) wiring.onData(chunk)
    if (wiring.eof) wiring.onEof()
    return () => {
      if (rest === undefined) wiring.onData = discard
    }
  }, { _tag: "Timeout" })

interface OpenContext<R> {
  readonly deadlines: Deadlines
  /** Log a defect raised in a socket callback and drop the connection. */
  readonly onDefect: (defect: unknown) => void
  readonly incoming: Incoming
  readonly wiring: Wiring
  readonly request: Handshake.HttpRequest
  readonly peer: Peer
  readonly decision: Accept<R>
  readonly leftover: ReadonlyArray<Uint8Array>
  readonly options: ServerOptions
  readonly hooks: Hooks
  readonly compression: { readonly compressor: Compressor; readonly threshold: number } | undefined
}

const emptyParams: Readonly<Record<string, never>> = Object.freeze({})

/**
 * The data-transfer phase. Bytes are decoded in the transport's callback as
 * they arrive (no Effect per chunk); complete messages wait in a bounded inbox
 * that the handler's `messages` stream takes in batches; frames to send are
 * queued and written in one batch per microtask. The connection's fiber only
 * waits: for the closing handshake, the peer, or a deadline.
 */
const runOpen = <R>(ctx: OpenContext<R>): Effect.Effect<void, never, R> =>
  Effect.gen(function*() {
    const { options, hooks, incoming, wiring } = ctx
    const compression = ctx.compression
    const id = nextConnectionId++
    const closedDeferred = yield* Deferred.make<CloseInfo>()
    // How the open phase ends: the first of these wins (a callback, not a race of fibers).
    let outcome: "done" | "close-timeout" | "heartbeat" | undefined
    let outcomeWaiter: (() => void) | undefined
    let cancelCloseDeadline = noop
    const settle = (result: "done" | "close-timeout" | "heartbeat") => {
      if (outcome !== undefined) return
      outcome = result
      if (outcomeWaiter !== undefined) outcomeWaiter()
    }
    const clock = yield* Clock.Clock

    let state = OPEN
    let localClose: { code: number; reason: string } | undefined
    let peerClose: { code: number | undefined; reason: string } | undefined
    let protocolError: ProtocolError | undefined
    let pendingClose: Uint8Array | undefined
    let heard = true // any bytes from the peer since the last heartbeat ping
    let lastMessageAt = clock.currentTimeMillisUnsafe()

    // ---- reading pauses for two reasons: the handler is behind, or the peer does not read ----
    let pausedForInbox = false
    let congested = false
    const updateReading = () => {
      if (pausedForInbox || congested) incoming.pause()
      else incoming.resume()
    }

    // ---- outbound: frames queued synchronously, written in one batch per microtask ----
    let outbox: Array<Uint8Array> = []
    let outboxBytes = 0
    let flushScheduled = false
    let writesClosed = false
    let drainWaiters: Array<() => void> = [] // senders waiting for the outbox to fall under the mark
    let flushedWaiters: Array<() => void> = [] // the closing fiber, waiting for everything to be written
    const wakeWaiters = () => {
      if (drainWaiters.length > 0 && outboxBytes <= options.outboundHighWaterMark) {
        const waiters = drainWaiters
        drainWaiters = []
        for (const wake of waiters) wake()
      }
      if (flushedWaiters.length > 0 && outbox.length === 0 && !congested) {
        const waiters = flushedWaiters
        flushedWaiters = []
        for (const wake of waiters) wake()
      }
    }
    const flush = () => {
      try {
        flushNow()
      } catch (defect) {
        writesClosed = true
        ctx.onDefect(defect)
      }
    }
    const flushNow = () => {
      flushScheduled = false
      if (congested || writesClosed || outbox.length === 0) return wakeWaiters()
      const batch = outbox
      const bytes = outboxBytes
      outbox = []
      outboxBytes = 0
      hooks.onBytesOut?.(bytes)
      if (!incoming.write(batch.length > 1 && bytes <= COALESCE_MAX ? [coalesce(batch, bytes)] : batch)) {
        congested = true
        updateReading()
        incoming.onDrain(onDrained)
      }
      wakeWaiters()
    }
    const onDrained = () => {
      congested = false
      updateReading()
      flush()
    }
    const enqueue = (frame: Uint8Array) => {
      outbox.push(frame)
      outboxBytes += frame.length
      if (!flushScheduled) {
        flushScheduled = true
        queueMicrotask(flush)
      }
    }
    // Everything written (true), or the peer did not take it within closeTimeoutMs (false).
    const awaitFlushed = Effect.suspend(() =>
      outbox.length === 0 && !congested ? Effect.succeed(true) : ctx.deadlines.within<boolean>(options.closeTimeoutMs, (done) => {
        const wake = () => done(true)
        flushedWaiters.push(wake)
        return () => {
          flushedWaiters = flushedWaiters.filter((w) => w !== wake)
        }
      }, false)
    )
    const waitForDrain = Effect.callback<void>((resume) => {
      if (outboxBytes <= options.outboundHighWaterMark || state === CLOSED) return resume(Effect.void)
      const wake = () => resume(Effect.void)
      drainWaiters.push(wake)
      return Effect.sync(() => {
        drainWaiters = drainWaiters.filter((w) => w !== wake)
      })
    })

    // Built on demand: an error captures a stack trace, too costly to keep per idle connection.
    const closedError = () => new ConnectionClosedError({ connectionId: id })
    const fragmentSize = options.fragmentSize > 0 ? options.fragmentSize : undefined
    // Small frames come as one buffer, large ones as header + the caller's payload (FrameEncoder).
    const encodeMessage = (message: Message.Message): Array<Uint8Array> =>
      FrameEncoder.encodeMessage({ binary: message._tag === "Binary", payload: message.data, fragmentSize })
    // Backpressure, judged on what is already buffered (a single large message to a fast peer is
    // fine): "drop" refuses the message, "close" closes with 1008; "suspend" queues it, then waits
    // until the buffer is back under the mark.
    const sendFrames = (
      frames: ReadonlyArray<Uint8Array>,
      messageCount: number
    ): Effect.Effect<void, ConnectionClosedError | MessageDroppedError> =>
      Effect.suspend((): Effect.Effect<void, ConnectionClosedError | MessageDroppedError> => {
        if (state !== OPEN && state !== DRAINING) return Effect.fail(closedError())
        if (outboxBytes > options.outboundHighWaterMark) {
          if (options.backpressure === "drop") {
            hooks.onBackpressure?.("drop")
            return Effect.fail(new MessageDroppedError({ connectionId: id, bufferedBytes: outboxBytes }))
          }
          if (options.backpressure === "close") {
            hooks.onBackpressure?.("close")
            return Effect.andThen(startClose(CloseCode.PolicyViolation, "send buffer full"), Effect.fail(closedError()))
          }
        }
        for (let i = 0; i < frames.length; i++) enqueue(frames[i])
        hooks.onMessagesOut?.(messageCount)
        return outboxBytes > options.outboundHighWaterMark && options.backpressure === "suspend"
          ? waitForDrain
          : Effect.void
      })
    // RFC 7692 §6.1: RSV1 on the first frame of a compressed message only.
    const sendCompressed = (message: Message.Message) =>
      Effect.flatMap(compression!.compressor.compress(message.data), (payload) =>
        sendFrames(
          FrameEncoder.encodeMessage({
            binary: message._tag === "Binary",
            payload,
            compressed: true,
            fragmentSize
          }),
          1
        ))

    // ---- closing handshake ----
    const startClose = (code: number, reason: string): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (state !== OPEN) return Effect.void
        state = CLOSING
        localClose = { code, reason }
        enqueue(FrameEncoder.encodeClose(code, reason))
        // The peer's answer must be read even if the handler stopped taking messages.
        pausedForInbox = false
        updateReading()
        // §7.1.1: the peer has closeTimeoutMs to answer.
        cancelCloseDeadline = ctx.deadlines.add(options.closeTimeoutMs, () => settle("close-timeout"))
        return Effect.void
      })

    // ---- inbound: decoded in the transport's callback, handed to the handler in batches ----
    const decoder = FrameDecoder.make({
      role: "server",
      maxMessageSize: options.maxMessageSize,
      allowRsv1: compression !== undefined
    })
    let inbox: Array<Pending> = []
    let inboxBytes = 0
    let inboxEnded = false
    let takeWaiter: ((batch: Array<Pending> | undefined) => void) | undefined
    let readFinished = false
    const finishReading = () => {
      if (readFinished) return
      readFinished = true
      wiring.onData = discard
      settle("done")
    }
    const deliver = (batch: Array<Pending>) => {
      if (options.idleTimeoutMs > 0) lastMessageAt = clock.currentTimeMillisUnsafe()
      if (hooks.onMessagesIn !== undefined) {
        let bytes = 0
        for (let i = 0; i < batch.length; i++) bytes += batch[i].data.length
        hooks.onMessagesIn(batch.length, bytes)
      }
      if (takeWaiter !== undefined && inbox.length === 0) {
        const take = takeWaiter
        takeWaiter = undefined
        return take(batch)
      }
      for (let i = 0; i < batch.length; i++) {
        inbox.push(batch[i])
        inboxBytes += batch[i].data.length
      }
      // Bounded in messages and in bytes: a slow handler never lets a fast peer grow server memory.
      if ((inbox.length >= options.inboundQueueSize || inboxBytes >= options.inboundHighWaterMark) && !pausedForInbox) {
        pausedForInbox = true
        updateReading()
      }
    }
    // The handler has answered everything it was given: it asked for more after the inbox ended,
    // or it was already waiting, or it returned. Then a pending close frame may follow its answers.
    let caughtUp = false
    let caughtUpWaiter: (() => void) | undefined
    const markCaughtUp = () => {
      if (caughtUp) return
      caughtUp = true
      if (caughtUpWaiter !== undefined) caughtUpWaiter()
    }
    const endInbox = () => {
      inboxEnded = true
      if (takeWaiter !== undefined && inbox.length === 0) {
        const take = takeWaiter
        takeWaiter = undefined
        markCaughtUp()
        take(undefined)
      }
    }
    // §7.1.7 Fail the WebSocket Connection: our close frame carries the code, after the handler
    // answered what arrived before the bad frame.
    const fail = (error: ProtocolError) => {
      if (state !== OPEN) return
      protocolError = error
      pendingClose = FrameEncoder.encodeClose(error.closeCode, error.reason)
      state = DRAINING
      finishReading()
    }
    const onChunk = (chunk: Uint8Array) => {
      heard = true
      const result = decoder.feed(chunk)
      const events = result.events
      let batch: Array<Pending> | undefined
      for (let i = 0; i < events.length; i++) {
        const event = events[i]
        switch (event._tag) {
          case "Message":
            // After our close frame, data is discarded (§5.5.1).
            if (state === OPEN) {
              const m = event.compressed
                ? new Compressed(event.binary, event.data)
                : event.binary
                ? new Message.BinaryMessage(event.data)
                : Message.textFromUtf8(event.data)
              if (batch === undefined) batch = [m]
              else batch.push(m)
            }
            break
          case "Ping":
            // §5.5.3: answer with the same payload, unless we already sent a close frame.
            if (state === OPEN) enqueue(FrameEncoder.encodePong(event.data))
            break
          case "Pong":
            break // unsolicited pongs are allowed (§5.5.3); `heard` covers heartbeats
          case "Close":
            peerClose = { code: event.code, reason: event.reason }
            if (state === OPEN) {
              // §5.5.1: echo the peer's status code (after the handler answered earlier messages).
              pendingClose = FrameEncoder.encodeClose(event.code, event.code === undefined ? undefined : "")
              state = DRAINING
            } else {
              state = CLOSED
            }
            break
        }
      }
      if (batch !== undefined) deliver(batch)
      if (result.error !== undefined) {
        if (state === OPEN) fail(result.error)
        else finishReading()
      } else if (peerClose !== undefined) {
        finishReading()
      }
    }
    // Inflate compressed messages in order (RFC 7692 §7.2.2) as the handler takes them; the
    // inflated size counts against maxMessageSize while inflating, and inflated text is UTF-8
    // checked here (§8.1). A failure ends the stream after the messages before it.
    const inflateBatch = (batch: Array<Pending>): Effect.Effect<Array<Message.Message>> =>
      Effect.gen(function*() {
        for (let i = 0; i < batch.length; i++) {
          const m = batch[i]
          if (!(m instanceof Compressed)) continue
          const inflated = yield* Effect.result(compression!.compressor.decompress(m.data, options.maxMessageSize))
          const error = inflated._tag === "Failure"
            ? inflated.failure
            : !m.binary && !Utf8.isValid(inflated.success)
            ? makeProtocolError("InvalidUtf8", "invalid UTF-8 in compressed text message")
            : undefined
          if (error !== undefined || inflated._tag === "Failure") {
            batch.length = i
            inbox = []
            inboxBytes = 0
            if (error !== undefined) fail(error)
            endInbox()
            break
          }
          batch[i] = m.binary ? new Message.BinaryMessage(inflated.success) : Message.textFromUtf8(inflated.success)
        }
        return batch as Array<Message.Message>
      })
    const nonEmpty = (batch: Array<Message.Message>) =>
      batch.length > 0
        ? Effect.succeed(batch as unknown as readonly [Message.Message, ...Array<Message.Message>])
        : Cause.done()
    const taken = (batch: Array<Pending>) => {
      if (pausedForInbox && state === OPEN) {
        pausedForInbox = false
        updateReading()
      }
      return compression === undefined ? nonEmpty(batch as Array<Message.Message>) : Effect.flatMap(inflateBatch(batch), nonEmpty)
    }
    const pull = Effect.callback<readonly [Message.Message, ...Array<Message.Message>], Cause.Done>((resume) => {
      if (inbox.length > 0) {
        const batch = inbox
        inbox = []
        inboxBytes = 0
        return resume(taken(batch))
      }
      if (inboxEnded) {
        markCaughtUp()
        return resume(Cause.done())
      }
      const take = (batch: Array<Pending> | undefined) => resume(batch === undefined ? Cause.done() : taken(batch))
      takeWaiter = take
      return Effect.sync(() => {
        if (takeWaiter === take) takeWaiter = undefined
      })
    })
    const messages = Stream.fromPull(Effect.succeed(pull))

    const query = ctx.request.query
    const connection: Connection = {
      id,
      request: ctx.request,
      path: ctx.request.path,
      get query() {
        return new URLSearchParams(query)
      },
      header: (name) => Handshake.header(ctx.request, name),
      get remoteAddress() {
        return ctx.peer.remoteAddress
      },
      protocol: ctx.decision.protocol,
      extensions: ctx.decision.extensions,
      params: ctx.decision.params ?? emptyParams,
      attributes: ctx.decision.attributes ?? emptyParams,
      messages,
      send: (message) => {
        const m = Message.toPayload(message)
        return compression !== undefined && m.data.length >= compression.threshold
          ? sendCompressed(m)
          : sendFrames(encodeMessage(m), 1)
      },
      sendAll: (messages) => {
        if (compression !== undefined) return Effect.forEach(messages, (m) => connection.send(m), { discard: true })
        const frames: Array<Uint8Array> = []
        for (let i = 0; i < messages.length; i++) {
          const encoded = encodeMessage(Message.toPayload(messages[i]))
          for (let j = 0; j < encoded.length; j++) frames.push(encoded[j])
        }
        return sendFrames(frames, messages.length)
      },
      sendFrame: (frame) => sendFrames([frame], 1),
      offerFrame: (frame) => {
        if (state !== OPEN && state !== DRAINING) return false
        if (outboxBytes > options.outboundHighWaterMark) {
          hooks.onBackpressure?.("drop")
          return false
        }
        enqueue(frame)
        hooks.onMessagesOut?.(1)
        return true
      },
      ping: (payload) =>
        Effect.suspend(() => {
          if (state !== OPEN) return Effect.fail(closedError())
          enqueue(FrameEncoder.encodePing(payload))
          return Effect.void
        }),
      close: (code = CloseCode.Normal, reason = "") => startClose(code, reason),
      closed: Deferred.await(closedDeferred),
      bufferedAmount: () => outboxBytes
    }
    const handle: ConnectionHandle = {
      info: connection,
      close: (code, reason) => startClose(code, reason),
      closed: connection.closed,
      heartbeat: () => {
        if (state !== OPEN) return
        heard = false
        enqueue(FrameEncoder.encodePing())
      },
      heardSinceHeartbeat: () => heard || state !== OPEN,
      terminate: () => {
        if (outcome !== undefined) return
        // A peer that cannot answer a ping will not answer a close frame either: drop TCP
        // (reported as 1006, RFC 6455 §7.1.5) instead of waiting closeTimeoutMs more.
        state = CLOSED
        hooks.onHeartbeatTimeout?.(handle)
        settle("heartbeat")
      }
    }

    // Start decoding: bytes that came with the upgrade request first, then the socket.
    wiring.onData = onChunk
    for (const chunk of ctx.leftover) {
      if (readFinished) break
      onChunk(chunk)
    }
    wiring.onEof = finishReading
    if (wiring.eof) finishReading()
    if (!readFinished) updateReading()

    hooks.onOpen?.(handle)
    // The handler: its end (success or failure) starts a close; it is interrupted when the connection ends.
    const handlerFiber = yield* Effect.forkChild(
      ctx.decision.handler(connection).pipe(
        Effect.onExit(() => Effect.sync(markCaughtUp)),
        Effect.matchCauseEffect({
          onSuccess: () => startClose(CloseCode.Normal, ""),
          onFailure: (cause) =>
            Cause.hasInterruptsOnly(cause)
              ? Effect.void
              : Effect.andThen(
                Effect.logError("connection handler failed", cause),
                startClose(CloseCode.InternalError, "internal error")
              )
        })
      ),
      { startImmediately: true }
    )

    // Idle timeout (Effect's Clock): close 1001 when no data message arrived for idleTimeoutMs.
    if (options.idleTimeoutMs > 0) {
      yield* Effect.forkChild(
        Effect.gen(function*() {
          while (state === OPEN) {
            const remaining = lastMessageAt + options.idleTimeoutMs - clock.currentTimeMillisUnsafe()
            if (remaining <= 0) return yield* startClose(CloseCode.GoingAway, "idle timeout")
            yield* Effect.sleep(remaining)
          }
        })
      )
    }

    // Wait until the closing handshake completes, the peer disconnects, our close goes unanswered,
    // or the heartbeat gives up.
    yield* Effect.callback<void>((resume) => {
      if (outcome !== undefined) return resume(Effect.void)
      outcomeWaiter = () => resume(Effect.void)
    })
    finishReading()
    // Nothing more will be sent unless the handler still has earlier messages to answer (DRAINING).
    // Set before the inbox ends: ending it may run the handler at once.
    if (pendingClose === undefined || outcome !== "done") state = CLOSED
    endInbox()
    if (pendingClose !== undefined && outcome === "done") {
      // Messages that arrived before the close frame or the bad frame are answered first (the
      // handler sees its stream end), then our close frame follows them.
      if (!caughtUp) {
        yield* ctx.deadlines.within<void>(Math.min(options.closeTimeoutMs, 1000), (done) => {
          if (caughtUp) return done()
          caughtUpWaiter = done
        }, undefined)
      }
      enqueue(pendingClose)
    }
    state = CLOSED
    if (protocolError !== undefined) {
      hooks.onProtocolError?.(handle, protocolError)
      yield* Effect.logInfo("protocol error", protocolError.message).pipe(Effect.annotateLogs({ connection: id }))
    }

    if (outcome === "done") {
      // Flush what is queued (our close frame included), then half-close TCP (FIN), then let the
      // peer go: reading on until its EOF means unread data never turns our FIN into a RST that
      // could destroy the close frame in flight.
      flush()
      const flushed = yield* awaitFlushed
      if (flushed) {
        writesClosed = true
        incoming.end()
        wiring.onData = discard
        incoming.resume()
        yield* awaitEof(wiring, ctx.deadlines, options.closeTimeoutMs)
      }
    }
    // Otherwise the peer is unresponsive: the scope's finalizer destroys the socket now.
    writesClosed = true
    cancelCloseDeadline()

    const info: CloseInfo = protocolError !== undefined
      ? { code: protocolError.closeCode, reason: protocolError.reason, wasClean: false, initiatedBy: "server" }
      : peerClose !== undefined
      ? {
        code: localClose?.code ?? peerClose.code ?? CloseCode.NoStatus,
        reason: localClose?.reason ?? peerClose.reason,
        wasClean: true,
        initiatedBy: localClose !== undefined ? "server" : "peer"
      }
      : outcome === "heartbeat"
      ? { code: CloseCode.Abnormal, reason: "heartbeat timeout", wasClean: false, initiatedBy: "server" }
      : localClose !== undefined
      ? { code: CloseCode.Abnormal, reason: localClose.reason, wasClean: false, initiatedBy: "server" }
      : { code: CloseCode.Abnormal, reason: "", wasClean: false, initiatedBy: "transport" }
    yield* Deferred.succeed(closedDeferred, info)
    hooks.onClose?.(handle, info)
    yield* Fiber.interrupt(handlerFiber)

  })

// Many small frames written in one turn go out as one buffer: one copy is cheaper than a vectored
// write of hundreds of tiny buffers (each wrapped, each an iovec). Large batches keep their buffers.
const COALESCE_MAX = 64 * 1024
const coalesce = (chunks: ReadonlyArray<Uint8Array>, bytes: number): Uint8Array => {
  const out = typeof Buffer === "function" ? Buffer.allocUnsafe(bytes) : new Uint8Array(bytes)
  let at = 0
  for (let i = 0; i < chunks.length; i++) {
    out.set(chunks[i], at)
    at += chunks[i].length
  }
  return out
}

// A compressed message waiting for the inflater, in its place in the batch.
class Compressed {
  readonly binary: boolean
  readonly data: Uint8Array
  constructor(binary: boolean, data: Uint8Array) {
    this.binary = binary
    this.data = data
  }
}
type Pending = Message.Message | Compressed
