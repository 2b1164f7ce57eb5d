/**
 * The client session: drives one client socket from the opening handshake to
 * its end, the client-side twin of `Session`. One phase value, one `onData`
 * dispatch:
 *
 *   Head        reading the server's HTTP response (Handshake)
 *   Open        frames go through the `Protocol` (client role: every frame we
 *               send is masked, RFC 6455 §5.3); messages to the `Inbox`,
 *               frames out through the `Outbox`; `Liveness` pings the server
 *   Discarding  the server's close frame (or a bad frame) was read: bytes are
 *               dropped until the server closes TCP
 *   Closed      nothing more happens
 *
 * The closing sequence (RFC 6455 §7.1.1): whoever starts, once our close frame
 * is out, the *server* closes the TCP connection first; the client waits for
 * its EOF and drops the socket itself only when `closeTimeoutMs` passes.
 *
 * Unlike the server's session there is no handler fiber: the messages wait in
 * the bounded `Inbox` for whoever pulls `messages` (the socket is paused while
 * it is full), and they stay readable after the connection closed.
 */
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Handshake from "../domain/Handshake.ts"
import { type CloseInfo, Protocol } from "../domain/Protocol.ts"
import type { ProtocolError } from "../domain/ProtocolError.ts"
import type { Compressor } from "./Compression.ts"
import type { Hooks } from "./App.ts"
import { bindOnFirstAccess, type Connection } from "./Connection.ts"
import * as Deadlines from "./Deadlines.ts"
import { Inbox, type InboxOwner, pendingOf } from "./Inbox.ts"
import { Liveness, type LivenessOwner } from "./Liveness.ts"
import { enterTurn, leaveTurn, Outbox, type OutboxOwner } from "./Outbox.ts"
import * as Sending from "./Sending.ts"
import type { ServerOptions } from "./Options.ts"
import type { Incoming } from "./Transport.ts"

/** The limits and timeouts a session runs with (the server's, without the idle timeout; validated by `Client`). */
export type SessionOptions = Omit<ServerOptions, "idleTimeoutMs" | "handshakeTimeoutMs">

/** The response head, or why there is none. */
export type Head =
  | { readonly _tag: "Response"; readonly response: Handshake.HttpResponseHead }
  | { readonly _tag: "Invalid"; readonly error: Handshake.HandshakeError }
  | { readonly _tag: "Gone" }

export type Phase = "Head" | "Open" | "Discarding" | "Closed"

const NO_HOOKS: Hooks = {}
let nextClientId = 1

export class ClientSession implements OutboxOwner, InboxOwner, LivenessOwner, Sending.Sender {
  phase: Phase = "Head"
  readonly incoming: Incoming
  readonly options: SessionOptions
  readonly id: number = nextClientId++
  private readonly deadlines: Deadlines.Deadlines
  private readonly clock: Clock.Clock
  private readonly maskKey: () => Uint8Array

  // ---- Head
  private parser: Handshake.ResponseParser | undefined
  private head: Head | undefined = undefined
  private headWaiter: ((head: Head) => void) | undefined = undefined
  private early: Uint8Array | undefined = undefined
  private eofInHead = false

  // ---- Open
  protocol!: Protocol
  outbox!: Outbox
  inbox!: Inbox
  private liveness: Liveness | undefined = undefined
  compressor: Compressor | undefined = undefined
  threshold = 0
  private closeTimer: Deadlines.Deadline = Deadlines.none
  private pausedForInbox = false
  private closeResult: CloseInfo | undefined = undefined
  private closedWaiters: Array<(info: CloseInfo) => void> | undefined = undefined

  constructor(
    incoming: Incoming,
    options: SessionOptions,
    deadlines: Deadlines.Deadlines,
    clock: Clock.Clock,
    maskKey: () => Uint8Array
  ) {
    this.incoming = incoming
    this.options = options
    this.deadlines = deadlines
    this.clock = clock
    this.maskKey = maskKey
    this.parser = Handshake.initialResponseParser({ maxHeaderBytes: options.maxHeaderBytes })
  }

  /** Start reading. A throw in a callback (a bug) costs this connection only. */
  listen(): void {
    this.incoming.listen(
      (chunk, borrowed) => {
        enterTurn()
        try {
          this.onData(chunk, borrowed === true)
        } catch {
          this.finish()
        } finally {
          leaveTurn()
        }
      },
      () => this.onEnd()
    )
  }

  /** Bytes from the server; `borrowed`: valid during this call only (see `Incoming.listen`). */
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
    switch (this.phase) {
      case "Head":
        // The handshake fails (or the first frames are read from `early`); `finish` drops the socket.
        if (this.head === undefined) this.headComplete({ _tag: "Gone" })
        else this.eofInHead = true
        return
      case "Open":
      case "Discarding":
        // The server closed TCP: after the close frames that is the clean end (§7.1.1);
        // before them, the connection dropped (1006, §7.1.5).
        this.protocol.receiveEof()
        return this.finish()
      case "Closed":
        return
    }
  }

  // ---------------------------------------------------------------- Head

  private receiveHead(chunk: Uint8Array): void {
    if (this.head !== undefined) {
      // Frames right behind the 101 (the server may speak first); at most one read's worth,
      // the socket is paused until `open`.
      this.early = this.early === undefined ? chunk : concat(this.early, chunk)
      this.incoming.pause()
      return
    }
    const result = Handshake.stepResponse(this.parser!, chunk)
    switch (result._tag) {
      case "NeedMore":
        this.parser = result.parser
        return
      case "Invalid":
        return this.headComplete({ _tag: "Invalid", error: result.error })
      default:
        if (result.rest.length > 0) this.early = result.rest
        this.incoming.pause()
        return this.headComplete({ _tag: "Response", response: result.response })
    }
  }

  private headComplete(head: Head): void {
    this.parser = undefined
    this.head = head
    const waiter = this.headWaiter
    this.headWaiter = undefined
    if (waiter !== undefined) waiter(head)
  }

  /** The response head (the caller bounds the wait). */
  readHead(): Effect.Effect<Head> {
    return Effect.callback<Head>((resume) => {
      if (this.head !== undefined) return resume(Effect.succeed(this.head))
      this.headWaiter = (head) => resume(Effect.succeed(head))
      return Effect.sync(() => {
        this.headWaiter = undefined
      })
    })
  }

  // ---------------------------------------------------------------- Open

  /** The 101 was valid: set up the protocol and feed it the bytes that came with the response. */
  open(compression: { readonly compressor: Compressor; readonly threshold: number } | undefined): void {
    const options = this.options
    this.compressor = compression?.compressor
    this.threshold = compression?.threshold ?? 0
    this.protocol = new Protocol({
      role: "client",
      maxMessageSize: options.maxMessageSize,
      compression: compression !== undefined,
      fragmentSize: options.fragmentSize,
      maskKey: this.maskKey
    })
    this.outbox = new Outbox(this.incoming, this.protocol, options.outboundHighWaterMark, NO_HOOKS, this)
    this.inbox = new Inbox({
      capacity: options.inboundQueueSize,
      highWaterMark: options.inboundHighWaterMark,
      maxMessageSize: options.maxMessageSize
    }, this.compressor, this)
    this.phase = "Open"
    if (options.heartbeatIntervalMs > 0) {
      this.liveness = new Liveness(this, this.deadlines, this.clock, {
        heartbeatIntervalMs: options.heartbeatIntervalMs,
        heartbeatTimeoutMs: options.heartbeatTimeoutMs,
        idleTimeoutMs: 0
      })
      this.liveness.start()
    }
    const early = this.early
    this.early = undefined
    if (early !== undefined) this.receive(early)
    // The server sent its frames and closed TCP before we were open: the EOF is handled now.
    if (this.eofInHead) return this.onEnd()
    this.updateReading()
  }

  private receive(chunk: Uint8Array, borrowed: boolean = false): void {
    const protocol = this.protocol
    const batch = pendingOf(protocol.receiveData(chunk, borrowed))
    if (batch !== undefined) this.inbox.push(batch)
    this.afterProtocol()
  }

  // After the protocol took bytes or failed: send what it queued (pongs, the close echo, a failure's
  // close) and, once a close frame was read or we failed, stop delivering and wait for the server's EOF.
  private afterProtocol(): void {
    const protocol = this.protocol
    if (protocol.bufferedBytes > 0) this.outbox.schedule()
    if (protocol.closeSent !== undefined) this.startCloseTimer()
    if (this.phase === "Open" && (protocol.failure !== undefined || protocol.closeReceived !== undefined)) {
      this.phase = "Discarding"
      this.inbox.end()
      this.pausedForInbox = false
      this.incoming.resume()
    }
  }

  private updateReading(): void {
    if (this.phase !== "Open") return
    if (this.pausedForInbox || this.outbox.isCongested) this.incoming.pause()
    else this.incoming.resume()
  }

  onCongestion(_congested: boolean): void {
    this.updateReading()
  }

  onWriteDefect(_defect: unknown): void {
    this.finish()
  }

  onInboxFull(): void {
    // Once we are closing, the server's answer must be read whatever the reader does.
    if (this.protocol.state !== "Open") return
    this.pausedForInbox = true
    this.updateReading()
  }

  onInboxRoom(): void {
    if (!this.pausedForInbox) return
    this.pausedForInbox = false
    this.updateReading()
  }

  onCaughtUp(): void {}

  onInflateError(error: ProtocolError): void {
    if (this.phase === "Closed") return
    this.protocol.fail(error)
    this.afterProtocol()
  }

  sendHeartbeat(): void {
    if (this.protocol.sendPing()) this.outbox.schedule()
  }

  onHeartbeatTimeout(): void {
    // A server that cannot answer a ping will not answer a close frame either: drop TCP (1006).
    this.protocol.abort("heartbeat timeout")
    this.finish()
  }

  onIdleTimeout(): void {}

  // ---------------------------------------------------------------- closing

  /** Start the closing handshake (RFC 6455 §7.1.2), unless one is under way. */
  startClose(code: number, reason: string): void {
    if (this.phase !== "Open" || !this.protocol.sendClose(code, reason)) return
    this.pausedForInbox = false
    this.updateReading()
    this.afterProtocol()
  }

  // §7.1.1: once our close frame is queued, the server has closeTimeoutMs to answer it and close TCP.
  private startCloseTimer(): void {
    if (this.closeTimer !== Deadlines.none || this.phase === "Closed") return
    this.closeTimer = this.deadlines.add(this.options.closeTimeoutMs, () => {
      this.protocol.abort("close timeout")
      this.finish()
    })
  }

  /** The connection is over: drop the socket, wake whoever waits. Idempotent. */
  finish(): void {
    if (this.phase === "Closed") return
    const opened = this.protocol !== undefined
    this.phase = "Closed"
    this.incoming.destroy()
    if (!opened) return
    this.closeTimer.cancel()
    this.liveness?.stop()
    this.outbox.close()
    // Messages already received stay readable: a client reads at its own pace.
    this.inbox.end()
    const info = this.protocol.closeInfo()
    this.closeResult = info
    const waiters = this.closedWaiters
    this.closedWaiters = undefined
    if (waiters !== undefined) for (let i = 0; i < waiters.length; i++) waiters[i]!(info)
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

  // ---------------------------------------------------------------- sending (Sending.Sender)

  get connectionId(): number {
    return this.id
  }

  get backpressure(): "suspend" | "drop" | "close" {
    return this.options.backpressure
  }

  get hooks(): Hooks {
    return NO_HOOKS
  }

  get canQueue(): boolean {
    return this.phase === "Open"
  }

  get bufferedAmount(): number {
    return this.phase === "Head" ? 0 : this.outbox.bufferedAmount
  }
}

const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}

/**
 * The `Connection` a client gets: the same shape a server handler gets, so
 * code written against `Connection` (and `Typed.handler`) runs on either end.
 * `request` is the upgrade request we sent; `response` the server's 101.
 */
export class ClientConnection extends Sending.ConnectionBase implements Connection {
  readonly id: number
  readonly request: Handshake.HttpRequest
  readonly response: Handshake.HttpResponseHead
  readonly path: string
  readonly protocol: string | undefined
  readonly extensions: string | undefined
  readonly params: Readonly<Record<string, string>> = {}
  readonly attributes: Readonly<Record<string, unknown>> = {}
  readonly remoteAddress: string | undefined
  protected override readonly session: ClientSession

  constructor(
    session: ClientSession,
    request: Handshake.HttpRequest,
    response: Handshake.HttpResponseHead,
    protocol: string | undefined,
    remoteAddress: string | undefined
  ) {
    super(session)
    this.id = session.id
    this.session = session
    this.request = request
    this.response = response
    this.path = request.path
    this.protocol = protocol
    this.extensions = Handshake.header(response, "sec-websocket-extensions")
    this.remoteAddress = remoteAddress
  }

  get query(): URLSearchParams {
    return new URLSearchParams(this.request.query)
  }

  /** A header of the upgrade request we sent (as on the server); see `responseHeader` for the 101's. */
  header(name: string): string | undefined {
    return Handshake.header(this.request, name)
  }

  /** A header of the server's 101 response. */
  responseHeader(name: string): string | undefined {
    return Handshake.header(this.response, name)
  }

  /**
   * Not for clients: every client frame is masked with a fresh key (RFC 6455
   * §5.3), so a frame encoded once cannot be sent. Dies with a TypeError.
   */
  sendFrame(_frame: Uint8Array): Effect.Effect<void, Sending.SendError> {
    return Effect.die(new TypeError("a client cannot send pre-encoded frames (RFC 6455 §5.3: each frame is masked)"))
  }

  /** Always false on a client (see `sendFrame`). */
  offerFrame(_frame: Uint8Array): boolean {
    return false
  }

}

// Bound on first access, so `conn.send` passed detached keeps its `this`.
bindOnFirstAccess(ClientConnection.prototype, [
  "send",
  "sendAll",
  "sendFrame",
  "offerFrame",
  "ping",
  "close",
  "bufferedAmount",
  "header",
  "responseHeader"
])
