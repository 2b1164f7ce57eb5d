import * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import type { HttpRequest } from "../domain/Handshake.ts"
import type { Message, Outgoing } from "./Message.ts"

/** How a connection ended (RFC 6455 §7.1.5: 1006 when no close frame came back). */
export type { CloseInfo } from "../domain/Protocol.ts"
import type { CloseInfo } from "../domain/Protocol.ts"

/** `send`, `ping` or `close` after the connection has begun closing. */
export class ConnectionClosedError extends Data.TaggedError("ConnectionClosedError")<{
  readonly connectionId: number
}> {
  override get message(): string {
    return `connection ${this.connectionId} is closing or closed`
  }
}

/** `send` refused a message because the outbound buffer is over its limit and the policy is "drop". */
export class MessageDroppedError extends Data.TaggedError("MessageDroppedError")<{
  readonly connectionId: number
  readonly bufferedBytes: number
}> {
  override get message(): string {
    return `connection ${this.connectionId}: message dropped, ${this.bufferedBytes} bytes already buffered`
  }
}

/** Route parameters by name: `Router.PathParams<"/chat/:room">` narrows this to `{ readonly room: string }`. */
export type Params = Readonly<Record<string, string>>

/** What is known about the upgrade request of a connection (`P`: its route parameters). */
export interface ConnectionInfo<P extends Params = Params> {
  readonly id: number
  readonly request: HttpRequest
  readonly path: string
  readonly query: URLSearchParams
  /** Header lookup, case-insensitive; several headers of one name are joined with ", ". */
  readonly header: (name: string) => string | undefined
  readonly remoteAddress: string | undefined
  /** The subprotocol chosen at upgrade (RFC 6455 §1.9), if any. */
  readonly protocol: string | undefined
  /** The `Sec-WebSocket-Extensions` answer, if an extension was agreed. */
  readonly extensions: string | undefined
  /** Route parameters, e.g. `{ room: "lobby" }` for `/chat/:room`. */
  readonly params: P
  /**
   * Untyped values set by upgrade middleware (kept for compatibility). A middleware that has
   * something for the handler should provide it as a service instead, as `Middleware.auth` does.
   */
  readonly attributes: Readonly<Record<string, unknown>>
}

/**
 * One open WebSocket, as user code sees it. `P` types `params` from the route's path
 * (`Router.ws("/chat/:room", (conn) => ...)` gives `conn.params.room: string`).
 *
 * @example
 * const echo = (conn: Connection) =>
 *   conn.messages.pipe(Stream.runForEach((message) => conn.send(message)))
 */
export interface Connection<P extends Params = Params> extends ConnectionInfo<P> {
  /** Data messages in arrival order; ends when the connection closes. Pulling slowly slows the peer down (TCP backpressure). */
  readonly messages: Stream.Stream<Message>
  /** Queue a message (string = text, bytes = binary). Suspends while the outbound buffer is over its limit (policy "suspend"). */
  readonly send: (message: Outgoing) => Effect.Effect<void, ConnectionClosedError | MessageDroppedError>
  /** Queue several messages in one write. */
  readonly sendAll: (messages: ReadonlyArray<Outgoing>) => Effect.Effect<void, ConnectionClosedError | MessageDroppedError>
  /** Queue a frame already encoded with `FrameEncoder` (used by broadcasts, which encode once for every subscriber). */
  readonly sendFrame: (frame: Uint8Array) => Effect.Effect<void, ConnectionClosedError | MessageDroppedError>
  /**
   * Queue an encoded frame without waiting: false (and nothing queued) when the
   * connection is closing or its outbound buffer is over the high-water mark.
   * Broadcasts use it so one slow subscriber never holds up the others.
   */
  readonly offerFrame: (frame: Uint8Array) => boolean
  /** Send a ping (payload ≤ 125 bytes). */
  readonly ping: (payload?: Uint8Array) => Effect.Effect<void, ConnectionClosedError>
  /** Start the closing handshake (RFC 6455 §7.1.2). Idempotent; does not wait. */
  readonly close: (code?: number, reason?: string) => Effect.Effect<void>
  /** Completes when the connection has fully closed. */
  readonly closed: Effect.Effect<CloseInfo>
  /** Bytes queued for this peer and not yet handed to the socket. */
  readonly bufferedAmount: () => number
}

/**
 * A connection with some members replaced (a middleware that filters
 * `messages`, say). The result delegates everything else to `connection`:
 * use this rather than `{ ...connection }`, which copies only own fields and
 * loses the methods of a live connection.
 *
 * @example
 * const handler2 = (conn: Connection) =>
 *   handler(withOverrides(conn, { messages: conn.messages.pipe(Stream.take(10)) }))
 */
export const withOverrides = <P extends Params>(connection: Connection<P>, overrides: Partial<Connection<P>>): Connection<P> => {
  const derived = Object.create(connection) as Connection<P>
  for (const key of Object.keys(overrides) as Array<keyof Connection<P>>) {
    Object.defineProperty(derived, key, { value: overrides[key], enumerable: true })
  }
  return derived
}

/**
 * Make methods of a connection class bound on first access: the methods live
 * on the prototype (no closure per connection), and one passed around
 * detached (`Stream.runForEach(conn.send)`) still has its `this`.
 *
 * @example
 * bindOnFirstAccess(MyConnection.prototype, ["send", "close"])
 */
export const bindOnFirstAccess = <T extends object>(prototype: T, names: ReadonlyArray<keyof T & string>): void => {
  for (const name of names) {
    const method = prototype[name] as (...args: Array<unknown>) => unknown
    Object.defineProperty(prototype, name, {
      configurable: true,
      get(this: T) {
        const bound = method.bind(this)
        Object.defineProperty(this, name, { value: bound, configurable: true, writable: true })
        return bound
      }
    })
  }
}
