/**
 * permessage-deflate negotiation (RFC 7692 §5, §7.1): pure, no zlib here.
 * The zlib side lives in services/Compression.ts.
 *
 * @example
 * import { parseExtensions } from "./Extensions.ts"
 * const parsed = parseExtensions("permessage-deflate; client_max_window_bits")
 * if (parsed._tag === "Ok") negotiate(parsed.offers)?.response // "permessage-deflate"
 */
import * as Data from "effect/Data"
import { formatExtension } from "./Extensions.ts"
import type { ExtensionOffer } from "./Extensions.ts"

/** The registered extension name (RFC 7692 §7). */
export const extensionName = "permessage-deflate"

/** Server-side settings. Every field has a safe default ({@link defaultDeflateOptions}). */
export interface DeflateOptions {
  /** Ask to reset our own compressor after each message (less memory kept between messages, worse ratio). */
  readonly serverNoContextTakeover: boolean
  /** Ask the client to reset its compressor after each message. */
  readonly clientNoContextTakeover: boolean
  /** 9..15: the largest LZ77 window we compress with (8 is impossible with zlib, RFC7692-NOTES). */
  readonly serverMaxWindowBits: number
  /** 8..15 or undefined: ask the client to limit its window; only sent if the client offered `client_max_window_bits`. */
  readonly clientMaxWindowBits: number | undefined
  /** zlib level 0..9. */
  readonly level: number
  /** zlib memLevel 1..9 (deflate state is ~2^(memLevel+9) bytes on top of the window). */
  readonly memLevel: number
  /** Messages shorter than this many bytes are sent uncompressed (RFC 7692 §6.1 allows RSV1 = 0). */
  readonly threshold: number
  /**
   * zlib slices (64 KiB of input each) running at once process-wide, shared
   * round-robin between connections (see CompressionLimiter). At most the
   * libuv thread pool size (4 unless UV_THREADPOOL_SIZE says otherwise) is
   * useful: more only queue inside libuv, where no one is fair.
   */
  readonly concurrency: number
  /**
   * Connections compressing at once process-wide; past it the offer is
   * declined and the connection proceeds uncompressed (RFC 7692 §5: a decline
   * is not a failure). Bounds zlib memory (~300 KiB per busy connection).
   * 0 = no cap.
   */
  readonly maxCompressingConnections: number
  /**
   * Release a connection's zlib state after this many ms without a compressed
   * message either way (0 = never); recreated on the next one. The deflater is
   * always released; the inflater only when `client_no_context_takeover` was
   * agreed (its window is otherwise still needed, RFC 7692 §7.2.3): set
   * `clientNoContextTakeover` for idle connections to cost no zlib memory.
   */
  readonly idleReleaseMs: number
}

/**
 * Defaults. `level: 1` rather than zlib's default 6 (what `ws` uses): on
 * WebSocket-sized messages level 1 keeps most of the ratio for a fraction
 * of the CPU (measured in the report of issue 4); raise it per server if
 * bandwidth matters more than CPU.
 */
export const defaultDeflateOptions: DeflateOptions = {
  serverNoContextTakeover: false,
  clientNoContextTakeover: false,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: undefined,
  level: 1,
  memLevel: 8,
  threshold: 1024,
  concurrency: 4,
  maxCompressingConnections: 1024,
  idleReleaseMs: 30_000
}

/**
 * What was agreed, as zlib settings. `serverMaxWindowBits` is the window we
 * compress with; `clientMaxWindowBits` the window we inflate the client's
 * data with: 15 when the response did not limit the client, and never below 9
 * (an agreed 8 is inflated with 9: a larger inflate window is always safe, and
 * zlib-based clients told 8 actually deflate with 9).
 */
export interface DeflateParams {
  readonly serverNoContextTakeover: boolean
  readonly clientNoContextTakeover: boolean
  readonly serverMaxWindowBits: number
  readonly clientMaxWindowBits: number
}

/** Options outside their ranges: a configuration mistake, reported once at startup. */
export class InvalidDeflateOptions extends Data.TaggedError("InvalidDeflateOptions")<{
  readonly detail: string
}> {
  override get message(): string {
    return `invalid permessage-deflate options: ${this.detail}`
  }
}

const inRange = (n: number, lo: number, hi: number) => Number.isInteger(n) && n >= lo && n <= hi

/**
 * Merge partial options over the defaults and check every range.
 *
 * @example
 * resolveDeflateOptions({ level: 6 }) // { _tag: "Ok", options: { ...defaultDeflateOptions, level: 6 } }
 * resolveDeflateOptions({ serverMaxWindowBits: 8 })._tag // "Error"
 */
export const resolveDeflateOptions = (
  options: Partial<DeflateOptions> = {}
): { readonly _tag: "Ok"; readonly options: DeflateOptions } | { readonly _tag: "Error"; readonly error: InvalidDeflateOptions } => {
  const o: DeflateOptions = { ...defaultDeflateOptions, ...stripUndefined(options) }
  const fail = (detail: string) => ({ _tag: "Error" as const, error: new InvalidDeflateOptions({ detail }) })
  if (!inRange(o.serverMaxWindowBits, 9, 15)) return fail(`serverMaxWindowBits ${o.serverMaxWindowBits} not in 9..15`)
  if (o.clientMaxWindowBits !== undefined && !inRange(o.clientMaxWindowBits, 8, 15)) {
    return fail(`clientMaxWindowBits ${o.clientMaxWindowBits} not in 8..15`)
  }
  if (!inRange(o.level, 0, 9)) return fail(`level ${o.level} not in 0..9`)
  if (!inRange(o.memLevel, 1, 9)) return fail(`memLevel ${o.memLevel} not in 1..9`)
  if (!(Number.isInteger(o.threshold) && o.threshold >= 0)) return fail(`threshold ${o.threshold} is not a size`)
  if (!inRange(o.concurrency, 1, 1024)) return fail(`concurrency ${o.concurrency} not in 1..1024`)
  if (!inRange(o.maxCompressingConnections, 0, 2 ** 31 - 1)) {
    return fail(`maxCompressingConnections ${o.maxCompressingConnections} is not a count`)
  }
  if (!inRange(o.idleReleaseMs, 0, 86_400_000)) return fail(`idleReleaseMs ${o.idleReleaseMs} not in 0..86400000`)
  return { _tag: "Ok", options: o }
}

// `{ level: undefined }` means "the default", not "no level"
const stripUndefined = (o: Partial<DeflateOptions>): Partial<DeflateOptions> =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<DeflateOptions>

// RFC 7692 §7.1.2.1: 1*DIGIT 8..15, no leading zeros
const parseWindowBits = (value: string | true): number | undefined =>
  typeof value === "string" && /^(?:[89]|1[0-5])$/.test(value) ? Number(value) : undefined

interface Offered {
  readonly serverNoContextTakeover: boolean
  readonly clientNoContextTakeover: boolean
  readonly serverMaxWindowBits: number | undefined
  /** undefined: not offered; true: offered without a value */
  readonly clientMaxWindowBits: number | true | undefined
}

/** Validate one offer's parameters (RFC 7692 §7, §7.1); undefined = decline it. */
const readOffer = (offer: ExtensionOffer): Offered | undefined => {
  if (offer.name.toLowerCase() !== extensionName) return undefined
  const seen = new Set<string>()
  let serverNoContextTakeover = false
  let clientNoContextTakeover = false
  let serverMaxWindowBits: number | undefined
  let clientMaxWindowBits: number | true | undefined
  for (const [rawName, value] of offer.params) {
    const name = rawName.toLowerCase()
    if (seen.has(name)) return undefined // §7: the same parameter twice
    seen.add(name)
    switch (name) {
      case "server_no_context_takeover": // §7.1.1.1: no value
        if (value !== true) return undefined
        serverNoContextTakeover = true
        break
      case "client_no_context_takeover": // §7.1.1.2: no value
        if (value !== true) return undefined
        clientNoContextTakeover = true
        break
      case "server_max_window_bits": { // §7.1.2.1: value required
        const bits = parseWindowBits(value)
        // zlib cannot deflate with a 256-byte window; answering 9 would break the agreement
        if (bits === undefined || bits === 8) return undefined
        serverMaxWindowBits = bits
        break
      }
      case "client_max_window_bits": { // §7.1.2.2: value optional
        if (value === true) {
          clientMaxWindowBits = true
        } else {
          const bits = parseWindowBits(value)
          if (bits === undefined) return undefined
          clientMaxWindowBits = bits
        }
        break
      }
      default:
        return undefined // §7: a parameter not defined for offers
    }
  }
  return { serverNoContextTakeover, clientNoContextTakeover, serverMaxWindowBits, clientMaxWindowBits }
}

/** The agreed parameters and the Sec-WebSocket-Extensions value to answer with. */
export interface Negotiated {
  readonly params: DeflateParams
  readonly response: string
}

const agree = (offered: Offered, o: DeflateOptions): Negotiated => {
  // §7.1.1.1: MUST answer server_no_context_takeover if offered; MAY add it
  const serverNoContextTakeover = offered.serverNoContextTakeover || o.serverNoContextTakeover
  // §7.1.1.2: the offer is the client's promise to reset; echoing it makes
  // it binding at no cost to the client, and lets us reset our inflater too
  const clientNoContextTakeover = offered.clientNoContextTakeover || o.clientNoContextTakeover
  // §7.1.2.1: if offered, answer a value <= N; MAY add it when not offered
  const serverMaxWindowBits = Math.min(offered.serverMaxWindowBits ?? 15, o.serverMaxWindowBits)
  const sendServerMax = offered.serverMaxWindowBits !== undefined || o.serverMaxWindowBits < 15
  // §7.1.2.2: MUST NOT answer client_max_window_bits unless offered; the
  // value is <= the offered one (15 when offered without a value). An offered
  // value is echoed so the limit binds and we may inflate with a smaller window.
  let clientBits: number | undefined
  if (offered.clientMaxWindowBits !== undefined) {
    const cap = offered.clientMaxWindowBits === true ? 15 : offered.clientMaxWindowBits
    if (o.clientMaxWindowBits !== undefined) clientBits = Math.min(cap, o.clientMaxWindowBits)
    else if (offered.clientMaxWindowBits !== true) clientBits = cap
  }

  const params: Array<readonly [string, string | true]> = []
  if (serverNoContextTakeover) params.push(["server_no_context_takeover", true])
  if (clientNoContextTakeover) params.push(["client_no_context_takeover", true])
  if (sendServerMax) params.push(["server_max_window_bits", String(serverMaxWindowBits)])
  if (clientBits !== undefined) params.push(["client_max_window_bits", String(clientBits)])

  return {
    params: {
      serverNoContextTakeover,
      clientNoContextTakeover,
      serverMaxWindowBits,
      clientMaxWindowBits: clientBits === undefined ? 15 : Math.max(clientBits, 9)
    },
    response: formatExtension({ name: extensionName, params })
  }
}

/**
 * Accept the first acceptable permessage-deflate offer (RFC 7692 §5, §7.1):
 * returns the agreed params and the Sec-WebSocket-Extensions response value,
 * or undefined (decline: answer without the extension). Offers of other
 * extensions are skipped. Invalid options are a defect (throws
 * {@link InvalidDeflateOptions}): check them once with {@link resolveDeflateOptions}.
 *
 * @example
 * negotiate([{ name: "permessage-deflate", params: [["server_max_window_bits", "10"]] }])
 * // { params: { serverMaxWindowBits: 10, clientMaxWindowBits: 15, ... },
 * //   response: "permessage-deflate; server_max_window_bits=10" }
 */
export const negotiate = (
  offers: ReadonlyArray<ExtensionOffer>,
  options?: Partial<DeflateOptions>
): Negotiated | undefined => {
  const resolved = resolveDeflateOptions(options)
  if (resolved._tag === "Error") throw resolved.error
  for (const offer of offers) {
    const offered = readOffer(offer)
    if (offered !== undefined) return agree(offered, resolved.options)
  }
  return undefined
}
