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
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import * as Stream from "effect/Stream"
import * as CloseCode from "../domain/CloseCode.ts"
import * as FrameDecoder from "../domain/FrameDecoder.ts"
import * as FrameEncoder from "../domain/FrameEncoder.ts"
import * as Handshake from "../domain/Handshake.ts"
import * as PerMessageDeflate from "../domain/PerMessageDeflate.ts"
import { protocolError as makeProtocolError } from "../domain/ProtocolError.ts"
import * as Utf8 from "../domain/Utf8.ts"
import { type Compressor, CompressionLimiter, makeCompressor } from "./Compression.ts"
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
}

let nextConnectionId = 1

type Pull = Effect.Effect<ReadonlyArray<Uint8Array>, Socket.SocketError>

// RFC 6455 §7.1.1 wants the server to close TCP first; these states say how far the closing handshake got.
const OPEN = 0
const CLOSING = 1 // our close frame is queued, waiting for the peer's
const CLOSED = 2 // no more frames will be sent
// Reading stopped (peer's close frame, or a protocol error); the handler may still answer the
// messages that arrived before it, then our close frame goes out.
const DRAINING = 3

/**
 * Run one accepted connection to its end: read the HTTP request under the
 * handshake deadline, answer it, and for an accepted upgrade run the frame
 * loop and the application's handler. Never fails; always releases the socket.
 */
/** permessage-deflate for a server: the options, and the process-wide zlib limiter. */
export interface DeflateSupport {
  readonly options: PerMessageDeflate.DeflateOptions
  readonly limiter: CompressionLimiter["Service"]
}

export const runConnection = <R>(
  incoming: Incoming,
  app: App<R>,
  options: ServerOptions,
  hooks: Hooks = {},
  deflate?: DeflateSupport
): Effect.Effect<void, never, R> =>
  Effect.scoped(
    Effect.gen(function*() {
      const scope = yield* Effect.scope
      const reader = yield* incoming.socket.reader
      // The writer lives in its own scope: closing it half-closes TCP (FIN) while we keep reading.
      const writerScope = yield* Scope.fork(scope)
      const writer = yield* Scope.provide(incoming.socket.writer, writerScope)
      const peer: Peer = { remoteAddress: incoming.remoteAddress, remotePort: incoming.remotePort }

      const pull = reader.pull as Pull // TCP sockets yield bytes only
      const head = yield* readRequest(pull, options).pipe(
        Effect.timeoutOrElse({
          duration: options.handshakeTimeoutMs,
          orElse: () => Effect.succeed({ _tag: "Timeout" } as const)
        })
      )
      const answer = (bytes: Uint8Array, status: number) => {
        hooks.onHandshake?.(status)
        return Effect.ignore(writer.write(bytes))
      }
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
        // RFC 9110 §9.3.2: a HEAD answer carries GET's header fields (Content-Length included) but no content.
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
      yield* answer(
        Handshake.acceptResponse({
          key: validated.upgrade.key,
          protocol: accepted.protocol,
          extensions: accepted.extensions,
          headers: accepted.headers
        }),
        101
      )
      const compressor = negotiated === undefined || deflate === undefined ? undefined : yield* makeCompressor(negotiated.params, deflate.options).pipe(
        Effect.provideService(CompressionLimiter, deflate.limiter)
      )
      yield* runOpen({
        scope,
        writerScope,
        pull,
        writer,
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

/** The bytes of an HTTP response up to and including the blank line after its head. */
const headOnly = (response: Uint8Array): Uint8Array => {
  for (let i = 3; i < response.length; i++) {
    if (response[i] === 10 && response[i - 1] === 13 && response[i - 2] === 10 && response[i - 3] === 13) {
      return response.subarray(0, i + 1)
    }
  }
  return response
}

type Head =
  | { readonly _tag: "Request"; readonly request: Handshake.HttpRequest; readonly rest: ReadonlyArray<Uint8Array> }
  | { readonly _tag: "Invalid"; readonly error: Handshake.HandshakeError }
  | { readonly _tag: "Gone" }

/** Read until the request head is complete; bytes after it are kept for the frame decoder. */
const readRequest = (pull: Pull, options: ServerOptions): Effect.Effect<Head> =>
  Effect.gen(function*() {
    let parser = Handshake.initialRequestParser({ maxHeaderBytes: options.maxHeaderBytes })
    while (true) {
      const chunks = yield* Effect.result(pull)
      if (chunks._tag === "Failure") return { _tag: "Gone" } as const
      for (let i = 0; i < chunks.success.length; i++) {
        const result = Handshake.stepRequest(parser, chunks.success[i])
        if (result._tag === "NeedMore") {
          parser = result.parser
          continue
        }
        if (result._tag === "Invalid") return result
        const rest = result.rest.length > 0 ? [result.rest] : []
        for (let j = i + 1; j < chunks.success.length; j++) rest.push(chunks.success[j])
        return { _tag: "Request", request: result.request, rest } as const
      }
    }
  })

interface OpenContext<R> {
  readonly scope: Scope.Scope
  readonly writerScope: Scope.Closeable
  readonly pull: Pull
  readonly writer: Socket.Writer
  readonly request: Handshake.HttpRequest
  readonly peer: Peer
  readonly decision: Accept<R>
  readonly leftover: ReadonlyArray<Uint8Array>
  readonly options: ServerOptions
  readonly hooks: Hooks
  readonly compression: { readonly compressor: Compressor; readonly threshold: number } | undefined
}

const emptyParams: Readonly<Record<string, never>> = Object.freeze({})

/** The data-transfer phase: frames in, frames out, until both close frames are exchanged or TCP drops. */
const runOpen = <R>(ctx: OpenContext<R>): Effect.Effect<void, never, R> =>
  Effect.gen(function*() {
    const { options, hooks, writer } = ctx
    const id = nextConnectionId++
    const inbound = yield* Queue.bounded<Message.Message, Cause.Done>(options.inboundQueueSize)
    const closedDeferred = yield* Deferred.make<CloseInfo>()
    const closeStarted = yield* Deferred.make<void>()

    // ---- outbound: frames are queued synchronously and written in batches by one flusher fiber ----
    let state = OPEN
    let outbox: Array<Uint8Array> = []
    let outboxBytes = 0
    let wakeFlusher: ((effect: Effect.Effect<void>) => void) | undefined
    let drainWaiters: Array<(effect: Effect.Effect<void>) => void> = []
    let writesDone = false
    let localClose: { code: number; reason: string } | undefined
    let peerClose: { code: number | undefined; reason: string } | undefined
    let writeFailed = false
    const clock = yield* Clock.Clock
    let heard = true // any bytes from the peer since the last heartbeat ping
    let lastMessageAt = clock.currentTimeMillisUnsafe()

    const enqueue = (frame: Uint8Array) => {
      outbox.push(frame)
      outboxBytes += frame.length
      if (wakeFlusher !== undefined) {
        const wake = wakeFlusher
        wakeFlusher = undefined
        wake(Effect.void)
      }
    }
    const enqueueAll = (frames: ReadonlyArray<Uint8Array>) => {
      for (let i = 0; i < frames.length; i++) enqueue(frames[i])
    }
    const waitForWork = Effect.callback<void>((resume) => {
      if (outbox.length > 0 || writesDone) return resume(Effect.void)
      wakeFlusher = resume
      return Effect.sync(() => {
        if (wakeFlusher === resume) wakeFlusher = undefined
      })
    })
    const flusher = Effect.gen(function*() {
      while (true) {
        if (outbox.length === 0) {
          if (writesDone) return
          yield* waitForWork
          continue
        }
        const batch = outbox
        const bytes = outboxBytes
        outbox = []
        const written = yield* Effect.result(writer.writeAll(batch as [Uint8Array, ...Array<Uint8Array>]))
        outboxBytes -= bytes
        hooks.onBytesOut?.(bytes)
        if (written._tag === "Failure") {
          writeFailed = true
          outbox = []
          outboxBytes = 0
          state = CLOSED
        }
        if (drainWaiters.length > 0 && outboxBytes <= options.outboundHighWaterMark) {
          const waiters = drainWaiters
          drainWaiters = []
          for (const resume of waiters) resume(Effect.void)
        }
        if (writeFailed) return
      }
    })
    const waitForDrain = Effect.callback<void>((resume) => {
      if (outboxBytes <= options.outboundHighWaterMark || state === CLOSED) return resume(Effect.void)
      drainWaiters.push(resume)
    })

    const closedError = new ConnectionClosedError({ connectionId: id })
    const encodeMessage = (message: Message.Message): Array<Uint8Array> => {
      const binary = message._tag === "Binary"
      const payload = message.data
      if (options.fragmentSize > 0 && payload.length > options.fragmentSize) {
        return FrameEncoder.encodeMessage({ binary, payload, fragmentSize: options.fragmentSize })
      }
      // One buffer for small frames (one copy is cheaper than a vectored write); header + payload for large ones.
      if (payload.length <= 4096) {
        return [FrameEncoder.encodeFrameConcat({ opcode: binary ? FrameDecoder.Opcode.Binary : FrameDecoder.Opcode.Text }, payload)]
      }
      return FrameEncoder.encodeFrame({ opcode: binary ? FrameDecoder.Opcode.Binary : FrameDecoder.Opcode.Text }, payload)
    }
    // Backpressure, judged on what is already buffered (a single large message to a fast peer is
    // fine): "drop" refuses the message, "close" closes with 1008; "suspend" queues it, then waits
    // until the buffer is back under the mark.
    const sendFrames = (
      frames: ReadonlyArray<Uint8Array>,
      messageCount: number
    ): Effect.Effect<void, ConnectionClosedError | MessageDroppedError> =>
      Effect.suspend((): Effect.Effect<void, ConnectionClosedError | MessageDroppedError> => {
        if (state !== OPEN && state !== DRAINING) return Effect.fail(closedError)
        if (outboxBytes > options.outboundHighWaterMark) {
          if (options.backpressure === "drop") {
            hooks.onBackpressure?.("drop")
            return Effect.fail(new MessageDroppedError({ connectionId: id, bufferedBytes: outboxBytes }))
          }
          if (options.backpressure === "close") {
            hooks.onBackpressure?.("close")
            return Effect.andThen(startClose(CloseCode.PolicyViolation, "send buffer full"), Effect.fail(closedError))
          }
        }
        enqueueAll(frames)
        hooks.onMessagesOut?.(messageCount)
        return outboxBytes > options.outboundHighWaterMark && options.backpressure === "suspend" ? waitForDrain : Effect.void
      })

    // RFC 7692 §6.1: RSV1 on the first frame of a compressed message only.
    const sendCompressed = (message: Message.Message) =>
      Effect.flatMap(compression!.compressor.compress(message.data), (payload) =>
        sendFrames(
          FrameEncoder.encodeMessage({
            binary: message._tag === "Binary",
            payload,
            compressed: true,
            fragmentSize: options.fragmentSize > 0 ? options.fragmentSize : undefined
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
        return Deferred.succeed(closeStarted, undefined)
      })

    // ---- inbound: decode chunks, answer control frames, hand messages to the handler ----
    const compression = ctx.compression
    let decoder = FrameDecoder.initial({
      role: "server",
      maxMessageSize: options.maxMessageSize,
      allowRsv1: compression !== undefined
    })
    let protocolError: ProtocolError | undefined
    let pendingClose: Uint8Array | undefined
    let compressedPending = false
    // Inflate compressed messages in order (RFC 7692 §7.2.2); the inflated size counts against
    // maxMessageSize while inflating, and inflated text is UTF-8 checked here (§8.1).
    const fail = (error: ProtocolError) => {
      protocolError = error
      pendingClose = FrameEncoder.encodeClose(error.closeCode, error.reason)
      state = DRAINING
    }
    const inflateAll = (batch: Array<Pending>): Effect.Effect<boolean> =>
      Effect.gen(function*() {
        compressedPending = false
        for (let i = 0; i < batch.length; i++) {
          const m = batch[i]
          if (!(m instanceof Compressed)) continue
          const inflated = yield* Effect.result(compression!.compressor.decompress(m.data, options.maxMessageSize))
          if (inflated._tag === "Failure") {
            batch.length = i
            fail(inflated.failure)
            return true
          }
          if (!m.binary && !Utf8.isValid(inflated.success)) {
            batch.length = i
            fail(makeProtocolError("InvalidUtf8", "invalid UTF-8 in compressed text message"))
            return true
          }
          batch[i] = m.binary ? new Message.BinaryMessage(inflated.success) : Message.textFromUtf8(inflated.success)
        }
        return false
      })
    let eof = false
    const handleChunk = (chunk: Uint8Array, messages: Array<Pending>): boolean => {
      heard = true
      const result = FrameDecoder.step(decoder, chunk)
      decoder = result.state
      const events = result.events
      for (let i = 0; i < events.length; i++) {
        const event = events[i]
        switch (event._tag) {
          case "Message":
            if (state === OPEN) {
              if (event.compressed) {
                compressedPending = true
                messages.push(new Compressed(event.binary, event.data))
              } else {
                messages.push(event.binary ? new Message.BinaryMessage(event.data) : Message.textFromUtf8(event.data))
              }
            }
            break
          case "Ping":
            // RFC 6455 §5.5.3: answer with the same payload, unless we already sent a close frame.
            if (state === OPEN) enqueue(FrameEncoder.encodePong(event.data))
            break
          case "Pong":
            break // unsolicited pongs are allowed (§5.5.3); heartbeats look at them
          case "Close":
            peerClose = { code: event.code, reason: event.reason }
            if (state === OPEN) {
              // §5.5.1: echo the peer's status code (after the handler answered earlier messages).
              pendingClose = FrameEncoder.encodeClose(event.code, event.code === undefined ? undefined : "")
              state = DRAINING
            } else {
              state = CLOSED
            }
            return true
        }
      }
      if (result.error !== undefined) {
        protocolError = result.error
        if (state === OPEN) {
          // §7.1.7 Fail the WebSocket Connection: send a close frame with the code, then close TCP.
          pendingClose = FrameEncoder.encodeClose(result.error.closeCode, result.error.reason)
          state = DRAINING
        } else {
          state = CLOSED
        }
        return true
      }
      return false
    }
    const readFrames: Effect.Effect<void> = Effect.gen(function*() {
      // Only plain messages remain once inflateAll has run.
      const messages: Array<Pending> = []
      let done = false
      for (const chunk of ctx.leftover) {
        if (handleChunk(chunk, messages)) {
          done = true
          break
        }
      }
      while (true) {
        if (compressedPending && (yield* inflateAll(messages))) done = true
        if (messages.length > 0) {
          if (options.idleTimeoutMs > 0) lastMessageAt = clock.currentTimeMillisUnsafe()
          if (hooks.onMessagesIn !== undefined) {
            let bytes = 0
            for (const m of messages) bytes += m.data.length
            hooks.onMessagesIn(messages.length, bytes)
          }
          // Once our close has started nobody may take these, but the peer's close reply must still be read.
          yield* Effect.raceFirst(
            Queue.offerAll(inbound, messages.splice(0, messages.length) as Array<Message.Message>),
            Deferred.await(closeStarted)
          )
        }
        if (done) return
        // A peer that does not read what we send is not read from either: pongs and echoes
        // would otherwise pile up in the outbox without bound.
        if (outboxBytes > options.outboundHighWaterMark) yield* waitForDrain
        const chunks = yield* Effect.result(ctx.pull)
        if (chunks._tag === "Failure") {
          eof = true
          return
        }
        for (let i = 0; i < chunks.success.length; i++) {
          if (handleChunk(chunks.success[i], messages)) {
            done = true
            break
          }
        }
      }
    })

    const query = ctx.request.query
    const connection: Connection = {
      id,
      request: ctx.request,
      path: ctx.request.path,
      get query() {
        return new URLSearchParams(query)
      },
      header: (name) => Handshake.header(ctx.request, name),
      remoteAddress: ctx.peer.remoteAddress,
      protocol: ctx.decision.protocol,
      extensions: ctx.decision.extensions,
      params: ctx.decision.params ?? emptyParams,
      attributes: ctx.decision.attributes ?? emptyParams,
      messages: Stream.fromQueue(inbound),
      send: (message) => {
        const m = Message.toPayload(message)
        return compression !== undefined && m.data.length >= compression.threshold
          ? sendCompressed(m)
          : sendFrames(encodeMessage(m), 1)
      },
      sendAll: (messages) =>
        compression === undefined
          ? sendFrames(messages.flatMap((m) => encodeMessage(Message.toPayload(m))), messages.length)
          : Effect.forEach(messages, (m) => connection.send(m), { discard: true }),
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
          if (state !== OPEN) return Effect.fail(closedError)
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
      closed: connection.closed
    }

    const flusherFiber = yield* Effect.forkIn(flusher, ctx.scope)
    hooks.onOpen?.(handle)
    // The handler: its end (success or failure) starts a close; it is interrupted when the connection ends.
    const handlerFiber = yield* Effect.forkIn(
      ctx.decision.handler(connection).pipe(
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
      ctx.scope
    )

    // Liveness (all on Effect's Clock): ping every interval, drop a peer silent for the timeout after it;
    // close 1001 when no data message arrived for idleTimeoutMs.
    const terminated = yield* Deferred.make<"heartbeat" | "idle">()
    if (options.heartbeatIntervalMs > 0) {
      yield* Effect.forkIn(
        Effect.gen(function*() {
          while (state === OPEN) {
            yield* Effect.sleep(options.heartbeatIntervalMs)
            if (state !== OPEN) return
            heard = false
            enqueue(FrameEncoder.encodePing())
            yield* Effect.sleep(options.heartbeatTimeoutMs)
            if (!heard) {
              // A peer that cannot answer a ping will not answer a close frame either: drop TCP
              // (the close is reported as 1006, RFC 6455 §7.1.5) instead of waiting closeTimeoutMs more.
              // CLOSED first, so the handler ending meanwhile cannot queue a close frame (1000) after all.
              state = CLOSED
              hooks.onHeartbeatTimeout?.(handle)
              yield* Deferred.succeed(terminated, "heartbeat")
              return
            }
          }
        }),
        ctx.scope
      )
    }
    if (options.idleTimeoutMs > 0) {
      yield* Effect.forkIn(
        Effect.gen(function*() {
          while (state === OPEN) {
            const remaining = lastMessageAt + options.idleTimeoutMs - clock.currentTimeMillisUnsafe()
            if (remaining <= 0) return yield* startClose(CloseCode.GoingAway, "idle timeout")
            yield* Effect.sleep(remaining)
          }
        }),
        ctx.scope
      )
    }

    // Read until the closing handshake completes, the peer disconnects, our close goes unanswered,
    // or the heartbeat gives up.
    const closeDeadline = Effect.andThen(Deferred.await(closeStarted), Effect.sleep(options.closeTimeoutMs))
    const outcome = yield* Effect.raceFirst(
      Effect.as(readFrames, "done" as const),
      Effect.raceFirst(Effect.as(closeDeadline, "close-timeout" as const), Deferred.await(terminated))
    )
    yield* Queue.end(inbound)
    if (pendingClose !== undefined && outcome === "done") {
      // Messages that arrived before the close frame or the bad frame are answered first (the
      // handler sees its stream end), then our close frame follows them.
      yield* Fiber.await(handlerFiber).pipe(
        Effect.timeoutOrElse({ duration: Math.min(options.closeTimeoutMs, 1000), orElse: () => Effect.void })
      )
      enqueue(pendingClose)
    }
    state = CLOSED
    if (protocolError !== undefined) {
      hooks.onProtocolError?.(handle, protocolError)
      yield* Effect.logInfo("protocol error", protocolError.message).pipe(Effect.annotateLogs({ connection: id }))
    }

    // Flush what is queued (our close frame included), then half-close TCP (FIN).
    writesDone = true
    if (wakeFlusher !== undefined) wakeFlusher(Effect.void)
    let graceful = outcome === "done" && !writeFailed
    if (graceful) {
      const flushed = yield* Fiber.await(flusherFiber).pipe(
        Effect.timeoutOrElse({ duration: options.closeTimeoutMs, orElse: () => Effect.succeed(undefined) })
      )
      graceful = flushed !== undefined
    }
    if (graceful) {
      yield* Scope.close(ctx.writerScope, Exit.void)
      // After a protocol error the peer may still be sending: drain until it closes, so the kernel
      // does not answer unread data with RST and destroy our close frame in flight.
      if (!eof && protocolError !== undefined) {
        yield* drain(ctx.pull).pipe(Effect.timeoutOrElse({ duration: options.closeTimeoutMs, orElse: () => Effect.void }))
      }
    } else {
      // Peer unresponsive: destroy the socket now rather than wait for buffered bytes it will never read.
      yield* Effect.ignore(writer.write(new Socket.CloseEvent(CloseCode.Abnormal)))
    }

    const info: CloseInfo = protocolError !== undefined
      ? { code: protocolError.closeCode, reason: protocolError.reason, wasClean: false, initiatedBy: "server" }
      : peerClose !== undefined
      ? {
        code: localClose?.code ?? peerClose.code ?? CloseCode.NoStatus,
        reason: localClose?.reason ?? peerClose.reason,
        wasClean: !writeFailed,
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

const drain = (pull: Pull): Effect.Effect<void> =>
  Effect.gen(function*() {
    while (true) {
      const chunks = yield* Effect.result(pull)
      if (chunks._tag === "Failure") return
    }
  })
