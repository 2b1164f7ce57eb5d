/**
 * Admission before the handshake: a server-wide cap on connections. A
 * connection over the cap costs one canned `503 Service Unavailable` with
 * `Retry-After` (RFC 9110 §15.6.4, §10.2.3) and no parsing at all, so a flood
 * cannot make the server do more per connection than accept, write, close.
 *
 * @example
 * const admission = Admission.make(Admission.decodeAdmissionOptions({ maxConnections: 10_000 }))
 * const run = Reactor.make(app, server, deflate, admission) // counts, and refuses over the cap
 */
import { readFileSync } from "node:fs"
import * as Effect from "effect/Effect"
import type { Hooks } from "./App.ts"
import { checkInteger, InvalidOptionsError } from "./Options.ts"
import type { Incoming } from "./Transport.ts"

/** Validated admission settings (see {@link decodeAdmissionOptions} for the defaults). */
export interface AdmissionOptions {
  /** Connections (handshaking or open) at once; the next one gets 503. 0 = no cap (the fd limit is the cap). */
  readonly maxConnections: number
  /** The `Retry-After` a refused client is told, in seconds. */
  readonly retryAfterSeconds: number
  /** How long a refused connection may take to go away after our FIN. */
  readonly lingerMs: number
}

// Checked by hand, not with effect/Schema: loading Schema costs every full GC ~4 MB more live heap.
const ranges = { maxConnections: [0, 10_000_000], retryAfterSeconds: [0, 86_400], lingerMs: [0, 60_000] } as const

/** Merge over the defaults (no cap, Retry-After 5 s, 2 s linger) and validate; throws an InvalidOptionsError at startup. */
export const decodeAdmissionOptions = (
  options: { readonly [K in keyof AdmissionOptions]?: AdmissionOptions[K] | undefined } = {}
): AdmissionOptions => {
  const decoded: AdmissionOptions = {
    maxConnections: options.maxConnections ?? 0,
    retryAfterSeconds: options.retryAfterSeconds ?? 5,
    lingerMs: options.lingerMs ?? 2_000
  }
  const problems: Array<string> = []
  for (const name of ["maxConnections", "retryAfterSeconds", "lingerMs"] as const) {
    const problem = checkInteger(decoded[name], ranges[name][0], ranges[name][1])
    if (problem !== undefined) problems.push(`${name}: ${problem}`)
  }
  if (problems.length > 0) throw new InvalidOptionsError({ detail: problems.join("; ") })
  return decoded
}

// Refusals in progress at most (an eighth of the cap, 8 to 256): beyond, a connection is dropped
// without the 503, so a flood cannot hold more descriptors lingering than this.
const refusingBound = (maxConnections: number) => Math.min(256, Math.max(8, Math.floor(maxConnections / 8)))

/**
 * A cap that keeps the process below its descriptor limit: libuv answers
 * EMFILE by resetting the connections it cannot accept and Node hears
 * nothing, so the only dependable answer is not to get there. Leaves 64
 * descriptors for the process itself and room for the lingering refusals.
 *
 * @example
 * capForFdLimit(1024) // 845
 */
export const capForFdLimit = (fdLimit: number): number => {
  const usable = Math.max(1, fdLimit - 64)
  return Math.max(1, Math.min(10_000, Math.floor((usable * 8) / 9) - 8))
}

/** The soft `RLIMIT_NOFILE` of this process (Linux: `/proc/self/limits`), if it can be read. */
export const fdLimit = (): number | undefined => {
  try {
    const line = readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max open files"))
    const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0]
    const n = soft === undefined ? NaN : Number(soft)
    return Number.isSafeInteger(n) && n > 0 ? n : undefined
  } catch {
    return undefined
  }
}

export interface Admission {
  /** Connections counted now (from accept to the end of their fiber). */
  readonly active: () => number
  /** Count a new connection in: false (nothing counted) when the cap is reached. */
  readonly enter: () => boolean
  /** A counted connection ended. */
  readonly leave: () => void
  /** Refuse a connection over the cap: the 503, or a plain drop when too many refusals linger already. */
  readonly refuse: (incoming: Incoming, hooks: Hooks) => Effect.Effect<void>
}

const encoder = new TextEncoder()

/** The 503 a refused connection gets, before any byte of its request is read. */
export const busyResponse = (retryAfterSeconds: number): Uint8Array => {
  const body = "server busy: too many connections\n"
  return encoder.encode(
    "HTTP/1.1 503 Service Unavailable\r\n" +
      `Retry-After: ${retryAfterSeconds}\r\n` +
      "Content-Type: text/plain; charset=utf-8\r\n" +
      `Content-Length: ${body.length}\r\n` +
      "Connection: close\r\n\r\n" +
      body
  )
}

/**
 * Write the 503, half-close, and drop the socket once the peer closed or after
 * `lingerMs`. Reading (and discarding) until then matters: closing a socket
 * with unread request bytes sends a reset, which can destroy the 503 in flight.
 */
export const refuse = (incoming: Incoming, response: Uint8Array, lingerMs: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    let timer: ReturnType<typeof setTimeout> | undefined
    const done = () => {
      if (timer === undefined) return
      clearTimeout(timer)
      timer = undefined
      incoming.destroy()
      resume(Effect.void)
    }
    timer = setTimeout(done, lingerMs)
    incoming.listen(() => {}, done)
    incoming.write([response])
    incoming.end()
    return Effect.sync(done)
  })

/**
 * An admission counter.
 *
 * @example
 * const admission = Admission.make(Admission.decodeAdmissionOptions({ maxConnections: 2 }))
 */
export const make = (options: AdmissionOptions): Admission => {
  let active = 0
  let refusing = 0
  const maxRefusing = refusingBound(options.maxConnections)
  const response = busyResponse(options.retryAfterSeconds)
  return {
    active: () => active,
    enter: () => {
      if (options.maxConnections > 0 && active >= options.maxConnections) return false
      active++
      return true
    },
    leave: () => {
      active--
    },
    refuse: (incoming, hooks) =>
      Effect.suspend(() => {
        hooks.onHandshake?.(503)
        if (refusing >= maxRefusing) return Effect.sync(() => incoming.destroy())
        refusing++
        return Effect.ensuring(refuse(incoming, response, options.lingerMs), Effect.sync(() => void refusing--))
      })
  }
}
