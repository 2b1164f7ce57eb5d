/**
 * The sans-I/O core as Effect streams: run a WebSocket over any byte stream.
 *
 * - {@link make}: a `Stream<Uint8Array>` of the peer's bytes through
 *   {@link Protocol} (either role) gives the peer's events, and a second
 *   stream gives the bytes to write back (the pongs and the close echo the
 *   protocol sends by itself, then whatever the caller sends).
 * - {@link readRequest}: the server side of the opening handshake as a stream
 *   step: bytes in, the HTTP request head and the bytes after it out.
 * - {@link accept}: both, for a server: read and validate the request, then
 *   a WebSocket over the rest, with the 101 response first in `outgoing`.
 *
 * The reactor's TCP hot path stays callback-shaped (see `Transport.Incoming`);
 * this path is for users and tests. Its cost, measured roughly (a server
 * echoing 32-byte messages, Node 24): 2.3x the CPU of driving `Protocol` from
 * callbacks at 256 messages per chunk, 2.9x at one; `readRequest` adds about
 * 15 µs per handshake (4.8x the bare parser).
 *
 * @example
 * import { Effect, Stream } from "effect"
 * import { ProtocolStream } from "wsreactor"
 *
 * // An echo server over any byte stream (a pipe, a test fixture, a Socket):
 * const echo = (bytesIn: Stream.Stream<Uint8Array>, write: (b: Uint8Array) => Effect.Effect<void>) =>
 *   Effect.gen(function*() {
 *     const ws = yield* ProtocolStream.make(bytesIn, { role: "server" })
 *     yield* Effect.forkScoped(Stream.runForEach(ws.outgoing, write))
 *     yield* Stream.runForEach(ws.events, (e) => (e._tag === "Message" ? ws.send(e.binary, e.data) : Effect.void))
 *   })
 */
import type * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Pull from "effect/Pull"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Handshake from "../domain/Handshake.ts"
import { type Event, Protocol, type ProtocolOptions } from "../domain/Protocol.ts"

/** A WebSocket over a byte stream: events in, bytes out. */
export interface ProtocolStream<E, R> {
  /** The state machine itself (read its state, `closeInfo`, …; change it through {@link update}). */
  readonly protocol: Protocol
  /**
   * The peer's messages and control frames. Pulling it reads the input: pings
   * are answered as they are read, so something must pull it. The echo of
   * the peer's close goes out once the events before it were handled (the
   * next pull, or the end of this stream). Ends after the peer's close frame, a protocol failure (the
   * close frame is in `outgoing`), or the end of the input. An input failure
   * aborts the connection (1006) and fails this stream with it.
   */
  readonly events: Stream.Stream<Event, E, R>
  /**
   * The bytes to write to the peer, in order. Ends once our close frame is
   * out (nothing may follow it, RFC 6455 §5.5.1) or the connection is closed.
   */
  readonly outgoing: Stream.Stream<Uint8Array>
  /** Change the protocol (send, close, release a held close…); what it queues goes to `outgoing`. */
  readonly update: <A>(f: (protocol: Protocol) => A) => Effect.Effect<A>
  /** Send a data message; false once data can no longer be sent. */
  readonly send: (binary: boolean, payload: Uint8Array) => Effect.Effect<boolean>
  readonly sendText: (text: string) => Effect.Effect<boolean>
  /** Start the closing handshake (RFC 6455 §7.1.2); false when it is under way already. */
  readonly close: (code?: number, reason?: string) => Effect.Effect<boolean>
}

const encoder = new TextEncoder()

/**
 * Pipe a byte stream through {@link Protocol}. Input chunks are handed to the
 * protocol (it may unmask them in place).
 *
 * @example
 * const ws = yield* ProtocolStream.make(bytes, { role: "client", maskKey: () => crypto.getRandomValues(new Uint8Array(4)) })
 * yield* ws.sendText("hello")
 * const events = yield* Stream.runCollect(ws.events)
 */
export const make = <E, R>(
  input: Stream.Stream<Uint8Array, E, R>,
  options: ProtocolOptions
): Effect.Effect<ProtocolStream<E, R>> =>
  Effect.map(Queue.unbounded<Uint8Array, Cause.Done>(), (queue) => {
    // Our close frame (the echo of the peer's, or a failure's) is held until
    // the events before it were handled: the consumer pulled again, or
    // stopped. A peer's message and its close often share a chunk; without
    // this the close would go out before the message could be answered.
    // With `holdClose: true` the caller releases it (`update`).
    const callerReleases = options.holdClose === true
    const protocol = new Protocol({ ...options, holdClose: true })
    const release = (): void => {
      if (!callerReleases && protocol.closeHeld) {
        protocol.releaseClose()
        flush()
      }
    }

    const flush = (): void => {
      const out = protocol.dataToSend()
      if (out.length > 0) Queue.offerAllUnsafe(queue, out)
      if (protocol.closeExpected || protocol.state === "Closed") Queue.endUnsafe(queue)
    }

    // Nothing more to read: the peer's close arrived (§5.5.1), we failed the
    // connection (§7.1.7: discard), or it is closed.
    const inputOver = (): boolean =>
      protocol.closeReceived !== undefined || protocol.failure !== undefined || protocol.state === "Closed"

    const events = Stream.transformPull(input, (pull) => {
      const read = Effect.catchCause(pull, (cause) => {
        if (Pull.isDoneCause(cause)) protocol.receiveEof()
        else protocol.abort("the input stream failed")
        flush()
        return Effect.failCause(cause)
      })
      const next: Pull.Pull<Arr.NonEmptyReadonlyArray<Event>, E> = Effect.suspend(() => {
        if (inputOver()) {
          release()
          return Cause.done()
        }
        return Effect.flatMap(read, (chunks) => {
          const out: Array<Event> = []
          for (let i = 0; i < chunks.length; i++) {
            const received = protocol.receiveData(chunks[i]!)
            for (let j = 0; j < received.length; j++) out.push(received[j]!)
          }
          flush()
          return out.length > 0 ? Effect.succeed(out as unknown as Arr.NonEmptyReadonlyArray<Event>) : next
        })
      })
      return Effect.succeed(next)
    }).pipe(Stream.ensuring(Effect.sync(release)))

    const update = <A>(f: (protocol: Protocol) => A): Effect.Effect<A> =>
      Effect.sync(() => {
        const result = f(protocol)
        flush()
        return result
      })

    return {
      protocol,
      events,
      outgoing: Stream.fromQueue(queue),
      update,
      send: (binary, payload) => update((p) => p.sendMessage(binary, payload)),
      sendText: (text) => update((p) => p.sendText(encoder.encode(text))),
      close: (code, reason) => update((p) => p.sendClose(code, reason))
    }
  })

/**
 * Read an HTTP/1.1 request head from a byte stream (the server side of the
 * opening handshake, RFC 6455 §4.2.1). `rest` is the rest of the input, from
 * the first byte after the head; it reads the same input, so it must be used
 * in the scope this effect ran in. Fails with the parser's `HandshakeError`,
 * or a 400 when the input ends inside the head.
 *
 * @example
 * const { request, rest } = yield* ProtocolStream.readRequest(bytes)
 * request.path // "/chat"
 */
export const readRequest = <E, R>(
  input: Stream.Stream<Uint8Array, E, R>,
  options?: Partial<Handshake.ParserOptions>
): Effect.Effect<
  { readonly request: Handshake.HttpRequest; readonly rest: Stream.Stream<Uint8Array, E> },
  E | Handshake.HandshakeError,
  R | Scope.Scope
> =>
  Effect.gen(function*() {
    const pull = yield* Stream.toPull(input)
    const ended = Effect.fail(
      new Handshake.HandshakeError({ status: 400, reason: "Malformed", detail: "the input ended inside the request head" })
    )
    let parser = Handshake.initialRequestParser(options)
    while (true) {
      const chunks = yield* Pull.catchDone(pull, () => ended)
      for (let i = 0; i < chunks.length; i++) {
        const step = Handshake.stepRequest(parser, chunks[i]!)
        if (step._tag === "NeedMore") {
          parser = step.parser
          continue
        }
        if (step._tag === "Invalid") return yield* step.error
        const leftover = chunks.slice(i + 1)
        if (step.rest.length > 0) leftover.unshift(step.rest)
        const rest = Stream.concat(Stream.fromArray(leftover), Stream.fromPull(Effect.succeed(pull)))
        return { request: step.request, rest }
      }
    }
  })

/** What {@link accept} decided. */
export type Accepted<E> =
  | {
    readonly _tag: "Accepted"
    readonly upgrade: Handshake.UpgradeRequest
    /** The WebSocket; its `outgoing` starts with the 101 response. */
    readonly socket: ProtocolStream<E, never>
  }
  | {
    readonly _tag: "Rejected"
    readonly error: Handshake.HandshakeError
    /** The HTTP error response to write before closing the connection. */
    readonly response: Uint8Array
  }

/**
 * A WebSocket server over a byte stream: read and validate the opening
 * handshake, then run {@link Protocol} (server role) over the rest. Scoped
 * like {@link readRequest}. A request that is not a valid upgrade is
 * `Rejected` with the response to send (a head that does not parse too).
 *
 * @example
 * const result = yield* ProtocolStream.accept(bytes, { protocol: (offered) => offered[0] })
 * if (result._tag === "Accepted") yield* Stream.runForEach(result.socket.events, handle)
 */
export const accept = <E, R>(
  input: Stream.Stream<Uint8Array, E, R>,
  options: Omit<ProtocolOptions, "role" | "maskKey"> & {
    /** Choose a subprotocol from the client's offer (RFC 6455 §4.2.2 item 5.4). */
    readonly protocol?: ((offered: ReadonlyArray<string>) => string | undefined) | undefined
    readonly parser?: Partial<Handshake.ParserOptions> | undefined
  } = {}
): Effect.Effect<Accepted<E>, E, R | Scope.Scope> =>
  Effect.gen(function*() {
    const head = yield* Effect.result(readRequest(input, options.parser))
    if (head._tag === "Failure") {
      const error = head.failure
      if (!(error instanceof Handshake.HandshakeError)) return yield* Effect.fail(error)
      return { _tag: "Rejected", error, response: Handshake.rejectResponse(error) } as const
    }
    const valid = Handshake.validateUpgrade(head.success.request)
    if (valid._tag === "Error") {
      return { _tag: "Rejected", error: valid.error, response: Handshake.rejectResponse(valid.error) } as const
    }
    const upgrade = valid.upgrade
    const chosen = options.protocol?.(upgrade.protocols)
    const socket = yield* make(head.success.rest, { ...options, role: "server" })
    const response = Handshake.acceptResponse({ key: upgrade.key, protocol: chosen })
    return {
      _tag: "Accepted",
      upgrade,
      socket: { ...socket, outgoing: Stream.concat(Stream.succeed(response), socket.outgoing) }
    } as const
  })
