import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Socket from "effect/socket/Socket"

/**
 * One accepted byte-stream connection, before any HTTP is read: the socket and
 * what the transport knows about the peer.
 */
export interface Incoming {
  readonly socket: Socket.Socket
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
}

/**
 * Where connections come from. The Node TCP/TLS layers and the in-memory layer
 * implement it, so the same reactor code runs over both.
 *
 * `run` accepts connections forever, running `handler` for each one in its
 * own fiber; interrupting `run` interrupts every handler.
 */
export class Transport extends Context.Service<Transport, {
  /** `host:port` or a description of the listening endpoint. */
  readonly address: { readonly host: string; readonly port: number }
  readonly run: <E, R>(handler: (incoming: Incoming) => Effect.Effect<void, E, R>) => Effect.Effect<never, never, R>
}>()("wsreactor/Transport") {}
