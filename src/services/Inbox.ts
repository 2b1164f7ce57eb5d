/**
 * The inbound side of one connection: data messages decoded in the socket's
 * callback wait here until the handler's `messages` stream takes them.
 *
 * - Bounded by count and by bytes: past either mark the owner stops reading
 *   the socket (TCP backpressure reaches the peer), and reads again once the
 *   handler has taken a batch.
 * - Batches: a pull takes everything waiting in one step (the handler's stream
 *   gets arrays, not one Effect per message); a batch that arrives while the
 *   handler waits is handed over directly.
 * - permessage-deflate: compressed messages wait compressed. A pull inflates
 *   them one at a time, in order (RFC 7692 §7.2.2), and stops once the batch
 *   holds `highWaterMark` inflated bytes: a peer sending many small compressed
 *   messages that inflate to megabytes never makes the server hold more than
 *   the budget plus one message.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type { Event } from "../domain/Protocol.ts"
import { protocolError, type ProtocolError } from "../domain/ProtocolError.ts"
import * as Utf8 from "../domain/Utf8.ts"
import type { Compressor } from "./Compression.ts"
import * as Message from "./Message.ts"

/** A compressed message waiting for the inflater, in its place in the queue. */
export class Compressed {
  readonly binary: boolean
  readonly data: Uint8Array
  constructor(binary: boolean, data: Uint8Array) {
    this.binary = binary
    this.data = data
  }
}

export type Pending = Message.Message | Compressed

/**
 * The data messages among a read's protocol events, as the inbox holds them
 * (compressed ones still compressed); undefined when the read completed none.
 *
 * @example
 * const batch = pendingOf(protocol.receiveData(chunk))
 * if (batch !== undefined) inbox.push(batch)
 */
export const pendingOf = (events: ReadonlyArray<Event>): Array<Pending> | undefined => {
  let batch: Array<Pending> | undefined
  for (let i = 0; i < events.length; i++) {
    const event = events[i]!
    if (event._tag !== "Message") continue
    const m = event.compressed
      ? new Compressed(event.binary, event.data)
      : event.binary
      ? new Message.BinaryMessage(event.data)
      : Message.textFromUtf8(event.data)
    if (batch === undefined) batch = [m]
    else batch.push(m)
  }
  return batch
}

export type Batch = readonly [Message.Message, ...Array<Message.Message>]

/** What the inbox tells its owner. */
export interface InboxOwner {
  /** Over a mark: stop reading the socket. */
  readonly onInboxFull: () => void
  /** The handler took messages: reading may resume. */
  readonly onInboxRoom: () => void
  /** The handler asked for more after the inbox ended: it has answered everything it was given. */
  readonly onCaughtUp: () => void
  /** A compressed message did not inflate (1007/1009) or inflated to invalid UTF-8 (1007). */
  readonly onInflateError: (error: ProtocolError) => void
}

export interface InboxOptions {
  /** Messages held before reading stops. */
  readonly capacity: number
  /** Bytes held before reading stops; also the inflation budget of one batch. */
  readonly highWaterMark: number
  /** Largest inflated message (1009 past it). */
  readonly maxMessageSize: number
}

const NO_ITEMS: Array<Pending> = []

export class Inbox {
  // Shared and empty while nothing waits (see push): an idle connection holds no array of its own.
  private items: Array<Pending> = NO_ITEMS
  private bytes = 0
  private ended = false
  private full = false
  /** The waiting pull's `resume` itself (no closure per pull): what it gets is decided here. */
  private waiter: ((next: Effect.Effect<Batch, Cause.Done>) => void) | undefined = undefined
  private readonly options: InboxOptions
  private readonly compressor: Compressor | undefined
  private readonly owner: InboxOwner

  constructor(options: InboxOptions, compressor: Compressor | undefined, owner: InboxOwner) {
    this.options = options
    this.compressor = compressor
    this.owner = owner
  }

  /** Messages from one read, in order (called in the socket's data callback). */
  push(batch: Array<Pending>): void {
    if (this.ended) return
    if (this.waiter !== undefined && this.items.length === 0 && this.compressor === undefined) {
      const take = this.waiter
      this.waiter = undefined
      return take(this.deliver(batch))
    }
    if (this.items === NO_ITEMS) this.items = []
    for (let i = 0; i < batch.length; i++) {
      this.items.push(batch[i]!)
      this.bytes += batch[i]!.data.length
    }
    if (this.waiter !== undefined) {
      const take = this.waiter
      this.waiter = undefined
      return take(this.take())
    }
    if (!this.full && (this.items.length >= this.options.capacity || this.bytes >= this.options.highWaterMark)) {
      this.full = true
      this.owner.onInboxFull()
    }
  }

  /** No more messages will come; what is queued is still delivered. */
  end(): void {
    if (this.ended) return
    this.ended = true
    if (this.waiter !== undefined && this.items.length === 0) {
      const take = this.waiter
      this.waiter = undefined
      this.owner.onCaughtUp()
      take(Cause.done())
    }
  }

  /** Is a compressed message still to be inflated (its inflation may yet fail the connection)? */
  get holdsCompressed(): boolean {
    const items = this.items
    for (let i = 0; i < items.length; i++) if (items[i] instanceof Compressed) return true
    return false
  }

  /** Drop what is queued (the connection failed; nothing more is delivered). */
  clear(): void {
    this.items = NO_ITEMS
    this.bytes = 0
    this.end()
  }

  /**
   * The handler's pull: the next batch, or `Cause.Done` after the end. Only
   * one consumer pulls at a time (the `messages` stream).
   */
  get pull(): Effect.Effect<Batch, Cause.Done> {
    // Built on first use: a connection whose handler never reads pays nothing for it.
    const pull = Effect.callback<Batch, Cause.Done>((resume) => {
    if (this.items.length > 0) return resume(this.take())
    if (this.ended) {
      this.owner.onCaughtUp()
      return resume(Cause.done())
    }
    this.waiter = resume
    return clearWaiter
  })
    const clearWaiter = Effect.sync(() => {
      this.waiter = undefined
    })
    Object.defineProperty(this, "pull", { value: pull })
    return pull
  }

  private room(): void {
    if (this.full) {
      this.full = false
      this.owner.onInboxRoom()
    }
  }

  private deliver(batch: Array<Pending>): Effect.Effect<Batch, Cause.Done> {
    this.room()
    return batch.length > 0 ? Effect.succeed(batch as unknown as Batch) : Cause.done()
  }

  private take(): Effect.Effect<Batch, Cause.Done> {
    if (this.compressor === undefined) {
      const batch = this.items
      this.items = NO_ITEMS
      this.bytes = 0
      return this.deliver(batch)
    }
    return this.inflateSome(this.compressor)
  }

  // One compressed message at a time, until the batch holds the budget (at least one message).
  private inflateSome(compressor: Compressor): Effect.Effect<Batch, Cause.Done> {
    return Effect.suspend(() => {
      const out: Array<Message.Message> = []
      let held = 0
      const next = (): Effect.Effect<Batch, Cause.Done> => {
        while (this.items.length > 0 && (out.length === 0 || held < this.options.highWaterMark)) {
          const m = this.items[0]!
          if (m instanceof Compressed) {
            return Effect.flatMap(Effect.result(compressor.decompress(m.data, this.options.maxMessageSize)), (result) => {
              // The queue may have been cleared while inflating (the connection failed).
              if (this.items[0] !== m) return this.finishBatch(out)
              this.items.shift()
              this.bytes -= m.data.length
              const error = result._tag === "Failure"
                ? result.failure
                : !m.binary && !Utf8.isValid(result.success)
                ? protocolError("InvalidUtf8", "invalid UTF-8 in compressed text message") // RFC 6455 §8.1
                : undefined
              if (error !== undefined || result._tag === "Failure") {
                // Messages before the bad one are delivered; nothing after it (RFC 6455 §7.1.7).
                this.clear()
                this.owner.onInflateError(error!)
                return this.finishBatch(out)
              }
              out.push(m.binary ? new Message.BinaryMessage(result.success) : Message.textFromUtf8(result.success))
              held += result.success.length
              return next()
            })
          }
          this.items.shift()
          this.bytes -= m.data.length
          out.push(m)
          held += m.data.length
        }
        return this.finishBatch(out)
      }
      return next()
    })
  }

  private finishBatch(out: Array<Message.Message>): Effect.Effect<Batch, Cause.Done> {
    this.room()
    if (out.length > 0) return Effect.succeed(out as unknown as Batch)
    if (this.ended && this.items.length === 0) this.owner.onCaughtUp()
    return Cause.done()
  }
}
