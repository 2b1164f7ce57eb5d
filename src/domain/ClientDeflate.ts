/**
 * permessage-deflate from the client's side (RFC 7692 §5, §7.1): the offer a
 * client sends, and the check of the server's answer. Pure, like
 * `PerMessageDeflate` (the server's side); zlib lives in services/Compression.ts.
 *
 * The agreed parameters come back as `DeflateParams` *from this end's point
 * of view*, the shape `Compression.makeCompressor` takes: `serverMaxWindowBits`
 * / `serverNoContextTakeover` describe the direction we compress (for a client,
 * the RFC's `client_*` parameters), `clientMaxWindowBits` /
 * `clientNoContextTakeover` the direction we inflate (the RFC's `server_*`).
 *
 * @example
 * const offer = clientOffer(defaultDeflateOptions) // "permessage-deflate; client_max_window_bits"
 * const answer = parseExtensions("permessage-deflate; server_no_context_takeover")
 * if (answer._tag === "Ok") acceptAnswer(answer.offers, defaultDeflateOptions)
 * // { _tag: "Agreed", params: { ..., clientNoContextTakeover: true } }
 */
import type { ExtensionOffer } from "./Extensions.ts"
import { formatExtension } from "./Extensions.ts"
import { type DeflateOptions, type DeflateParams, extensionName } from "./PerMessageDeflate.ts"

/**
 * The Sec-WebSocket-Extensions offer for `options` (read from the client's
 * side): `client_max_window_bits` is always offered (§7.1.2.2: we can
 * compress with any window the server asks for), with a value when
 * `clientMaxWindowBits` is set; `server_max_window_bits` only when
 * `serverMaxWindowBits` < 15; the no-context-takeover flags when set.
 */
export const clientOffer = (options: DeflateOptions): string => {
  const params: Array<readonly [string, string | true]> = []
  if (options.serverNoContextTakeover) params.push(["server_no_context_takeover", true])
  if (options.clientNoContextTakeover) params.push(["client_no_context_takeover", true])
  if (options.serverMaxWindowBits < 15) params.push(["server_max_window_bits", String(options.serverMaxWindowBits)])
  params.push([
    "client_max_window_bits",
    options.clientMaxWindowBits === undefined ? true : String(options.clientMaxWindowBits)
  ])
  return formatExtension({ name: extensionName, params })
}

/** The server's answer: no extension, the agreed parameters, or why the answer is invalid. */
export type Answer =
  | { readonly _tag: "None" }
  | { readonly _tag: "Agreed"; readonly params: DeflateParams }
  | { readonly _tag: "Invalid"; readonly detail: string }

// RFC 7692 §7.1.2: 1*DIGIT 8..15, no leading zeros
const windowBits = (value: string | true): number | undefined =>
  typeof value === "string" && /^(?:[89]|1[0-5])$/.test(value) ? Number(value) : undefined

/**
 * Check the server's extensions against what `offered` (undefined: nothing
 * was offered). RFC 6455 §9.1: an extension not offered fails the connection;
 * RFC 7692 §7.1: an unknown or repeated parameter, a value where none is
 * allowed, a window larger than offered, or `client_max_window_bits` when it
 * was not offered (we always offer it) fails it too. An agreed client window
 * of 8 is refused: zlib cannot deflate with a 256-byte window.
 */
export const acceptAnswer = (answer: ReadonlyArray<ExtensionOffer>, offered: DeflateOptions | undefined): Answer => {
  if (answer.length === 0) return { _tag: "None" }
  if (offered === undefined) return invalid(`server answered extension '${answer[0]!.name}' that was not offered`)
  if (answer.length > 1) return invalid("server answered more than one extension; only permessage-deflate was offered")
  const ext = answer[0]!
  if (ext.name.toLowerCase() !== extensionName) return invalid(`server answered extension '${ext.name}' that was not offered`)
  const seen = new Set<string>()
  let serverNoContextTakeover = false
  let clientNoContextTakeover = false
  let serverBits = 15
  let clientBits = 15
  for (const [rawName, value] of ext.params) {
    const name = rawName.toLowerCase()
    if (seen.has(name)) return invalid(`parameter ${name} repeated`)
    seen.add(name)
    switch (name) {
      case "server_no_context_takeover": // §7.1.1.1
        if (value !== true) return invalid("server_no_context_takeover takes no value")
        serverNoContextTakeover = true
        break
      case "client_no_context_takeover": // §7.1.1.2
        if (value !== true) return invalid("client_no_context_takeover takes no value")
        clientNoContextTakeover = true
        break
      case "server_max_window_bits": { // §7.1.2.1: at most what we offered, if we offered it
        const bits = windowBits(value)
        if (bits === undefined) return invalid(`server_max_window_bits=${String(value)} is not 8..15`)
        if (bits > offered.serverMaxWindowBits) {
          return invalid(`server_max_window_bits=${bits} exceeds the offered ${offered.serverMaxWindowBits}`)
        }
        serverBits = bits
        break
      }
      case "client_max_window_bits": { // §7.1.2.2: a value is required in a response, at most the offered one
        const bits = windowBits(value)
        if (bits === undefined) return invalid(`client_max_window_bits=${String(value)} is not 8..15`)
        if (offered.clientMaxWindowBits !== undefined && bits > offered.clientMaxWindowBits) {
          return invalid(`client_max_window_bits=${bits} exceeds the offered ${offered.clientMaxWindowBits}`)
        }
        if (bits === 8) return invalid("client_max_window_bits=8 is not supported (zlib deflates with 9 at least)")
        clientBits = bits
        break
      }
      default:
        return invalid(`unknown parameter ${name}`)
    }
  }
  // §7.1.1.1: a server_no_context_takeover we offered must be in the answer.
  if (offered.serverNoContextTakeover && !serverNoContextTakeover) {
    return invalid("server_no_context_takeover was offered but not answered")
  }
  return {
    _tag: "Agreed",
    params: {
      // We compress with the client window and reset when client_no_context_takeover was agreed
      // (or we chose to); we inflate with the server window (never below 9: a larger inflate window is safe).
      serverMaxWindowBits: Math.min(clientBits, offered.clientMaxWindowBits ?? 15),
      serverNoContextTakeover: clientNoContextTakeover || offered.clientNoContextTakeover,
      clientMaxWindowBits: Math.max(serverBits, 9),
      clientNoContextTakeover: serverNoContextTakeover
    }
  }
}

const invalid = (detail: string): Answer => ({ _tag: "Invalid", detail })
