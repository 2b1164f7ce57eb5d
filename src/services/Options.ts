import * as Schema from "effect/Schema"

/**
 * Server limits and timeouts. Every field has a safe default
 * ({@link defaultOptions}); {@link decodeOptions} validates user input.
 *
 * @example
 * const options = decodeOptions({ maxMessageSize: 1024 * 1024 })
 */
export const ServerOptions = Schema.Struct({
  /** Largest message accepted, in bytes (after inflation when compressed). Over it: close 1009. */
  maxMessageSize: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 2 ** 31 - 1 })),
  /** Largest HTTP request head (request line + headers). Over it: 431. */
  maxHeaderBytes: Schema.Int.check(Schema.isBetween({ minimum: 256, maximum: 1024 * 1024 })),
  /** Time allowed from TCP accept to a complete upgrade request. */
  handshakeTimeoutMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 3_600_000 })),
  /** Time allowed for the peer to answer our close frame before the TCP connection is dropped. */
  closeTimeoutMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 3_600_000 })),
  /** Split outgoing messages larger than this into fragments (0 = never). */
  fragmentSize: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 2 ** 31 - 1 })),
  /** Messages buffered for a handler that is behind; when full, the socket is not read (TCP backpressure). */
  inboundQueueSize: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 1_000_000 })),
  /** Bytes of messages buffered for a handler that is behind before the socket is not read (at least one message always fits). */
  inboundHighWaterMark: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 2 ** 31 - 1 })),
  /** Outbound bytes buffered per connection above which the backpressure policy applies. */
  outboundHighWaterMark: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 2 ** 31 - 1 })),
  /** What `send` does above the high-water mark: wait for the peer, drop the message, or close the connection (1008). */
  backpressure: Schema.Literals(["suspend", "drop", "close"]),
  /** Send a ping every this many ms (0 = never). */
  heartbeatIntervalMs: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 86_400_000 })),
  /** After a heartbeat ping, drop the connection (reported as 1006) if nothing arrives within this many ms (at most the interval). */
  heartbeatTimeoutMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 86_400_000 })),
  /** Close 1001 when no data message arrived for this many ms (0 = never). */
  idleTimeoutMs: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 86_400_000 }))
})
export type ServerOptions = typeof ServerOptions.Type

export const defaultOptions: ServerOptions = {
  maxMessageSize: 16 * 1024 * 1024,
  maxHeaderBytes: 16 * 1024,
  handshakeTimeoutMs: 10_000,
  closeTimeoutMs: 5_000,
  fragmentSize: 0,
  inboundQueueSize: 64,
  inboundHighWaterMark: 1024 * 1024,
  outboundHighWaterMark: 1024 * 1024,
  backpressure: "suspend",
  heartbeatIntervalMs: 30_000,
  heartbeatTimeoutMs: 30_000,
  idleTimeoutMs: 0
}

/** Merge user options over the defaults and validate them (throws a SchemaError on bad input, at startup). */
export const decodeOptions = (options: Partial<ServerOptions> = {}): ServerOptions =>
  Schema.decodeUnknownSync(ServerOptions)({ ...defaultOptions, ...options })
