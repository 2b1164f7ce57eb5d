/**
 * The session: drives one accepted socket from its first byte to its end,
 * like the per-fd record of the original epoll design. One phase value says
 * where it stands, and one `onData` dispatches every chunk on it:
 *
 *   Head        reading the HTTP request (Handshake), then holding early frames
 *               while the app decides
 *   Open        frames go through the `Protocol`; messages to the `Inbox`,
 *               frames out through the `Outbox`; `Liveness` watches the peer
 *   Discarding  reading has ended (close frame, bad frame, EOF, HTTP answer
 *               sent): bytes are dropped until the peer's EOF
 *   Closed      nothing more happens
 *
 * The closing sequence (RFC 6455 §7.1.1): after the peer's close frame or a
 * protocol failure, the handler first answers the messages that came before
 * it (the `Protocol` holds our close frame until then), then our close frame
 * goes out, the server half-closes TCP, and waits briefly for the peer's EOF
 * so unread bytes never turn our FIN into a RST that destroys the close frame.
 *
 * The connection's fiber (see `Reactor`) only runs the handler and waits; all
 * per-chunk work happens here, in the transport's callbacks.
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as CloseCode from "../domain/CloseCode.ts"
import * as Handshake from "../domain/Handshake.ts"
import { type CloseInfo, Protocol } from "../domain/Protocol.ts"
import type { ProtocolError } from "../domain/ProtocolError.ts"
import type { Accept, ConnectionHandle, Hooks, Peer } from "./App.ts"
import type { Compressor } from "./Compression.ts"
import { bindOnFirstAccess, type Connection } from "./Connection.ts"
import * as Deadlines from "./Deadlines.ts"
import { Inbox, type InboxOwner, pendingOf } from "./Inbox.ts"
import { Liveness, type LivenessOwner } from "./Liveness.ts"
import type { ServerOptions } from "./Options.ts"
import { enterTurn, leaveTurn, Outbox, type OutboxOwner } from "./Outbox.ts"
import * as Sending from "./Sending.ts"
import type { Incoming } from "./Transport.ts"

/** What every session of one server shares (built once per server). */
export interface ServerContext {
  readonly options: ServerOptions
  readonly hooks: Hooks
  readonly deadlines: Deadlines.Deadlines
  readonly clock: Clock.Clock
  /** Log a line outside any fiber (socket callbacks). */
  readonly log: (level: "Info" | "Error", message: string, detail?: unknown) => void
}

/** The request head, or why there is none. */
export type Head =
  | { readonly _tag: "Request"; readonly request: Handshake.HttpRequest }
  | { readonly _tag: "Invalid"; readonly error: Handshake.HandshakeError }
  | { readonly _tag: "Gone" }
  | { readonly _tag: "Timeout" }

export type Phase = "Head" | "Open" | "Discarding" | "Closed"

/** How the open phase ended: reading finished (gracefully or not), or we gave up on the peer. */
type Outcome = "done" | "close-timeout" | "heartbeat"

// Bytes held after the request head while the app decides; past this the socket is paused.
const EARLY_BYTES_MAX = 65536
const emptyParams: Readonly<Record<string, never>> = Object.freeze({})
// `early` after the Head phase: nothing is pushed to it any more, so all sessions share one.
const NO_BYTES: Array<Uint8Array> = []
let nextConnectionId = 1

const afterHandler = (session: Session) => (exit: Exit.Exit<void, unknown>) => session.onHandlerExit(exit)

export class Session implements ConnectionHandle, OutboxOwner, InboxOwner, LivenessOwner, Sending.Sender {
  phase: Phase = "Head"
  readonly incoming: Incoming
  readonly server: ServerContext
  private eof = false
  private eofWaiter: (() => void) | undefined = undefined

  // ---- Head
  private parser: Handshake.RequestParser | undefined
  private head: Head | undefined = undefined
  private headWaiter: ((head: Head) => void) | undefined = undefined
  /** The request head's text as received (see `Handshake.requestHeadText`), until the connection takes it. */
  rawHead: string | undefined = undefined
  /** Bytes after the request head, for the frame decoder once the upgrade is accepted. */
  private early: Array<Uint8Array> = []
  private earlyBytes = 0

  // ---- Open
  protocol!: Protocol
  outbox!: Outbox
  inbox!: Inbox
  private liveness: Liveness | undefined = undefined
  private connection!: LiveConnection
  compressor: Compressor | undefined = undefined
  threshold = 0
  private outcome: Outcome | undefined = undefined
  private closeTimer: Deadlines.Deadline = Deadlines.none
  private catchUpTimer: Deadlines.Deadline = Deadlines.none
  /** Reading ended; the handler is given a moment to catch up before the closing sequence goes on. */
  private awaitingCatchUp = false
  private pausedForInbox = false
  /** The handler has answered every message it was given (it asked for more after the end, or it returned). */
  private caughtUp = false
  private handlerFiber: Fiber.Fiber<unknown, unknown> | undefined = undefined
  private closeResult: CloseInfo | undefined = undefined
  private closedWaiters: Array<(info: CloseInfo) => void> | undefined = undefined

  constructor(incoming: Incoming, server: ServerContext) {
    this.incoming = incoming
    this.server = server
    this.parser = Handshake.initialRequestParser({ maxHeaderBytes: server.options.maxHeaderBytes })
  }

  /** Start reading. A throw in a callback (a bug, a throwing hook) costs this connection only. */
  listen(): void {
    this.incoming.listen(
      (chunk, borrowed) => {
        enterTurn()
        try {
          this.onData(chunk, borrowed === true)
        } catch (defect) {
          this.onDefect(defect)
        } finally {
          leaveTurn()
        }
      },
      () => {
        try {
          this.onEnd()
        } catch (defect) {
          this.onDefect(defect)
        }
      }
    )
  }

  /** Bytes from the peer; `borrowed`: valid during this call only (see `Incoming.listen`). */
  onData(chunk: Uint8Array, borrowed: boolean = false): void {
    switch (this.phase) {
      case "Open":
        return this.receive(chunk, borrowed)
      case "Head":
        // The head parser and `early` keep what they are given.
        return this.receiveHead(borrowed ? chunk.slice() : chunk)
      case "Discarding":
      case "Closed":
        return
    }
  }

  onEnd(): void {
    this.eof = true
    switch (this.phase) {
      case "Head":
        if (this.head === undefined) this.headComplete({ _tag: "Gone" })
        return
      case "Open":
        this.protocol.receiveEof()
        return this.settle("done")
      case "Discarding":
      case "Closed": {
        const waiter = this.eofWaiter
        this.eofWaiter = undefined
        if (waiter !== undefined) waiter()
      }
    }
  }

  private onDefect(defect: unknown): void {
    this.server.log("Error", "connection dropped after a defect", defect)
    this.incoming.destroy()
  }

  // ---------------------------------------------------------------- Head

  private receiveHead(chunk: Uint8Array): void {
    if (this.head !== undefined) {
      // After the head: the decoder's, once the upgrade is accepted. Bounded while the app decides.
      this.early.push(chunk)
      this.earlyBytes += chunk.length
      if (this.earlyBytes > EARLY_BYTES_MAX) this.incoming.pause()
      return
    }
    const result = Handshake.stepRequest(this.parser!, chunk)
    switch (result._tag) {
      case "NeedMore":
        this.parser = result.parser
        return
      case "Invalid":
        return this.headComplete({ _tag: "Invalid", error: result.error })
      default:
        if (result.rest.length > 0) this.early.push(result.rest)
        this.rawHead = result.raw
        return this.headComplete({ _tag: "Request", request: result.request })
    }
  }

  private headComplete(head: Head): void {
    this.parser = undefined
    this.head = head
    const waiter = this.headWaiter
    this.headWaiter = undefined
    if (waiter !== undefined) waiter(head)
  }

  /** The request head, within the handshake timeout. */
  readHead(): Effect.Effect<Head> {
    return this.server.deadlines.within<Head>(this.server.options.handshakeTimeoutMs, (done) => {
      if (this.head !== undefined) return done(this.head)
      this.headWaiter = done
      return () => {
        this.headWaiter = undefined
        if (this.head === undefined) {
          this.head = { _tag: "Timeout" }
          this.phase = "Discarding"
        }
      }
    }, { _tag: "Timeout" })
  }

  /** Answer with plain HTTP and end the connection: FIN after it, then wait (briefly) for the peer to go. */
  answer(bytes: Uint8Array, status: number): Effect.Effect<void> {
    return Effect.callback<void>((resume) => {
      this.server.hooks.onHandshake?.(status)
      this.phase = "Discarding"
      this.early = NO_BYTES
      this.incoming.write([bytes])
      this.incoming.end()
      this.incoming.resume()
      this.awaitEof(() => resume(Effect.void))
    })
  }

  // Call `then` at the peer's EOF, or after closeTimeoutMs.
  private awaitEof(then: () => void): void {
    if (this.eof) return then()
    const deadline = this.server.deadlines.add(this.server.options.closeTimeoutMs, () => {
      this.eofWaiter = undefined
      then()
    })
    this.eofWaiter = () => {
      deadline.cancel()
      then()
    }
  }

  // ---------------------------------------------------------------- Open

  /**
   * The data-transfer phase: set up the protocol, feed it the bytes that came
   * with the request, then run the handler in this (the connection's) fiber.
   * Completes when the connection is closed.
   */
  open<R>(
    request: Handshake.HttpRequest,
    peer: Peer,
    accept: Accept<R>,
    compression: { readonly compressor: Compressor; readonly threshold: number } | undefined
  ): Effect.Effect<void, never, R> {
    return Effect.withFiber((fiber) => {
      const { options, hooks } = this.server
      this.handlerFiber = fiber
      this.compressor = compression?.compressor
      this.threshold = compression?.threshold ?? 0
      this.protocol = new Protocol({
        role: "server",
        maxMessageSize: options.maxMessageSize,
        compression: compression !== undefined,
        fragmentSize: options.fragmentSize,
        // Messages that came before the peer's close (or a bad frame) are answered first.
        holdClose: true
      })
      this.outbox = new Outbox(this.incoming, this.protocol, options.outboundHighWaterMark, hooks, this)
      this.inbox = new Inbox({
        capacity: options.inboundQueueSize,
        highWaterMark: options.inboundHighWaterMark,
        maxMessageSize: options.maxMessageSize
      }, this.compressor, this)
      this.connection = new LiveConnection(this, request, peer, accept)
      this.phase = "Open"
      this.head = undefined // the connection keeps what it exposes, not the parsed head
      // Open before the first byte is read: frames that came with the request may close it at once.
      hooks.onOpen?.(this)
      if (options.heartbeatIntervalMs > 0 || options.idleTimeoutMs > 0) {
        this.liveness = new Liveness(this, this.server.deadlines, this.server.clock, options)
        this.liveness.start()
      }
      const early = this.early
      this.early = NO_BYTES
      for (let i = 0; i < early.length && this.phase === "Open"; i++) this.receive(early[i]!)
      if (this.eof && this.phase === "Open") this.onEnd()
      if (this.phase === "Open") this.updateReading()
      // The handler's end (success or failure) starts a close; the session interrupts it once the
      // connection is closed if it is still running.
      // (The continuation is built outside this closure: it stays on the fiber's stack for the
      // connection's life, and a closure made here would keep the request and the decision too.)
      return Effect.flatMap(Effect.exit(accept.handler(this.connection)), afterHandler(this))
    })
  }

  /** The handler ended (it returned, failed, or was interrupted from inside). */
  onHandlerExit(exit: Exit.Exit<void, unknown>): Effect.Effect<void> {
    this.handlerFiber = undefined
    this.onCaughtUp()
    if (exit._tag === "Success") this.startClose(CloseCode.Normal, "")
    else if (!Cause.hasInterruptsOnly(exit.cause)) {
      return Effect.andThen(
        Effect.logError("connection handler failed", exit.cause),
        Effect.andThen(Effect.sync(() => this.startClose(CloseCode.InternalError, "internal error")), this.awaitClosed())
      )
    }
    return Effect.asVoid(this.awaitClosed())
  }

  private receive(chunk: Uint8Array, borrowed: boolean = false): void {
    const protocol = this.protocol
    const batch = pendingOf(protocol.receiveData(chunk, borrowed))
    if (batch !== undefined) {
      this.liveness?.onMessages()
      const onMessagesIn = this.server.hooks.onMessagesIn
      if (onMessagesIn !== undefined) {
        let bytes = 0
        for (let i = 0; i < batch.length; i++) bytes += batch[i]!.data.length
        onMessagesIn(batch.length, bytes)
      }
      this.inbox.push(batch)
    }
    if (protocol.bufferedBytes > 0) this.outbox.schedule() // pongs
    if (protocol.failure !== undefined || protocol.closeReceived !== undefined) this.settle("done")
  }

  // Reading pauses for two reasons: the handler is behind, or the peer does not read.
  private updateReading(): void {
    if (this.phase !== "Open") return
    if (this.pausedForInbox || this.outbox.isCongested) this.incoming.pause()
    else this.incoming.resume()
  }

  onCongestion(_congested: boolean): void {
    this.updateReading()
  }

  onWriteDefect(defect: unknown): void {
    this.onDefect(defect)
  }

  onInboxFull(): void {
    // Once we are closing, the peer's answer must be read whatever the handler does.
    if (this.protocol.state !== "Open") return
    this.pausedForInbox = true
    this.updateReading()
  }

  onInboxRoom(): void {
    if (!this.pausedForInbox) return
    this.pausedForInbox = false
    this.updateReading()
  }

  onCaughtUp(): void {
    if (this.caughtUp) return
    this.caughtUp = true
    if (this.outcome === "done" && this.awaitingCatchUp) this.releaseClose()
  }

  onInflateError(error: ProtocolError): void {
    this.protocol.fail(error)
    this.settle("done")
  }

  sendHeartbeat(): void {
    if (this.protocol.sendPing()) this.outbox.schedule()
  }

  onHeartbeatTimeout(): void {
    // A peer that cannot answer a ping will not answer a close frame either: drop TCP (reported
    // as 1006, RFC 6455 §7.1.5) instead of waiting closeTimeoutMs more.
    this.server.hooks.onHeartbeatTimeout?.(this)
    this.settle("heartbeat")
  }

  onIdleTimeout(): void {
    this.startClose(CloseCode.GoingAway, "idle timeout")
  }

  // ---------------------------------------------------------------- closing

  /** Start the closing handshake (RFC 6455 §7.1.2), unless one is under way. */
  startClose(code: number, reason: string): void {
    if (this.phase !== "Open" || !this.protocol.sendClose(code, reason)) return
    this.outbox.schedule()
    this.pausedForInbox = false
    this.updateReading()
    // §7.1.1: the peer has closeTimeoutMs to answer.
    this.closeTimer = this.server.deadlines.add(this.server.options.closeTimeoutMs, () => this.settle("close-timeout"))
  }

  // The open phase ends: the first outcome wins.
  private settle(outcome: Outcome): void {
    if (this.outcome !== undefined) return
    this.outcome = outcome
    this.phase = "Discarding"
    if (outcome !== "done") this.protocol.abort(outcome === "heartbeat" ? "heartbeat timeout" : "close timeout")
    this.incoming.resume()
    // Wait for the handler with our close held, or at the peer's EOF with a compressed message not
    // yet inflated: its inflation may still fail the connection, and the 1007 must go out (§7.1.7).
    const held = outcome === "done" && (this.protocol.closeHeld || (this.eof && this.inbox.holdsCompressed))
    this.awaitingCatchUp = held
    // Ending the inbox may find the handler waiting: it has caught up, and the close goes at once.
    this.inbox.end()
    if (!held) return this.afterReading()
    if (!this.awaitingCatchUp) return // released (and the sequence continued) during end()
    if (this.caughtUp) return this.releaseClose()
    // The handler has a moment to answer what came before the close; then our close goes anyway.
    this.catchUpTimer = this.server.deadlines.add(
      Math.min(this.server.options.closeTimeoutMs, 1000),
      () => this.releaseClose()
    )
  }

  private releaseClose(): void {
    if (!this.awaitingCatchUp) return
    this.awaitingCatchUp = false
    this.catchUpTimer.cancel()
    this.protocol.releaseClose()
    this.afterReading()
  }

  private afterReading(): void {
    const failure = this.protocol.failure
    if (failure !== undefined) {
      this.server.hooks.onProtocolError?.(this, failure)
      this.server.log("Info", `protocol error #${this.connection.id}: ${failure.message}`)
    }
    if (this.outcome !== "done") return this.finish()
    // Flush what is queued (our close frame included), then half-close TCP (FIN), then let the
    // peer go: reading on until its EOF.
    this.outbox.whenFlushed(this.server.deadlines, this.server.options.closeTimeoutMs, (flushed) => {
      if (!flushed) return this.finish()
      this.outbox.close()
      this.incoming.end()
      this.awaitEof(() => this.finish())
    })
  }

  private finish(): void {
    if (this.phase === "Closed") return
    this.phase = "Closed"
    this.closeTimer.cancel()
    this.catchUpTimer.cancel()
    this.liveness?.stop()
    this.outbox.close()
    this.inbox.clear()
    const info = this.protocol.closeInfo()
    this.closeResult = info
    const waiters = this.closedWaiters
    this.closedWaiters = undefined
    if (waiters !== undefined) for (let i = 0; i < waiters.length; i++) waiters[i]!(info)
    this.server.hooks.onClose?.(this, info)
    // The handler outlived its connection: stop it (its fiber is the connection's).
    const fiber = this.handlerFiber
    this.handlerFiber = undefined
    if (fiber !== undefined) fiber.interruptUnsafe()
  }

  /** The connection's fiber was interrupted from outside (server stop): release at once. */
  dispose(): void {
    if (this.phase === "Closed") return
    this.handlerFiber = undefined
    if (this.protocol === undefined) {
      this.phase = "Closed" // never opened: nothing to report
      return
    }
    if (this.outcome === undefined) {
      this.outcome = "close-timeout"
      this.protocol.abort("server stopped")
    }
    this.finish()
  }

  /** Completes with how the connection ended. */
  awaitClosed(): Effect.Effect<CloseInfo> {
    return Effect.callback<CloseInfo>((resume) => {
      if (this.closeResult !== undefined) return resume(Effect.succeed(this.closeResult))
      const wake = (info: CloseInfo) => resume(Effect.succeed(info))
      if (this.closedWaiters === undefined) this.closedWaiters = [wake]
      else this.closedWaiters.push(wake)
    })
  }

  // ---------------------------------------------------------------- ConnectionHandle

  get info(): Connection {
    return this.connection
  }

  close(code: number, reason: string): Effect.Effect<void> {
    return Effect.sync(() => this.startClose(code, reason))
  }

  get closed(): Effect.Effect<CloseInfo> {
    return this.awaitClosed()
  }

  // ---------------------------------------------------------------- sending (Sending.Sender, for LiveConnection)

  get connectionId(): number {
    return this.connection.id
  }

  get backpressure(): "suspend" | "drop" | "close" {
    return this.server.options.backpressure
  }

  get hooks(): Hooks {
    return this.server.hooks
  }

  /** Data may be queued until the connection is closed (answers before a held close included). */
  get canQueue(): boolean {
    return this.phase !== "Closed"
  }

  sendEncodedFrame(frame: Uint8Array): Effect.Effect<void, Sending.SendError> {
    return Effect.suspend(() => Sending.admit(this, 1, () => this.protocol.sendFrame(frame)))
  }

  offerFrame(frame: Uint8Array): boolean {
    if (this.phase === "Closed" || !this.protocol.canSend) return false
    if (this.outbox.overMark) {
      this.server.hooks.onBackpressure?.("drop")
      return false
    }
    this.protocol.sendFrame(frame)
    this.outbox.scheduleLate() // a broadcast: one write per subscriber per loop iteration
    this.server.hooks.onMessagesOut?.(1)
    return true
  }

  get bufferedAmount(): number {
    return this.outbox.bufferedAmount
  }
}

/**
 * The `Connection` a handler gets. Methods live on the prototype (no closure
 * per connection); the ones users pass around detached (`Stream.runForEach(
 * conn.send)`) are bound on first access.
 */
class LiveConnection extends Sending.ConnectionBase implements Connection {
  readonly id: number
  readonly path: string
  readonly protocol: string | undefined
  readonly extensions: string | undefined
  readonly params: Readonly<Record<string, string>>
  readonly attributes: Readonly<Record<string, unknown>>
  protected override readonly session: Session
  private readonly peer: Peer
  // The request head as one string while nobody asks for it: the parsed head's strings and
  // arrays cost an idle connection more than a kilobyte.
  private head: Handshake.HttpRequest | string

  constructor(session: Session, request: Handshake.HttpRequest, peer: Peer, accept: Accept<unknown>) {
    super(session)
    this.id = nextConnectionId++
    this.session = session
    this.peer = peer
    const head = Handshake.requestHeadText(request, session.rawHead)
    session.rawHead = undefined
    this.head = head
    // A view of the head string (it starts after "METHOD "): the parsed path would keep the
    // whole decoded request chunk alive.
    this.path = head.slice(request.method.length + 1, request.method.length + 1 + request.path.length)
    this.protocol = accept.protocol
    this.extensions = accept.extensions
    this.params = accept.params ?? emptyParams
    this.attributes = accept.attributes ?? emptyParams
  }

  get request(): Handshake.HttpRequest {
    if (typeof this.head === "string") {
      const parsed = Handshake.parseRequestHead(this.head)
      // It parsed once already: it parses again.
      if (parsed instanceof Handshake.HandshakeError) throw parsed
      this.head = parsed
    }
    return this.head
  }

  get query(): URLSearchParams {
    return new URLSearchParams(this.request.query)
  }

  get remoteAddress(): string | undefined {
    return this.peer.remoteAddress
  }

  header(name: string): string | undefined {
    return Handshake.header(this.request, name)
  }

  sendFrame(frame: Uint8Array): Effect.Effect<void, Sending.SendError> {
    return this.session.sendEncodedFrame(frame)
  }

  offerFrame(frame: Uint8Array): boolean {
    return this.session.offerFrame(frame)
  }

}

// Bound on first access, so `conn.send` passed detached keeps its `this`.
bindOnFirstAccess(LiveConnection.prototype, ["send", "sendAll", "sendFrame", "offerFrame", "ping", "close", "bufferedAmount", "header"])
