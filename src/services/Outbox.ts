/**
 * The outbound side of one connection: frames the `Protocol` queued go to the
 * socket in one write per turn, however many `send`s produced them.
 *
 * - Batching: every outbox that got frames in this turn is flushed by one
 *   shared microtask (no closure and no task per connection); many small
 *   frames are copied into one buffer, large ones keep their buffers.
 * - Backpressure: when the transport says its buffer is over its mark, the
 *   outbox is congested: frames stay queued (counted in `bufferedAmount`)
 *   until `onDrain`, and the owner stops reading a peer that does not read.
 * - Waiters: senders waiting for the queue to fall under the high-water mark,
 *   and the closing sequence waiting for everything to be written.
 */
import * as Effect from "effect/Effect"
import type { Protocol } from "../domain/Protocol.ts"
import type { Hooks } from "./App.ts"
import type { Deadlines } from "./Deadlines.ts"
import type { Incoming } from "./Transport.ts"

/** What the outbox tells its owner. */
export interface OutboxOwner {
  /** The transport's buffer went over (true) or back under (false) its mark. */
  readonly onCongestion: (congested: boolean) => void
  /** A write threw (a transport bug): the connection must be dropped. */
  readonly onWriteDefect: (defect: unknown) => void
}

// Many small frames written in one turn go out as one buffer: one copy is cheaper than a vectored
// write of hundreds of tiny buffers (each wrapped, each an iovec). Large batches keep their buffers.
const COALESCE_MAX = 64 * 1024

const coalesce = (chunks: ReadonlyArray<Uint8Array>, bytes: number): Uint8Array => {
  const out = typeof Buffer === "function" ? Buffer.allocUnsafe(bytes) : new Uint8Array(bytes)
  let at = 0
  for (let i = 0; i < chunks.length; i++) {
    out.set(chunks[i]!, at)
    at += chunks[i]!.length
  }
  return out
}

// One microtask flushes every outbox that has frames this turn. Scheduled through a resolved
// promise: Node's queueMicrotask wraps every callback in an AsyncResource.
let due: Array<Outbox> = []
const resolved = Promise.resolve()
const flushDue = () => {
  const outboxes = due
  due = []
  for (let i = 0; i < outboxes.length; i++) {
    // A throw here (a user hook, a transport bug) costs that connection only, never the process.
    try {
      outboxes[i]!.flush()
    } catch (defect) {
      outboxes[i]!.fail(defect)
    }
  }
}

export class Outbox {
  private scheduled = false
  private congested = false
  /** No more writes (the connection is closing its TCP side or gone). */
  private closed = false
  private belowMarkWaiters: Array<() => void> | undefined = undefined
  private flushedWaiter: (() => void) | undefined = undefined
  private readonly incoming: Incoming
  private readonly protocol: Protocol
  private readonly highWaterMark: number
  private readonly hooks: Hooks
  private readonly owner: OutboxOwner

  constructor(incoming: Incoming, protocol: Protocol, highWaterMark: number, hooks: Hooks, owner: OutboxOwner) {
    this.incoming = incoming
    this.protocol = protocol
    this.highWaterMark = highWaterMark
    this.hooks = hooks
    this.owner = owner
  }

  /** Bytes queued and not yet handed to the socket. */
  get bufferedAmount(): number {
    return this.protocol.bufferedBytes
  }

  /** Over the high-water mark: the backpressure policy applies to the next send. */
  get overMark(): boolean {
    return this.protocol.bufferedBytes > this.highWaterMark
  }

  get isCongested(): boolean {
    return this.congested
  }

  /** Frames were queued on the protocol: write them at the end of this turn. */
  schedule(): void {
    if (this.scheduled || this.closed) return
    this.scheduled = true
    if (due.length === 0) void resolved.then(flushDue)
    due.push(this)
  }

  /** Write what is queued now (unless congested or closed). */
  flush(): void {
    this.scheduled = false
    if (!this.congested && !this.closed && this.protocol.bufferedBytes > 0) {
      const bytes = this.protocol.bufferedBytes
      const batch = this.protocol.dataToSend()
      this.hooks.onBytesOut?.(bytes)
      let ok: boolean
      try {
        ok = this.incoming.write(batch.length > 1 && bytes <= COALESCE_MAX ? [coalesce(batch, bytes)] : batch)
      } catch (defect) {
        this.closed = true
        return this.owner.onWriteDefect(defect)
      }
      if (!ok) {
        this.congested = true
        this.owner.onCongestion(true)
        this.incoming.onDrain(() => this.onDrained())
      }
    }
    this.wake()
  }

  /** A flush threw: stop writing and let the owner drop the connection. */
  fail(defect: unknown): void {
    this.closed = true
    this.owner.onWriteDefect(defect)
  }

  /** Stop writing for good (TCP half-closed or dropped). */
  close(): void {
    this.closed = true
    this.wake()
  }

  private onDrained(): void {
    this.congested = false
    this.owner.onCongestion(false)
    this.flush()
  }

  private wake(): void {
    const waiters = this.belowMarkWaiters
    if (waiters !== undefined && (!this.overMark || this.closed)) {
      this.belowMarkWaiters = undefined
      for (let i = 0; i < waiters.length; i++) waiters[i]!()
    }
    const flushed = this.flushedWaiter
    if (flushed !== undefined && ((this.protocol.bufferedBytes === 0 && !this.congested) || this.closed)) {
      this.flushedWaiter = undefined
      flushed()
    }
  }

  /** Completes when the queue is back under the high-water mark (or the outbox closed). */
  awaitBelowMark(): Effect.Effect<void> {
    return Effect.callback<void>((resume) => {
      if (!this.overMark || this.closed) return resume(Effect.void)
      const wake = () => resume(Effect.void)
      if (this.belowMarkWaiters === undefined) this.belowMarkWaiters = [wake]
      else this.belowMarkWaiters.push(wake)
      return Effect.sync(() => {
        if (this.belowMarkWaiters !== undefined) this.belowMarkWaiters = this.belowMarkWaiters.filter((w) => w !== wake)
      })
    })
  }

  /**
   * Call `done(true)` once everything queued is in the socket, or `done(false)`
   * if the peer has not taken it within `timeoutMs` (for the closing sequence).
   */
  whenFlushed(deadlines: Deadlines, timeoutMs: number, done: (flushed: boolean) => void): void {
    this.flush()
    if (this.protocol.bufferedBytes === 0 && !this.congested) return done(true)
    let finished = false
    const deadline = deadlines.add(timeoutMs, () => {
      if (finished) return
      finished = true
      this.flushedWaiter = undefined
      done(false)
    })
    this.flushedWaiter = () => {
      if (finished) return
      finished = true
      deadline.cancel()
      done(!this.closed || this.protocol.bufferedBytes === 0)
    }
  }
}
