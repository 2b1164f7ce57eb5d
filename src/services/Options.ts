import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { type DeflateOptions, resolveDeflateOptions } from "../domain/PerMessageDeflate.ts"

// No `effect/Schema` here: it holds ~4 MB of live heap once loaded, and every full GC walks the
// live heap (a large-message echo runs one per few dozen messages). Twelve integer ranges and one
// literal are checked by hand below, with Schema's wording; `OptionsSchema.ts` has the same rules
// as a Schema (a test checks that both agree).

/**
 * Server limits and timeouts. Every field has a safe default
 * ({@link defaultOptions}); {@link decode} validates user input.
 *
 * @example
 * const options = yield* Options.decode({ maxMessageSize: 1024 * 1024 })
 */
export interface ServerOptions {
  /** Largest message accepted, in bytes (after inflation when compressed). Over it: close 1009. */
  readonly maxMessageSize: number
  /** Largest HTTP request head (request line + headers). Over it: 431. */
  readonly maxHeaderBytes: number
  /** Time allowed from TCP accept to a complete upgrade request. */
  readonly handshakeTimeoutMs: number
  /** Time allowed for the peer to answer our close frame before the TCP connection is dropped. */
  readonly closeTimeoutMs: number
  /** Split outgoing messages larger than this into fragments (0 = never). */
  readonly fragmentSize: number
  /** Messages buffered for a handler that is behind; when full, the socket is not read (TCP backpressure). */
  readonly inboundQueueSize: number
  /** Bytes of messages buffered for a handler that is behind before the socket is not read (at least one message always fits). */
  readonly inboundHighWaterMark: number
  /** Outbound bytes buffered per connection above which the backpressure policy applies. */
  readonly outboundHighWaterMark: number
  /** What `send` does above the high-water mark: wait for the peer, drop the message, or close the connection (1008). */
  readonly backpressure: "suspend" | "drop" | "close"
  /** Send a ping every this many ms (0 = never). */
  readonly heartbeatIntervalMs: number
  /** After a heartbeat ping, drop the connection (reported as 1006) if nothing arrives within this many ms (at most the interval). */
  readonly heartbeatTimeoutMs: number
  /** Close 1001 when no data message arrived for this many ms (0 = never). */
  readonly idleTimeoutMs: number
}

/** The integer options and their inclusive ranges (`OptionsSchema.ServerOptions` says the same). */
export const integerRanges: { readonly [K in Exclude<keyof ServerOptions, "backpressure">]: readonly [number, number] } = {
  maxMessageSize: [1, 2 ** 31 - 1],
  maxHeaderBytes: [256, 1024 * 1024],
  handshakeTimeoutMs: [1, 3_600_000],
  closeTimeoutMs: [1, 3_600_000],
  fragmentSize: [0, 2 ** 31 - 1],
  inboundQueueSize: [1, 1_000_000],
  inboundHighWaterMark: [1, 2 ** 31 - 1],
  outboundHighWaterMark: [1, 2 ** 31 - 1],
  heartbeatIntervalMs: [0, 86_400_000],
  heartbeatTimeoutMs: [1, 86_400_000],
  idleTimeoutMs: [0, 86_400_000]
}

export const backpressurePolicies: ReadonlyArray<ServerOptions["backpressure"]> = ["suspend", "drop", "close"]

/**
 * What is wrong with `value` as an integer in [min, max], in Schema's words
 * (`Expected a value between 1 and 10, got 0`), or undefined when it is fine.
 *
 * @example
 * checkInteger(1.5, 1, 10) // "Expected an integer, got 1.5"
 */
export const checkInteger = (value: unknown, min: number, max: number): string | undefined => {
  if (typeof value !== "number") return `Expected number, got ${show(value)}`
  // Schema.Int is a safe integer: NaN, infinities and 2^53 + 2 are not.
  if (!Number.isSafeInteger(value)) return `Expected an integer, got ${show(value)}`
  if (value < min || value > max) return `Expected a value between ${min} and ${max}, got ${show(value)}`
  return undefined
}

const show = (value: unknown): string => typeof value === "string" ? JSON.stringify(value) : String(value)

// Every problem of a complete options record, one "<field>: <problem>" each.
const problemsOf = (input: Record<string, unknown>): Array<string> => {
  const problems: Array<string> = []
  for (const name in integerRanges) {
    const [min, max] = integerRanges[name as keyof typeof integerRanges]
    const problem = checkInteger(input[name], min, max)
    if (problem !== undefined) problems.push(`${name}: ${problem}`)
  }
  if (!backpressurePolicies.includes(input.backpressure as ServerOptions["backpressure"])) {
    problems.push(`backpressure: Expected "suspend" | "drop" | "close", got ${show(input.backpressure)}`)
  }
  return problems
}

// The decoded options: exactly the known fields, in their order (other keys, such as hooks, stay out).
const pick = (input: Record<string, unknown>): ServerOptions => {
  const out: Record<string, unknown> = {}
  for (const name in defaultOptions) out[name] = input[name]
  return out as unknown as ServerOptions
}

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

/** Merge user options over the defaults and validate them (throws an {@link InvalidOptionsError} on bad input, at startup). */
export const decodeOptions = (options: Partial<ServerOptions> = {}): ServerOptions => {
  const merged = { ...defaultOptions, ...options } as Record<string, unknown>
  const problems = problemsOf(merged)
  if (problems.length > 0) throw new InvalidOptionsError({ detail: problems.join("; ") })
  return pick(merged)
}

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
  Effect.suspend(() => {
    const { input, problems: durationProblems } = withMillis(given)
    const problems = [...durationProblems]
    const defined = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined))
    const merged = { ...defaultOptions, ...defined }
    problems.push(...problemsOf(merged))
    if (input.shutdownTimeoutMs !== undefined) {
      const problem = checkInteger(input.shutdownTimeoutMs, 0, 3_600_000)
      if (problem !== undefined) {
        problems.push(`shutdownTimeoutMs: Expected an integer between 0 and 3600000, got ${show(input.shutdownTimeoutMs)}`)
      }
    }
    const deflate = input.perMessageDeflate
    if (deflate !== undefined && typeof deflate !== "boolean") {
      const resolved = resolveDeflateOptions(deflate)
      if (resolved._tag === "Error") problems.push(`perMessageDeflate: ${resolved.error.detail}`)
    }
    if (problems.length === 0) return Effect.succeed(pick(merged))
    return Effect.fail(new InvalidOptionsError({ detail: problems.join("; ") }))
  })
