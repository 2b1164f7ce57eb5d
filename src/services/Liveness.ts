/**
 * Liveness of one connection, on the server's deadline lanes (Effect's
 * `Clock`, so `TestClock` drives it to the millisecond):
 *
 * - Heartbeat: a ping every `heartbeatIntervalMs`; if no byte at all came from
 *   the peer within `heartbeatTimeoutMs` of it (any frame counts, read from
 *   the protocol's byte counter), the peer is gone: the owner drops TCP.
 * - Idle: close 1001 when no data message arrived for `idleTimeoutMs`
 *   (control frames do not count: a peer that only answers pings is idle).
 *
 * No timer and no fiber of its own: a few deadline entries at a time.
 */
import type * as Clock from "effect/Clock"
import type { Protocol } from "../domain/Protocol.ts"
import * as Deadlines from "./Deadlines.ts"

/** What liveness asks of its connection. */
export interface LivenessOwner {
  readonly protocol: Protocol
  /** Queue a heartbeat ping. */
  readonly sendHeartbeat: () => void
  /** No answer to the heartbeat: drop the connection. */
  readonly onHeartbeatTimeout: () => void
  /** No data message for the idle timeout: start closing. */
  readonly onIdleTimeout: () => void
}

// Which deadline expired (see `expire`).
const TICK = 0
const CHECK = 1
const IDLE = 2

export interface LivenessOptions {
  readonly heartbeatIntervalMs: number
  readonly heartbeatTimeoutMs: number
  readonly idleTimeoutMs: number
}

export class Liveness implements Deadlines.Expiring {
  private readonly owner: LivenessOwner
  private readonly deadlines: Deadlines.Deadlines
  private readonly clock: Clock.Clock
  private readonly options: LivenessOptions
  private stopped = false
  private bytesAtPing = 0
  private lastMessageAt = 0
  private nextTick: Deadlines.Deadline = Deadlines.none
  private nextCheck: Deadlines.Deadline = Deadlines.none
  private nextIdle: Deadlines.Deadline = Deadlines.none

  constructor(owner: LivenessOwner, deadlines: Deadlines.Deadlines, clock: Clock.Clock, options: LivenessOptions) {
    this.owner = owner
    this.deadlines = deadlines
    this.clock = clock
    this.options = options
  }

  start(): void {
    if (this.options.heartbeatIntervalMs > 0) {
      this.nextTick = this.deadlines.add(this.options.heartbeatIntervalMs, this, TICK)
    }
    if (this.options.idleTimeoutMs > 0) {
      this.lastMessageAt = this.clock.currentTimeMillisUnsafe()
      this.nextIdle = this.deadlines.add(this.options.idleTimeoutMs, this, IDLE)
    }
  }

  /** A deadline of ours expired (`Deadlines.Expiring`: no closure per kind per connection). */
  expire(tag: number): void {
    if (tag === TICK) this.tick()
    else if (tag === CHECK) this.check()
    else this.checkIdle()
  }

  /** Data messages arrived (once per read batch). */
  onMessages(): void {
    if (this.options.idleTimeoutMs > 0) this.lastMessageAt = this.clock.currentTimeMillisUnsafe()
  }

  stop(): void {
    this.stopped = true
    this.nextTick.cancel()
    this.nextCheck.cancel()
    this.nextIdle.cancel()
  }

  private tick(): void {
    if (this.stopped || this.owner.protocol.state !== "Open") return
    this.bytesAtPing = this.owner.protocol.bytesReceived
    this.owner.sendHeartbeat()
    // The answer is awaited at most until the next ping.
    const timeout = Math.min(this.options.heartbeatTimeoutMs, this.options.heartbeatIntervalMs)
    this.nextCheck = this.deadlines.add(timeout, this, CHECK)
    this.nextTick = this.deadlines.add(this.options.heartbeatIntervalMs, this, TICK)
  }

  private check(): void {
    if (this.stopped || this.owner.protocol.state !== "Open") return
    if (this.owner.protocol.bytesReceived === this.bytesAtPing) this.owner.onHeartbeatTimeout()
  }

  private checkIdle(): void {
    if (this.stopped || this.owner.protocol.state !== "Open") return
    const due = this.lastMessageAt + this.options.idleTimeoutMs
    if (due <= this.clock.currentTimeMillisUnsafe()) return this.owner.onIdleTimeout()
    // A message moved the deadline: wait for the new one exactly.
    this.nextIdle = this.deadlines.addAt(due, this, IDLE)
  }
}
