/**
 * One WebSocket connection after the opening handshake, for either role, as a
 * sans-I/O state machine (in the manner of python websockets' `Protocol`):
 * bytes in (`receiveData`, `receiveEof`), events out, frames to send out
 * (`send*`, then `dataToSend`). It answers pings and echoes the peer's close
 * by itself, fails the connection with the right close code on a bad frame,
 * and says how the connection ended (`closeInfo`). No sockets, no clocks, no
 * Effect runtime: the I/O side moves the bytes and keeps the time.
 *
 * States (RFC 6455 §7): `Open` → `Closing` (a close frame was sent or
 * received; `closeInitiator` says who started) → `Closed` (both close frames
 * exchanged, the TCP connection is gone, or the I/O side gave up). After a
 * failure (`fail`) every further byte is discarded. A failure after the
 * peer's EOF still queues our close frame: our side of TCP may be open.
 *
 * The object mutates itself: it is owned by one connection.
 *
 * @example
 * const protocol = new Protocol({ role: "server" })
 * for (const event of protocol.receiveData(bytesFromSocket)) {
 *   if (event._tag === "Message") protocol.sendBinary(event.data) // echo
 * }
 * socket.write(protocol.dataToSend()) // the echo, and any pong or close answer
 * if (protocol.state === "Closed") socket.end()
 */
import * as CloseCode from "./CloseCode.ts"
import * as FrameDecoder from "./FrameDecoder.ts"
import * as FrameEncoder from "./FrameEncoder.ts"
import { Opcode } from "./Opcode.ts"
import type { ProtocolError } from "./ProtocolError.ts"

export type Role = "server" | "client"
export type State = "Open" | "Closing" | "Closed"

/** What `receiveData` yields: data messages and the control frames seen (already answered). */
export type Event = FrameDecoder.DecoderEvent

/** How a connection ended. `code` 1006 means no close frame came back (RFC 6455 §7.1.5). */
export interface CloseInfo {
  readonly code: number
  readonly reason: string
  /** Both close frames were exchanged (RFC 6455 §7.1.1). */
  readonly wasClean: boolean
  /** Who started the close: this end, the peer, or nobody (the TCP connection dropped). */
  readonly initiatedBy: "local" | "peer" | "transport"
}

export interface ProtocolOptions {
  readonly role: Role
  /** Largest message accepted, in bytes; over it: close 1009. */
  readonly maxMessageSize?: number | undefined
  /** permessage-deflate was negotiated: RSV1 marks compressed messages (RFC 7692 §6). */
  readonly compression?: boolean | undefined
  /** Split outgoing messages larger than this into fragments (0 or undefined: never). */
  readonly fragmentSize?: number | undefined
  /**
   * A fresh 4-byte masking key per frame: required for the client role
   * (RFC 6455 §5.3: unpredictable, so it comes from the I/O side's randomness).
   */
  readonly maskKey?: (() => Uint8Array) | undefined
  /**
   * Hold our close frame (the echo of the peer's close, or a failure's close)
   * until `releaseClose()`, so the application can first answer the messages
   * that arrived before it. Data may still be sent while it is held. Default
   * false: the close goes out at once, as RFC 6455 §5.5.1 describes.
   */
  readonly holdClose?: boolean | undefined
  /**
   * Answer pings by itself (RFC 6455 §5.5.2). Default true; false leaves the
   * pong to the caller (a test client playing a peer that does not answer).
   */
  readonly autoPong?: boolean | undefined
}

// Small outgoing frames are written straight into shared, append-only arenas (masked on the way
// in for a client): a connection's frames of one turn end up side by side there and go out as
// one view, where each frame used to be a buffer of its own that the outbox then copied together.
// A region is never written twice (the cursor only moves on; a full arena is replaced and
// lives as long as views of it do), so a view handed out stays valid. 8 KiB, as Buffer's pool:
// a queued frame keeps no more memory alive than a pool slice did.
const ARENA_SIZE = 8 * 1024
/** Payloads up to this size are staged; larger ones keep their own buffer (written by reference). */
const STAGE_MAX = 4096
const newArena = (): Uint8Array =>
  typeof Buffer === "function" ? Buffer.allocUnsafeSlow(ARENA_SIZE) : new Uint8Array(ARENA_SIZE)
let arena: Uint8Array | undefined
let arenaCursor = 0
// On Node a Buffer view: the socket takes it as is (a plain Uint8Array would be wrapped again).
const view = (buffer: Uint8Array, start: number, end: number): Uint8Array =>
  typeof Buffer === "function"
    ? Buffer.from(buffer.buffer, buffer.byteOffset + start, end - start)
    : buffer.subarray(start, end)

const NO_EVENTS: ReadonlyArray<Event> = Object.freeze([])
const NO_DATA: Array<Uint8Array> = []
// `output` while nothing is queued: never pushed to (see `queue()`), so an idle connection holds no array.
const NO_OUTPUT: Array<Uint8Array> = []

export class Protocol {
  readonly role: Role
  state: State = "Open"
  /** Who sent the first close frame; undefined while open. */
  closeInitiator: "local" | "peer" | undefined = undefined
  /** The close frame we sent (or hold), if any. */
  closeSent: { readonly code: number | undefined; readonly reason: string } | undefined = undefined
  /** The peer's close frame, if one arrived. */
  closeReceived: { readonly code: number | undefined; readonly reason: string } | undefined = undefined
  /** Why we failed the connection (RFC 6455 §7.1.7), if we did. */
  failure: ProtocolError | undefined = undefined
  /** Total bytes received: the I/O side compares it over time to see whether the peer is alive. */
  bytesReceived = 0
  /** Bytes in `dataToSend()` not yet taken. */
  bufferedBytes = 0

  private readonly decoder: FrameDecoder.Decoder
  private readonly fragmentSize: number | undefined
  private readonly maskKey: (() => Uint8Array) | undefined
  private readonly holdClose: boolean
  private readonly autoPong: boolean
  private output: Array<Uint8Array> = NO_OUTPUT
  /** The arena holding this connection's staged frames not yet in `output`, and where they lie. */
  private staged: Uint8Array | undefined = undefined
  private stagedStart = 0
  private stagedEnd = 0
  private heldClose: Uint8Array | undefined = undefined
  private discarding = false
  private eof = false
  private abortReason: string | undefined = undefined

  constructor(options: ProtocolOptions) {
    this.role = options.role
    this.decoder = FrameDecoder.make({
      role: options.role,
      maxMessageSize: options.maxMessageSize,
      allowRsv1: options.compression === true
    })
    this.fragmentSize = options.fragmentSize !== undefined && options.fragmentSize > 0 ? options.fragmentSize : undefined
    if (options.role === "client" && options.maskKey === undefined) {
      throw new TypeError("Protocol: the client role needs a maskKey source (RFC 6455 §5.3)")
    }
    this.maskKey = options.role === "client" ? options.maskKey : undefined
    this.holdClose = options.holdClose === true
    this.autoPong = options.autoPong !== false
  }

  // ---------------------------------------------------------------- receiving

  /**
   * Feed bytes from the peer; returns the events they complete, in order. The
   * chunk now belongs to the protocol (unmasked in place; messages may be
   * views of it). Pings are answered and the peer's close is echoed here;
   * data after our close frame is dropped (RFC 6455 §5.5.1). A bad frame
   * fails the connection (`failure` is set, our close frame queued); events
   * decoded before it are still returned. `borrowed`: the chunk stays the
   * caller's, valid during this call only (see `FrameDecoder.feedBorrowed`).
   */
  receiveData(chunk: Uint8Array, borrowed: boolean = false): ReadonlyArray<Event> {
    if (this.discarding || this.state === "Closed") return NO_EVENTS
    this.bytesReceived += chunk.length
    const decoded = borrowed ? this.decoder.feedBorrowed(chunk) : this.decoder.feed(chunk)
    // After our close frame, data is dropped: it can no longer be answered.
    const events = this.closeSent === undefined ? decoded.events : decoded.events.filter((e) => e._tag !== "Message")
    for (let i = 0; i < events.length; i++) {
      const event = events[i]!
      if (event._tag === "Ping") {
        // RFC 6455 §5.5.3: a pong with the same payload, unless our close is already out.
        if (this.autoPong && this.closeSent === undefined) this.push(FrameEncoder.encodePong(event.data, this.maskKey?.()))
      } else if (event._tag === "Close") {
        this.onCloseFrame(event.code, event.reason)
      }
      // Messages go to the application; unsolicited pongs are allowed (§5.5.3).
    }
    const error = decoded.error
    if (error !== undefined) this.fail(error)
    else if (this.closeReceived !== undefined) this.discarding = true // §5.5.1: nothing after a close frame
    return events
  }

  /** The peer closed its side of the TCP connection (or it dropped). */
  receiveEof(): void {
    this.eof = true
    this.discarding = true
    this.state = "Closed"
  }

  private onCloseFrame(code: number | undefined, reason: string): void {
    this.closeReceived = { code, reason }
    if (this.closeSent === undefined) {
      // §5.5.1: echo the status code (not the reason).
      this.state = "Closing"
      this.closeInitiator = "peer"
      this.queueClose(code, code === undefined ? undefined : "", this.holdClose)
      if (!this.holdClose) this.state = "Closed"
    } else if (this.heldClose === undefined) {
      // Our close was already out: the closing handshake is complete (§7.1.1 / §7.1.2).
      this.state = "Closed"
    }
  }

  // ---------------------------------------------------------------- sending

  /** May data frames still be sent? (Open, or closing with our close frame held.) */
  get canSend(): boolean {
    return this.state !== "Closed" && (this.closeSent === undefined || this.heldClose !== undefined)
  }

  /**
   * Queue a data message. `compressed`: the payload is already deflated (RFC
   * 7692 §6.1: RSV1 on the first frame). False, and nothing queued, once data
   * can no longer be sent.
   */
  sendMessage(binary: boolean, payload: Uint8Array, compressed = false): boolean {
    if (!this.canSend) return false
    const length = payload.length
    if (length <= STAGE_MAX && (this.fragmentSize === undefined || length <= this.fragmentSize)) {
      this.stage(binary ? Opcode.Binary : Opcode.Text, compressed, payload)
      return true
    }
    const output = this.queue()
    const before = output.length
    FrameEncoder.encodeMessage({
      binary,
      payload,
      compressed,
      fragmentSize: this.fragmentSize,
      maskSource: this.maskKey
    }, output)
    for (let i = before; i < output.length; i++) this.bufferedBytes += output[i]!.length
    return true
  }

  /** Queue a text message from UTF-8 bytes. */
  sendText(utf8: Uint8Array, compressed = false): boolean {
    return this.sendMessage(false, utf8, compressed)
  }

  /** Queue a binary message. */
  sendBinary(data: Uint8Array, compressed = false): boolean {
    return this.sendMessage(true, data, compressed)
  }

  /**
   * Queue a frame someone already encoded (a broadcast encodes once for every
   * subscriber). Server role only: client frames are masked per frame.
   */
  sendFrame(frame: Uint8Array): boolean {
    if (!this.canSend || this.role === "client") return false
    this.push(frame)
    return true
  }

  /** Queue a ping (payload ≤ 125 bytes). False once our close frame is out. */
  sendPing(payload?: Uint8Array): boolean {
    if (this.closeSent !== undefined || this.state === "Closed") return false
    this.push(FrameEncoder.encodePing(payload, this.maskKey?.()))
    return true
  }

  /** Queue a pong (an unsolicited one is a heartbeat, §5.5.3). */
  sendPong(payload?: Uint8Array): boolean {
    if (this.closeSent !== undefined || this.state === "Closed") return false
    this.push(FrameEncoder.encodePong(payload, this.maskKey?.()))
    return true
  }

  /**
   * Start the closing handshake (RFC 6455 §7.1.2). Only while open: once a
   * close frame was sent or received, the handshake is under way already.
   * 1005 ("no status code", which §7.4.1 forbids on the wire) sends a close
   * frame without a body, which the peer reads as 1005.
   */
  sendClose(code: number = CloseCode.Normal, reason = ""): boolean {
    if (this.state !== "Open") return false
    this.state = "Closing"
    this.closeInitiator = "local"
    if (code === CloseCode.NoStatus) this.queueClose(undefined, undefined, false)
    else this.queueClose(code, reason, false)
    return true
  }

  /**
   * Fail the connection (RFC 6455 §7.1.7): our close frame carries the
   * error's code, and all further input is discarded.
   */
  fail(error: ProtocolError): void {
    this.discarding = true
    if (this.failure !== undefined) return
    // After the peer's EOF our side can still write: the close frame still goes out (§7.1.7),
    // e.g. for a message whose inflation failed after the EOF was read.
    if (this.state === "Closed" && !this.eof) return
    if (this.closeSent !== undefined && this.heldClose === undefined) return // our close is out already
    this.failure = error
    if (this.heldClose !== undefined) {
      // A held echo becomes the failure's close.
      this.heldClose = undefined
      this.closeSent = undefined
    }
    if (this.closeInitiator === undefined) this.closeInitiator = "local"
    this.queueClose(error.closeCode, error.reason, this.holdClose)
    if (this.eof) return // still Closed: nothing more can come from the peer
    this.state = "Closing"
    if (!this.holdClose && this.closeReceived !== undefined) this.state = "Closed"
  }

  /** With `holdClose`: send the close frame now held (the application has answered what came before it). */
  releaseClose(): void {
    const frame = this.heldClose
    if (frame === undefined) return
    this.heldClose = undefined
    this.push(frame)
    if (this.closeReceived !== undefined) this.state = "Closed"
  }

  /** Is a close frame waiting for `releaseClose()`? */
  get closeHeld(): boolean {
    return this.heldClose !== undefined
  }

  /**
   * The I/O side gave up on the peer (a close or heartbeat timeout) and drops
   * the TCP connection: the connection is closed, not cleanly.
   */
  abort(reason: string): void {
    if (this.state === "Closed") return
    this.abortReason = reason
    this.discarding = true
    this.state = "Closed"
  }

  /** The frames queued since the last call, in order; the caller writes them. */
  dataToSend(): Array<Uint8Array> {
    this.seal()
    if (this.output.length === 0) return NO_DATA
    const out = this.output
    this.output = NO_OUTPUT
    this.bufferedBytes = 0
    return out
  }

  /**
   * Should the I/O side expect the TCP connection to end soon (and start its
   * close timer)? True once our close frame is out: the peer must answer it
   * (§7.1.1), and a server then closes TCP; a client waits for the server to.
   */
  get closeExpected(): boolean {
    return this.closeSent !== undefined && this.heldClose === undefined
  }

  /** How the connection ended (meaningful once `Closed`; a best guess before). */
  closeInfo(): CloseInfo {
    const failure = this.failure
    if (failure !== undefined) {
      return { code: failure.closeCode, reason: failure.reason, wasClean: false, initiatedBy: "local" }
    }
    const received = this.closeReceived
    if (received !== undefined) {
      const local = this.closeInitiator === "local" ? this.closeSent : undefined
      return {
        code: local?.code ?? received.code ?? CloseCode.NoStatus,
        reason: local?.reason ?? received.reason,
        // Clean only if our close frame went out too: an echo still held when the
        // connection ended means one close frame was exchanged, not two (§7.1.1).
        wasClean: this.closeSent !== undefined && this.heldClose === undefined,
        initiatedBy: this.closeInitiator ?? "peer"
      }
    }
    if (this.closeSent !== undefined) {
      return { code: CloseCode.Abnormal, reason: this.closeSent.reason, wasClean: false, initiatedBy: "local" }
    }
    if (this.abortReason !== undefined) {
      return { code: CloseCode.Abnormal, reason: this.abortReason, wasClean: false, initiatedBy: "local" }
    }
    return { code: CloseCode.Abnormal, reason: "", wasClean: false, initiatedBy: "transport" }
  }

  /** Has the peer's TCP connection ended? */
  get receivedEof(): boolean {
    return this.eof
  }

  // ---------------------------------------------------------------- internals

  // Everything queued goes through here: staged frames are sealed first, so order is kept.
  private queue(): Array<Uint8Array> {
    if (this.staged !== undefined) this.seal()
    return this.output === NO_OUTPUT ? (this.output = []) : this.output
  }

  // Append one frame to this connection's staged run, which grows in place while nothing else
  // was written to the arena after it; otherwise the run is sealed and a new one begins.
  private stage(opcode: number, compressed: boolean, payload: Uint8Array): void {
    const mask = this.maskKey?.()
    const need = FrameEncoder.frameLength(payload.length, mask !== undefined)
    let target = arena
    if (target === undefined || this.staged !== target || this.stagedEnd !== arenaCursor || target.length - arenaCursor < need) {
      this.seal()
      if (target === undefined || target.length - arenaCursor < need) {
        target = arena = newArena()
        arenaCursor = 0
      }
      this.staged = target
      this.stagedStart = this.stagedEnd = arenaCursor
    }
    const end = FrameEncoder.writeFrame(target, this.stagedEnd, opcode, true, compressed, payload, mask)
    this.stagedEnd = arenaCursor = end
    this.bufferedBytes += need
  }

  // Move the staged run into `output` as one view.
  private seal(): void {
    const staged = this.staged
    if (staged === undefined) return
    this.staged = undefined
    if (this.stagedEnd > this.stagedStart) {
      if (this.output === NO_OUTPUT) this.output = []
      this.output.push(view(staged, this.stagedStart, this.stagedEnd))
    }
  }

  private push(frame: Uint8Array): void {
    this.queue().push(frame)
    this.bufferedBytes += frame.length
  }

  private queueClose(code: number | undefined, reason: string | undefined, hold: boolean): void {
    this.closeSent = { code, reason: reason ?? "" }
    const frame = FrameEncoder.encodeClose(code, reason, this.maskKey?.())
    if (hold) this.heldClose = frame
    else this.push(frame)
  }
}
