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

const noop = () => {}

export interface LivenessOptions {
  readonly heartbeatIntervalMs: number
  readonly heartbeatTimeoutMs: number
  readonly idleTimeoutMs: number
}


export class Liveness {
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
  // Bound once per connection (not per deadline), and only for what is enabled.
  private onTick: () => void = noop
  private onCheck: () => void = noop
  private onIdle: () => void = noop

  constructor(owner: LivenessOwner, deadlines: Deadlines.Deadlines, clock: Clock.Clock, options: LivenessOptions) {
    this.owner = owner
    this.deadlines = deadlines
    this.clock = clock
    this.options = options
  }

  start(): void {
    if (this.options.heartbeatIntervalMs > 0) {
      this.onTick = () => this.tick()
      this.onCheck = () => this.check()
      this.nextTick = this.deadlines.add(this.options.heartbeatIntervalMs, this.onTick)
    }
    if (this.options.idleTimeoutMs > 0) {
      this.lastMessageAt = this.clock.currentTimeMillisUnsafe()
      this.onIdle = () => this.checkIdle()
      this.nextIdle = this.deadlines.add(this.options.idleTimeoutMs, this.onIdle)
    }
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
    this.nextCheck = this.deadlines.add(timeout, this.onCheck)
    this.nextTick = this.deadlines.add(this.options.heartbeatIntervalMs, this.onTick)
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
    this.nextIdle = this.deadlines.addAt(due, this.onIdle)
  }
}
