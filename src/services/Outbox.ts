/**
 * The outbound side of one connection: frames the `Protocol` queued go to the
 * socket in one write per turn, however many `send`s produced them.
 *
 * - Batching: frames queued in a socket's data callback (a handler's answer)
 *   and broadcasts are written once the event loop's I/O callbacks have run,
 *   by one shared immediate; frames queued anywhere else (a timer, a fiber
 *   resumed later) by one shared microtask. No closure and no task per
 *   connection; small frames are copied together, large buffers are written
 *   by reference (see `pack`).
 * - Backpressure: when the bytes waiting in the transport are over the
 *   outbox's high-water mark (the transport's own boolean when it cannot say
 *   how many), the outbox is congested: frames stay queued (counted in
 *   `bufferedAmount`) until `onDrain`, and the owner stops reading a peer that
 *   does not read. Node's socket says `false` from 16 KiB on, so every large
 *   write would pause reading for a round trip; `ws` does not pause at all,
 *   we pause only past the mark, which bounds what a non-reading peer costs
 *   (about the mark in the socket plus the mark queued here).
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
// write of hundreds of tiny buffers (each wrapped, each an iovec). A large buffer (a payload the
// encoder kept apart from its header: an echo hands back the bytes it received) is never copied:
// it goes out by reference in the same vectored write, between the coalesced runs around it.
const COALESCE_MAX = 64 * 1024
/** From this size a buffer is written as is (FrameEncoder keeps payloads over 4 KiB apart too). */
const LARGE = 4096

const allocate = (bytes: number): Uint8Array =>
  typeof Buffer === "function" ? Buffer.allocUnsafe(bytes) : new Uint8Array(bytes)

// Copy chunks[from, to) (bytes in all) into one buffer.
const coalesce = (chunks: ReadonlyArray<Uint8Array>, from: number, to: number, bytes: number): Uint8Array => {
  const out = allocate(bytes)
  let at = 0
  for (let i = from; i < to; i++) {
    out.set(chunks[i]!, at)
    at += chunks[i]!.length
  }
  return out
}

/**
 * The buffers to write for a batch: runs of small frames copied together (at
 * most COALESCE_MAX bytes each), large buffers as they are.
 *
 * @example
 * pack([header, payloadOf1MiB], 1048586) // the same two buffers: one writev, no copy
 */
export const pack = (batch: ReadonlyArray<Uint8Array>, bytes: number): ReadonlyArray<Uint8Array> => {
  const n = batch.length
  if (n === 1) return batch
  if (bytes <= COALESCE_MAX) {
    // The common case (small echoes): one copy, unless some buffer is large.
    let large = false
    for (let i = 0; i < n && !large; i++) large = batch[i]!.length >= LARGE
    if (!large) return [coalesce(batch, 0, n, bytes)]
  }
  const out: Array<Uint8Array> = []
  let runStart = 0
  let runBytes = 0
  const endRun = (end: number) => {
    if (end - runStart === 1) out.push(batch[runStart]!)
    else if (end > runStart) out.push(coalesce(batch, runStart, end, runBytes))
    runStart = end
    runBytes = 0
  }
  for (let i = 0; i < n; i++) {
    const length = batch[i]!.length
    if (length >= LARGE) {
      endRun(i)
      out.push(batch[i]!)
      runStart = i + 1
    } else {
      if (runBytes + length > COALESCE_MAX) endRun(i)
      runBytes += length
    }
  }
  endRun(n)
  return out
}

// One microtask flushes every outbox that has frames this turn. Scheduled through a resolved
// promise: Node's queueMicrotask wraps every callback in an AsyncResource.
let due: Array<Outbox> = []
const resolved = Promise.resolve()
/** Inside a socket's data callback (see `enterTurn`). */
let turnDepth = 0
const flushDue = () => {
  const outboxes = due
  due = []
  flushEach(outboxes, false)
}

const flushEach = (outboxes: ReadonlyArray<Outbox>, late: boolean): void => {
  for (let i = 0; i < outboxes.length; i++) {
    // A throw here (a user hook, a transport bug) costs that connection only, never the process.
    try {
      if (late) outboxes[i]!.flushLate()
      else outboxes[i]!.flush()
    } catch (defect) {
      outboxes[i]!.fail(defect)
    }
  }
}

/**
 * A socket's data callback is starting: frames queued until `leaveTurn` (an
 * echo sent by a handler the data woke) are written once this event-loop
 * iteration's I/O callbacks have all run, like broadcasts (see `dueLate`):
 * the reads of every ready socket first, then the writes, as uWS corks until
 * the end of its loop iteration. Measured against a write per callback (what
 * `ws` does) and a microtask per callback: less server CPU per message (small
 * echo 0.95 → 0.87 µs) and a lower median latency under load, because the
 * peer is woken once per burst of replies instead of once per reply.
 */
export const enterTurn = (): void => {
  turnDepth++
}

/** The data callback ended. */
export const leaveTurn = (): void => {
  turnDepth--
}

// Answers and broadcasts wait for the end of the event loop's I/O phase: publishes made by
// many publishers' reads in one loop iteration then reach each subscriber in one write (one
// syscall per subscriber per iteration, not per delivery), as uWS corks until the end of its
// loop iteration.
let dueLate: Array<Outbox> = []
const flushDueLate = () => {
  const outboxes = dueLate
  dueLate = []
  flushEach(outboxes, true)
}
const afterIo: (f: () => void) => void = typeof setImmediate === "function"
  ? (f) => void setImmediate(f)
  : (f) => void setTimeout(f, 0)

export class Outbox {
  private scheduled = false
  private scheduledLate = false
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
    if (turnDepth > 0) return this.scheduleLate()
    this.scheduled = true
    if (due.length === 0) void resolved.then(flushDue)
    due.push(this)
  }

  /**
   * Frames were queued by a broadcast: write them once this event-loop
   * iteration's I/O callbacks have run (see `dueLate`); a `schedule()` in
   * the meantime writes them sooner.
   */
  scheduleLate(): void {
    if (this.scheduled || this.scheduledLate || this.closed) return
    this.scheduledLate = true
    if (dueLate.length === 0) afterIo(flushDueLate)
    dueLate.push(this)
  }

  /** The late flush: nothing to do if a microtask flush came first. */
  flushLate(): void {
    this.scheduledLate = false
    if (!this.scheduled) this.flush()
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
        ok = this.incoming.write(pack(batch, bytes))
      } catch (defect) {
        this.closed = true
        return this.owner.onWriteDefect(defect)
      }
      if (!ok && this.transportOverMark()) {
        this.congested = true
        this.owner.onCongestion(true)
        this.incoming.onDrain(() => this.onDrained())
      }
    }
    this.wake()
  }

  // The transport's buffer against our mark, when it can tell its size.
  private transportOverMark(): boolean {
    const pending = this.incoming.writableLength
    return pending === undefined || pending > this.highWaterMark
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
