/**
 * Sec-WebSocket-Extensions header lists (RFC 6455 §9.1, RFC 7692 §5).
 *
 *   extension-list = 1#extension
 *   extension      = extension-token *( ";" extension-param )
 *   extension-param = token [ "=" ( token / quoted-string ) ]
 *
 * Whitespace (SP / HTAB) is allowed around every separator (the RFC uses the
 * implied linear whitespace of RFC 2616). Empty list elements (", a,,b") are
 * skipped (RFC 9110 §5.6.1) but at least one extension must be present.
 * A quoted value must unescape to a token (RFC 6455 §9.1).
 * Extension names and parameter names are lowercased so the negotiator can
 * compare them directly; values are kept as sent (unquoted).
 */

/** One offered (or accepted) extension with its parameters in order. */
export interface ExtensionOffer {
  readonly name: string
  readonly params: ReadonlyArray<readonly [name: string, value: string | true]>
}

/** Result of {@link parseExtensions}. */
export type ParseExtensionsResult =
  | { readonly _tag: "Ok"; readonly offers: ReadonlyArray<ExtensionOffer> }
  | { readonly _tag: "Error"; readonly detail: string }

// RFC 9110 §5.6.2 tchar
const TCHAR = new Uint8Array(128)
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TCHAR[c.charCodeAt(0)] = 1
}

/** True for a code unit that may appear in an RFC 9110 token. */
export const isTokenChar = (code: number): boolean => code < 128 && TCHAR[code] === 1

/** True when `s` is a non-empty RFC 9110 token. `isToken("permessage-deflate") === true` */
export const isToken = (s: string): boolean => {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) {
    if (!isTokenChar(s.charCodeAt(i))) return false
  }
  return true
}

const isWs = (c: number) => c === 0x20 || c === 0x09

/**
 * Parse a Sec-WebSocket-Extensions value. Several header lines are one list:
 * join them with ", " first (as `header()` in Handshake.ts does).
 *
 * @example
 * parseExtensions("permessage-deflate; client_max_window_bits, x-foo")
 * // { _tag: "Ok", offers: [
 * //   { name: "permessage-deflate", params: [["client_max_window_bits", true]] },
 * //   { name: "x-foo", params: [] } ] }
 */
export const parseExtensions = (headerValue: string): ParseExtensionsResult => {
  const s = headerValue
  const n = s.length
  let i = 0
  const offers: Array<ExtensionOffer> = []

  const skipWs = () => {
    while (i < n && isWs(s.charCodeAt(i))) i++
  }
  const readToken = (): string => {
    const start = i
    while (i < n && isTokenChar(s.charCodeAt(i))) i++
    return s.slice(start, i)
  }
  const fail = (detail: string): ParseExtensionsResult => ({ _tag: "Error", detail })
  const at = () => (i < n ? `'${s[i]}' at ${i}` : "end of value")

  // RFC 9110 §5.6.4 quoted-string; returns undefined when malformed
  const readQuoted = (): string | undefined => {
    i++ // opening DQUOTE
    let out = ""
    while (i < n) {
      const c = s.charCodeAt(i)
      if (c === 0x22) {
        i++
        return out
      }
      if (c === 0x5c) {
        const next = i + 1 < n ? s.charCodeAt(i + 1) : -1
        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
        if (next === 0x09 || (next >= 0x20 && next !== 0x7f && next <= 0xff)) {
          out += s[i + 1]
          i += 2
          continue
        }
        return undefined
      }
      // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
      if (c === 0x09 || (c >= 0x20 && c !== 0x7f && c <= 0xff)) {
        out += s[i]
        i++
        continue
      }
      return undefined
    }
    return undefined
  }

  while (true) {
    skipWs()
    if (i >= n) break
    if (s.charCodeAt(i) === 0x2c) {
      i++ // empty list element
      continue
    }
    const name = readToken()
    if (name.length === 0) return fail(`expected an extension name, found ${at()}`)
    const params: Array<readonly [string, string | true]> = []
    skipWs()
    while (i < n && s.charCodeAt(i) === 0x3b) {
      i++
      skipWs()
      const pname = readToken()
      if (pname.length === 0) return fail(`expected a parameter name in '${name}', found ${at()}`)
      skipWs()
      if (i < n && s.charCodeAt(i) === 0x3d) {
        i++
        skipWs()
        let value: string | undefined
        if (i < n && s.charCodeAt(i) === 0x22) {
          value = readQuoted()
          if (value === undefined) return fail(`bad quoted value for '${pname}' in '${name}'`)
          // RFC 6455 §9.1: the unescaped value must itself be a token
          if (!isToken(value)) return fail(`quoted value for '${pname}' in '${name}' is not a token`)
        } else {
          value = readToken()
          if (value.length === 0) return fail(`expected a value for '${pname}' in '${name}', found ${at()}`)
        }
        params.push([pname.toLowerCase(), value])
        skipWs()
      } else {
        params.push([pname.toLowerCase(), true])
      }
    }
    offers.push({ name: name.toLowerCase(), params })
    if (i >= n) break
    if (s.charCodeAt(i) !== 0x2c) return fail(`expected ',' or ';' after '${name}', found ${at()}`)
    i++
  }
  if (offers.length === 0) return fail("empty extension list")
  return { _tag: "Ok", offers }
}

const quote = (v: string): string => `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`

/**
 * Format one extension for a header value. Values that are not tokens are
 * sent as quoted-strings.
 *
 * @example
 * formatExtension({ name: "permessage-deflate", params: [["client_max_window_bits", "10"]] })
 * // "permessage-deflate; client_max_window_bits=10"
 */
export const formatExtension = (offer: ExtensionOffer): string => {
  let out = offer.name
  for (const [name, value] of offer.params) {
    out += value === true ? `; ${name}` : `; ${name}=${isToken(value) ? value : quote(value)}`
  }
  return out
}

/** Format a list of extensions: `formatExtensions([a, b]) === "a, b"`. */
export const formatExtensions = (offers: ReadonlyArray<ExtensionOffer>): string =>
  offers.map(formatExtension).join(", ")
