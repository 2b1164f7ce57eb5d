import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { type DeflateOptions, resolveDeflateOptions } from "../domain/PerMessageDeflate.ts"

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

/** Options that fail validation: a configuration mistake, reported before the server starts. */
export class InvalidOptionsError extends Data.TaggedError("InvalidOptionsError")<{
  /** What is wrong, one entry per bad option (`maxMessageSize: Expected a value between 1 and 2147483647`). */
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `invalid server options: ${this.detail}`
  }
}

/**
 * The timeouts and intervals as Effect durations (`Duration.Input`: `"30 seconds"`,
 * `Duration.minutes(1)`, or a number of milliseconds), each beside its `…Ms` field
 * (kept: existing configs and the decoded {@link ServerOptions} use them). Give one
 * of the two, not both; either way the same range applies.
 *
 * @example
 * Server.serve(app, { heartbeatInterval: "20 seconds", idleTimeout: "5 minutes", shutdownTimeout: "10 seconds" })
 */
export interface DurationOptions {
  readonly handshakeTimeout?: Duration.Input | undefined
  readonly closeTimeout?: Duration.Input | undefined
  readonly heartbeatInterval?: Duration.Input | undefined
  readonly heartbeatTimeout?: Duration.Input | undefined
  readonly idleTimeout?: Duration.Input | undefined
  readonly shutdownTimeout?: Duration.Input | undefined
}

const durationFields = [
  ["handshakeTimeout", "handshakeTimeoutMs"],
  ["closeTimeout", "closeTimeoutMs"],
  ["heartbeatInterval", "heartbeatIntervalMs"],
  ["heartbeatTimeout", "heartbeatTimeoutMs"],
  ["idleTimeout", "idleTimeoutMs"],
  ["shutdownTimeout", "shutdownTimeoutMs"]
] as const

/**
 * The input with each duration field (`heartbeatInterval: "20 seconds"`) moved to its
 * `…Ms` field (`heartbeatIntervalMs: 20000`), and what could not be moved. The range
 * checks are {@link decode}'s.
 *
 * @example
 * Options.withMillis({ idleTimeout: "1 minute" }).input.idleTimeoutMs // 60000
 */
export const withMillis = <A extends DecodeInput>(
  input: A
): { readonly input: A; readonly problems: ReadonlyArray<string> } => {
  const problems: Array<string> = []
  let out: Record<string, unknown> | undefined
  for (const [name, msName] of durationFields) {
    const value = input[name]
    if (value === undefined) continue
    if (out === undefined) out = { ...input } as Record<string, unknown>
    delete out[name]
    if (input[msName] !== undefined) {
      problems.push(`${name}: give ${name} or ${msName}, not both`)
      continue
    }
    const duration = Duration.fromInput(value)
    if (duration._tag === "None" || !Duration.isFinite(duration.value)) {
      problems.push(`${name}: Expected a finite duration ("30 seconds") or a number of milliseconds, got ${String(value)}`)
      continue
    }
    out[msName] = Duration.toMillis(duration.value)
  }
  return { input: (out ?? input) as A, problems }
}

/** What {@link decode} checks: the {@link ServerOptions} fields plus the serve-level ones. */
export interface DecodeInput extends Partial<ServerOptions>, DurationOptions {
  readonly shutdownTimeoutMs?: number | undefined
  readonly perMessageDeflate?: boolean | Partial<DeflateOptions> | undefined
}

const ShutdownTimeoutMs = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 3_600_000 }))

/**
 * {@link decodeOptions} as an Effect: merge over the defaults and validate, failing with a typed
 * {@link InvalidOptionsError} that names every bad field. Also checks `shutdownTimeoutMs` and
 * `perMessageDeflate` (other keys, such as `hooks`, are ignored), so a caller can validate a whole
 * `ServeOptions` before forking anything. `undefined` means "the default". Durations may be given
 * as `Duration.Input` ({@link DurationOptions}).
 *
 * @example
 * const options = yield* Options.decode({ maxMessageSize: 1 << 20, heartbeatInterval: "20 seconds" })
 * // Options.decode({ maxMessageSize: 0 }) fails with InvalidOptionsError
 */
export const decode = (given: DecodeInput = {}): Effect.Effect<ServerOptions, InvalidOptionsError> =>
  Effect.gen(function*() {
    const { input, problems: durationProblems } = withMillis(given)
    const defined = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined))
    const decoded = yield* Effect.result(
      Schema.decodeUnknownEffect(ServerOptions)({ ...defaultOptions, ...defined }, { errors: "all" })
    )
    const problems = [...durationProblems, ...(decoded._tag === "Failure" ? describe(decoded.failure) : [])]
    if (input.shutdownTimeoutMs !== undefined && !Schema.is(ShutdownTimeoutMs)(input.shutdownTimeoutMs)) {
      problems.push(`shutdownTimeoutMs: Expected an integer between 0 and 3600000, got ${String(input.shutdownTimeoutMs)}`)
    }
    const deflate = input.perMessageDeflate
    if (deflate !== undefined && typeof deflate !== "boolean") {
      const resolved = resolveDeflateOptions(deflate)
      if (resolved._tag === "Error") problems.push(`perMessageDeflate: ${resolved.error.detail}`)
    }
    if (decoded._tag === "Success" && problems.length === 0) return decoded.success
    return yield* new InvalidOptionsError({
      detail: problems.join("; "),
      cause: decoded._tag === "Failure" ? decoded.failure : undefined
    })
  })

// A SchemaError's message is "<problem>\n  at [\"<field>\"]" per issue; one "<field>: <problem>" each.
const describe = (error: Schema.SchemaError): Array<string> => {
  const found = [...error.message.matchAll(/^(.+)\n\s+at \["?([^"\]\n]+)"?\]$/gm)]
  return found.length > 0 ? found.map((m) => `${m[2]}: ${m[1]}`) : [error.message.replace(/\s*\n\s*/g, " ")]
}
