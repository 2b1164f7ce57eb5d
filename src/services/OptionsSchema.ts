/**
 * The server options as an `effect/Schema`, for applications that compose
 * them into a configuration schema of their own. The server itself validates
 * with `Options.decode`, which checks the same rules without loading Schema
 * (~4 MB of live heap that every full GC would walk); a test keeps both in
 * agreement.
 *
 * @example
 * const options = Schema.decodeUnknownSync(OptionsSchema.ServerOptions)({ ...Options.defaultOptions, ...input })
 */
import * as Schema from "effect/Schema"
import { backpressurePolicies, integerRanges } from "./Options.ts"

const int = ([minimum, maximum]: readonly [number, number]) => Schema.Int.check(Schema.isBetween({ minimum, maximum }))

export const ServerOptions = Schema.Struct({
  maxMessageSize: int(integerRanges.maxMessageSize),
  maxHeaderBytes: int(integerRanges.maxHeaderBytes),
  handshakeTimeoutMs: int(integerRanges.handshakeTimeoutMs),
  closeTimeoutMs: int(integerRanges.closeTimeoutMs),
  fragmentSize: int(integerRanges.fragmentSize),
  inboundQueueSize: int(integerRanges.inboundQueueSize),
  inboundHighWaterMark: int(integerRanges.inboundHighWaterMark),
  outboundHighWaterMark: int(integerRanges.outboundHighWaterMark),
  backpressure: Schema.Literals(backpressurePolicies as ["suspend", "drop", "close"]),
  heartbeatIntervalMs: int(integerRanges.heartbeatIntervalMs),
  heartbeatTimeoutMs: int(integerRanges.heartbeatTimeoutMs),
  idleTimeoutMs: int(integerRanges.idleTimeoutMs)
})
