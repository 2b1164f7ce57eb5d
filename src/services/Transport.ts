import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"

/**
 * One accepted byte-stream connection, before any HTTP is read.
 *
 * This is the reactor's hot path, so it is callback-shaped, like the epoll
 * loop of the original design: bytes arrive through `listen`'s callback and
 * are decoded on the spot, writes go out in batches and report backpressure
 * through their return value. The connection's lifecycle (deadlines,
 * handlers, finalizers) is an Effect fiber; only the per-chunk work is not.
 */
export interface Incoming {
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
  /**
   * Start reading: `onData` gets every chunk, then `onEnd` exactly once at EOF,
   * error or destruction. A chunk is handed over (the callee may keep and
   * modify it) unless `borrowed` is true: then it is the transport's read
   * buffer, valid during the call only, and the callee copies what it keeps.
   */
  readonly listen: (onData: (chunk: Uint8Array, borrowed?: boolean) => void, onEnd: () => void) => void
  /** Stop reading (TCP backpressure builds up on the peer); `resume` starts again. */
  readonly pause: () => void
  readonly resume: () => void
  /** Write a batch in order; false when the transport's buffer is over its mark: wait for `onDrain`. */
  readonly write: (chunks: ReadonlyArray<Uint8Array>) => boolean
  /**
   * Bytes `write` accepted that the transport has not yet passed on (optional).
   * With it the outbox judges congestion against its own high-water mark instead
   * of the transport's (Node's is 16 KiB: any large write would report false).
   */
  readonly writableLength?: number | undefined
  /** Call `callback` once, when the buffer has drained (or the connection ended). */
  readonly onDrain: (callback: () => void) => void
  /** Half-close after the queued writes (FIN); reading goes on. */
  readonly end: () => void
  /** Drop the connection now; pending writes are lost. Idempotent. */
  readonly destroy: () => void
}

/**
 * Where connections come from. The Node TCP/TLS layers and the in-memory layer
 * implement it, so the same reactor code runs over both.
 *
 * `run` accepts connections forever, running `handler` for each one in its
 * own fiber; interrupting `run` interrupts every handler.
 */
export class Transport extends Context.Service<Transport, {
  /** The listening endpoint (the real port when 0 was asked for). */
  readonly address: { readonly host: string; readonly port: number }
  readonly run: <E, R>(handler: (incoming: Incoming) => Effect.Effect<void, E, R>) => Effect.Effect<never, never, R>
  /**
   * Stop accepting (close the listening socket) and leave the connections
   * already accepted alone: the first step of a graceful shutdown. Optional:
   * a transport without it keeps accepting until `run` is interrupted.
   */
  readonly stopAccepting?: Effect.Effect<void> | undefined
}>()("wsreactor/Transport") {}
