/**
 * The application contract: what the server asks of an app for each
 * connection (how to answer plain HTTP, whether and how to accept an
 * upgrade), and the lifecycle hooks it reports to. `Router` builds an `App`
 * from routes; `Server` runs one.
 *
 * @example
 * const app: App<never> = {
 *   http: () => Effect.succeed({ status: 404 }),
 *   upgrade: () => Effect.succeed({
 *     _tag: "Accept",
 *     handler: (conn) => conn.messages.pipe(Stream.runForEach((m) => conn.send(m)))
 *   })
 * }
 */
import type * as Effect from "effect/Effect"
import type { ProtocolError } from "../domain/ProtocolError.ts"
import type * as Handshake from "../domain/Handshake.ts"
import type { CloseInfo, Connection, ConnectionInfo } from "./Connection.ts"

/** A plain HTTP answer (non-upgrade requests, refused upgrades). */
export interface HttpResponse {
  readonly status: number
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
  readonly body?: string | Uint8Array | undefined
}

/** Who is on the other end, as far as the transport knows. */
export interface Peer {
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
}

/** Accept an upgrade: the handler runs for the life of the connection, in the connection's own fiber. */
export interface Accept<R> {
  readonly _tag: "Accept"
  readonly protocol?: string | undefined
  readonly extensions?: string | undefined
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
  readonly params?: Readonly<Record<string, string>> | undefined
  readonly attributes?: Readonly<Record<string, unknown>> | undefined
  readonly handler: (connection: Connection) => Effect.Effect<void, unknown, R>
}

/** Refuse an upgrade with any HTTP status (401, 403, 404, 429 ...). */
export interface Reject {
  readonly _tag: "Reject"
  readonly response: HttpResponse
}

export type UpgradeDecision<R> = Accept<R> | Reject

/**
 * What the server asks of the application, once per connection: how to
 * answer a plain HTTP request, and whether (and how) to accept an upgrade.
 */
export interface App<R> {
  readonly http: (request: Handshake.HttpRequest, peer: Peer) => Effect.Effect<HttpResponse, never, R>
  readonly upgrade: (upgrade: Handshake.UpgradeRequest, peer: Peer) => Effect.Effect<UpgradeDecision<R>, never, R>
}

/** The server's view of a live connection: enough to count it and to close it at shutdown. */
export interface ConnectionHandle {
  readonly info: ConnectionInfo
  readonly close: (code: number, reason: string) => Effect.Effect<void>
  readonly closed: Effect.Effect<CloseInfo>
}

/** Lifecycle callbacks for the server around the connections (registry, logs, metrics). */
export interface Hooks {
  readonly onHandshake?: (status: number) => void
  readonly onOpen?: (handle: ConnectionHandle) => void
  readonly onClose?: (handle: ConnectionHandle, info: CloseInfo) => void
  readonly onProtocolError?: (handle: ConnectionHandle, error: ProtocolError) => void
  /** Data messages received (called once per read batch). */
  readonly onMessagesIn?: (count: number, bytes: number) => void
  /** Data messages queued by `send`/`sendAll`/`sendFrame`/`offerFrame` (called once per call, not per frame). */
  readonly onMessagesOut?: (count: number) => void
  /** Bytes handed to the socket (called once per write batch). */
  readonly onBytesOut?: (bytes: number) => void
  /** A `send` refused or a connection closed by the backpressure policy. */
  readonly onBackpressure?: (policy: "drop" | "close") => void
  readonly onHeartbeatTimeout?: (handle: ConnectionHandle) => void
  /** A connection's compressor opened its first zlib stream (true) or closed its last (false: idle release, end). */
  readonly onZlibState?: (held: boolean) => void
  /** A permessage-deflate offer declined because `maxCompressingConnections` connections compress already. */
  readonly onCompressionDeclined?: () => void
}
