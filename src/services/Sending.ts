/**
 * The send path of a connection, shared by the server's `Session` and the
 * client's `ClientSession`: messages are encoded by the `Protocol`, queued in
 * the `Outbox` under the backpressure policy, compressed first when
 * permessage-deflate was agreed (RFC 7692 §6.1: in order, RSV1 on the first
 * frame only).
 *
 * @example
 * // inside a driver that implements `Sender`:
 * send(message) { return Sending.sendMessage(this, Message.toPayload(message)) }
 */
import type * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as CloseCode from "../domain/CloseCode.ts"
import type { CloseInfo, Protocol } from "../domain/Protocol.ts"
import type { Hooks } from "./App.ts"
import type { Compressor } from "./Compression.ts"
import { ConnectionClosedError, MessageDroppedError } from "./Connection.ts"
import type { Batch, Inbox } from "./Inbox.ts"
import * as Message from "./Message.ts"
import type { Outbox } from "./Outbox.ts"

/** What the send path needs from a connection driver. */
export interface Sender {
  readonly connectionId: number
  readonly protocol: Protocol
  readonly outbox: Outbox
  /** Set when permessage-deflate was agreed: messages of `threshold` bytes or more are compressed. */
  readonly compressor: Compressor | undefined
  readonly threshold: number
  readonly backpressure: "suspend" | "drop" | "close"
  readonly hooks: Hooks
  /** The driver's phase still lets frames be queued (the protocol has the last word). */
  readonly canQueue: boolean
  readonly startClose: (code: number, reason: string) => void
}

export type SendError = ConnectionClosedError | MessageDroppedError

/** Built on demand: an error captures a stack trace, too costly to keep per connection. */
export const closedError = (s: Sender): ConnectionClosedError => new ConnectionClosedError({ connectionId: s.connectionId })

/**
 * Queue frames (`queue` puts them on the protocol) under the backpressure
 * policy, judged on what is already buffered (one large message to a fast
 * peer is fine): "drop" refuses, "close" closes with 1008, "suspend" queues
 * then waits until the buffer is back under the mark.
 */
export const admit = (s: Sender, count: number, queue: () => void): Effect.Effect<void, SendError> => {
  const refused = refusal(s)
  if (refused !== undefined) return refused
  queue()
  return queued(s, count)
}

// `admit` in two halves around the queueing, so the hot senders below queue inline instead of
// allocating a closure per send. The policy check, before anything is queued:
const refusal = (s: Sender): Effect.Effect<never, SendError> | undefined => {
  if (!s.canQueue || !s.protocol.canSend) return Effect.fail(closedError(s))
  const outbox = s.outbox
  if (outbox.overMark) {
    if (s.backpressure === "drop") {
      s.hooks.onBackpressure?.("drop")
      return Effect.fail(new MessageDroppedError({ connectionId: s.connectionId, bufferedBytes: outbox.bufferedAmount }))
    }
    if (s.backpressure === "close") {
      s.hooks.onBackpressure?.("close")
      s.startClose(CloseCode.PolicyViolation, "send buffer full")
      return Effect.fail(closedError(s))
    }
  }
  return undefined
}

// ...and after: flush this turn, count, and wait under "suspend" if now over the mark.
const queued = (s: Sender, count: number): Effect.Effect<void> => {
  const outbox = s.outbox
  outbox.schedule()
  s.hooks.onMessagesOut?.(count)
  return outbox.overMark && s.backpressure === "suspend" ? outbox.awaitBelowMark() : Effect.void
}

/** One data message (compressed first when agreed and large enough). */
export const sendMessage = (s: Sender, message: Message.Message): Effect.Effect<void, SendError> => {
  const binary = message._tag === "Binary"
  const compressor = s.compressor
  if (compressor !== undefined && message.data.length >= s.threshold) {
    return Effect.flatMap(compressor.compress(message.data), (payload) =>
      Effect.suspend(() => admit(s, 1, () => s.protocol.sendMessage(binary, payload, true))))
  }
  return Effect.suspend(() => {
    const refused = refusal(s)
    if (refused !== undefined) return refused
    s.protocol.sendMessage(binary, message.data)
    return queued(s, 1)
  })
}

/** Several messages in one write (one by one through the compressor when it is on). */
export const sendMessages = (s: Sender, messages: ReadonlyArray<Message.Outgoing>): Effect.Effect<void, SendError> => {
  if (s.compressor !== undefined) {
    return Effect.forEach(messages, (m) => sendMessage(s, Message.toPayload(m)), { discard: true })
  }
  return Effect.suspend(() => {
    const refused = refusal(s)
    if (refused !== undefined) return refused
    for (let i = 0; i < messages.length; i++) {
      const m = Message.toPayload(messages[i]!)
      s.protocol.sendMessage(m._tag === "Binary", m.data)
    }
    return queued(s, messages.length)
  })
}

/** A ping (payload ≤ 125 bytes), while the connection is open. */
export const ping = (s: Sender, payload: Uint8Array | undefined): Effect.Effect<void, ConnectionClosedError> =>
  Effect.suspend(() => {
    if (!s.canQueue || s.protocol.state !== "Open") return Effect.fail(closedError(s))
    s.protocol.sendPing(payload)
    s.outbox.schedule()
    return Effect.void
  })

/** What a connection object needs from its driver besides the send path. */
export interface Driver extends Sender {
  readonly inbox: Inbox
  readonly bufferedAmount: number
  readonly awaitClosed: () => Effect.Effect<CloseInfo>
}

/**
 * The part of a `Connection` that is the same on both ends: the `messages`
 * stream over the driver's inbox, sending, ping, close. The server's and the
 * client's connection classes extend it with what they know of the upgrade.
 * Methods live on the prototype; see `Connection.bindOnFirstAccess`.
 */
export class ConnectionBase {
  protected readonly session: Driver

  constructor(session: Driver) {
    this.session = session
  }

  /** Built on first use: no Stream machinery for a connection that never reads. */
  get messages(): Stream.Stream<Message.Message> {
    const messages = Stream.fromPull(Effect.succeed(this.session.inbox.pull as Effect.Effect<Batch, Cause.Done>))
    Object.defineProperty(this, "messages", { value: messages })
    return messages
  }

  send(message: Message.Outgoing): Effect.Effect<void, SendError> {
    return sendMessage(this.session, Message.toPayload(message))
  }

  sendAll(messages: ReadonlyArray<Message.Outgoing>): Effect.Effect<void, SendError> {
    return sendMessages(this.session, messages)
  }

  ping(payload?: Uint8Array): Effect.Effect<void, ConnectionClosedError> {
    return ping(this.session, payload)
  }

  close(code: number = CloseCode.Normal, reason = ""): Effect.Effect<void> {
    return Effect.sync(() => this.session.startClose(code, reason))
  }

  get closed(): Effect.Effect<CloseInfo> {
    return this.session.awaitClosed()
  }

  bufferedAmount(): number {
    return this.session.bufferedAmount
  }
}
