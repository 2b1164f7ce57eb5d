/**
 * The WebSocket opening handshake, sans I/O (RFC 6455 §4, RFC 9112 for HTTP/1.1).
 *
 * Choices (documented once, tested in test/domain/Handshake.test.ts):
 * - Parsing: lines end with CRLF; a bare LF is accepted too (RFC 9112 §2.2
 *   allows it). A CR anywhere else is malformed. Empty lines before the
 *   start line are skipped (RFC 9112 §2.2). obs-fold is rejected (§5.2).
 *   Header bytes are decoded as latin1 (one char per byte, like Node's http).
 * - maxHeaderBytes counts every head byte (start line, fields, blank line,
 *   skipped leading empty lines); the byte that would exceed it fails with 431
 *   at once, so at most maxHeaderBytes bytes are ever buffered.
 * - validateUpgrade: method ≠ GET → 405 (with `Allow: GET`); HTTP/1.0 → 400,
 *   HTTP/2+ → 505; missing, repeated or empty Host → 400; missing or wrong
 *   Sec-WebSocket-Version → 426 with `Sec-WebSocket-Version: 13` (§4.2.2, §4.4).
 * - A syntactically bad Sec-WebSocket-Extensions header is not a failure: the
 *   request is treated as offering no extensions (RFC 6455 §9.1 leaves the
 *   reaction open; answering without extensions always interoperates).
 * - Response builders never throw. A header whose name is not a token or whose
 *   value contains CR, LF or NUL is dropped (response splitting); required
 *   values (Host, key, path) have such characters removed or escaped instead.
 *   Extra headers that name a header the builder manages itself are dropped.
 */
import * as Crypto from "node:crypto"
import * as Data from "effect/Data"
import { isToken, parseExtensions } from "./Extensions.ts"
import type { ExtensionOffer } from "./Extensions.ts"

export type { ExtensionOffer } from "./Extensions.ts"

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

type Headers = ReadonlyArray<readonly [string, string]>

/** A parsed HTTP/1.1 request head. */
export interface HttpRequest {
  readonly method: string
  readonly target: string
  readonly path: string
  readonly query: string
  readonly version: string
  readonly headers: ReadonlyArray<readonly [name: string, value: string]>
}

/** A parsed HTTP/1.1 response head (what a client reads). */
export interface HttpResponseHead {
  readonly status: number
  readonly reason: string
  readonly version: string
  readonly headers: ReadonlyArray<readonly [string, string]>
}

// Header lookups run a dozen times per handshake over every header: they compare names in
// place (ASCII case folding, length first) instead of lowercasing a copy of each name.
const sameName = (name: string, lower: string): boolean =>
  name.length === lower.length && sameAt(name, 0, lower)

// `text` from `at` holds `lower` (ASCII case-insensitive); the caller checked the length.
const sameAt = (text: string, at: number, lower: string): boolean => {
  for (let i = 0; i < lower.length; i++) {
    const c = text.charCodeAt(at + i)
    if ((c >= 0x41 && c <= 0x5a ? c + 0x20 : c) !== lower.charCodeAt(i)) return false
  }
  return true
}

/** Every value of a header, case-insensitive name, in order. */
const headerValues = (message: { readonly headers: Headers }, name: string): Array<string> => {
  const lower = name.toLowerCase()
  const out: Array<string> = []
  const headers = message.headers
  for (let i = 0; i < headers.length; i++) {
    if (sameName(headers[i]![0], lower)) out.push(headers[i]![1])
  }
  return out
}

/**
 * Look a header up by case-insensitive name. Several headers of that name are
 * joined with ", " (RFC 9110 §5.3); undefined if absent.
 *
 * @example
 * header({ headers: [["Upgrade", "websocket"]] }, "upgrade") // "websocket"
 */
export const header = (message: { readonly headers: Headers }, name: string): string | undefined => {
  const lower = name.toLowerCase()
  const headers = message.headers
  let found: string | undefined
  for (let i = 0; i < headers.length; i++) {
    if (!sameName(headers[i]![0], lower)) continue
    if (found !== undefined) return headerValues(message, name).join(", ")
    found = headers[i]![1]
  }
  return found
}

/** Split a comma list into trimmed, non-empty elements (RFC 9110 §5.6.1). */
const commaList = (value: string | undefined): Array<string> =>
  value === undefined ? [] : value.split(",").map((s) => s.trim()).filter((s) => s.length > 0)

const isSpace = (c: number): boolean => c === 0x20 || c === 0x09

/** Does the comma list hold `token` (lowercase), any case? Scanned in place (RFC 9110 §5.6.1). */
const hasToken = (value: string | undefined, token: string): boolean => {
  if (value === undefined) return false
  let start = 0
  while (start <= value.length) {
    let end = value.indexOf(",", start)
    if (end === -1) end = value.length
    let a = start
    let b = end
    while (a < b && isSpace(value.charCodeAt(a))) a++
    while (b > a && isSpace(value.charCodeAt(b - 1))) b--
    if (b - a === token.length && sameAt(value, a, token)) return true
    start = end + 1
  }
  return false
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** Why a handshake was refused. */
export type HandshakeErrorReason =
  | "Malformed"
  | "HeadTooLarge"
  | "MethodNotAllowed"
  | "BadVersion"
  | "MissingHost"
  | "NotUpgrade"
  | "BadKey"
  | "UnsupportedWsVersion"
  | "BadAccept"
  | "BadStatus"

/** HTTP statuses a handshake failure answers with. */
export type HandshakeErrorStatus = 400 | 426 | 431 | 403 | 404 | 405 | 505

/**
 * An opening handshake failed. `status` says how a server answers
 * (see {@link rejectResponse}); client-side failures use 400.
 *
 * @example
 * new HandshakeError({ status: 400, reason: "BadKey", detail: "missing" }).message
 * // "400 BadKey: missing"
 */
export class HandshakeError extends Data.TaggedError("HandshakeError")<{
  readonly status: HandshakeErrorStatus
  readonly reason: HandshakeErrorReason
  readonly detail: string
}> {
  override get message(): string {
    return `${this.status} ${this.reason}: ${this.detail}`
  }
}

const fail = (status: HandshakeErrorStatus, reason: HandshakeErrorReason, detail: string) =>
  new HandshakeError({ status, reason, detail })

// ---------------------------------------------------------------------------
// Incremental head parser (shared by requests and responses)
// ---------------------------------------------------------------------------

/** Parser limits. */
export interface ParserOptions {
  readonly maxHeaderBytes: number
}

/** 16 KiB for the whole head, start line included. */
export const defaultParserOptions: ParserOptions = { maxHeaderBytes: 16384 }

const resolveOptions = (options: Partial<ParserOptions> | undefined): ParserOptions => {
  const max = options?.maxHeaderBytes
  return typeof max === "number" && !Number.isNaN(max) && max >= 1
    ? { maxHeaderBytes: Math.floor(max) }
    : defaultParserOptions
}

/**
 * Bytes of the current unfinished line. Shared between a state and the states
 * derived from it: a state owns `bytes[0, pending)`; appending in place is only
 * allowed when `used === pending` (nobody appended since), else we copy first.
 * So parser states stay persistent values while linear use is O(n).
 */
interface LineBuffer {
  bytes: Uint8Array
  used: number
}

interface Cons {
  readonly head: readonly [string, string]
  readonly tail: Cons | undefined
}

type StartLine =
  | { readonly _tag: "Request"; readonly method: string; readonly target: string; readonly version: string }
  | { readonly _tag: "Response"; readonly version: string; readonly status: number; readonly reason: string }

interface HeadState {
  readonly kind: "request" | "response"
  readonly options: ParserOptions
  /** Head bytes consumed by complete lines. */
  readonly consumed: number
  readonly buffer: LineBuffer | undefined
  readonly pending: number
  readonly start: StartLine | undefined
  readonly headers: Cons | undefined
}

/** Opaque request parser state; feed it with {@link stepRequest}. */
export interface RequestParser {
  readonly _tag: "RequestParser"
  readonly state: HeadState
}

/** Opaque response parser state; feed it with {@link stepResponse}. */
export interface ResponseParser {
  readonly _tag: "ResponseParser"
  readonly state: HeadState
}

type HeadStep =
  | { readonly _tag: "NeedMore"; readonly state: HeadState }
  | {
    readonly _tag: "Done"
    readonly start: StartLine
    readonly headers: Headers
    readonly rest: Uint8Array
    /** The head's text as received, when it came whole in this chunk. */
    readonly raw: string | undefined
  }
  | { readonly _tag: "Invalid"; readonly error: HandshakeError }

const LF = 0x0a
const CR = 0x0d

// Header bytes are read as latin1, as Node's http does. On Node the native decoder; elsewhere by hand.
const latin1: (bytes: Uint8Array) => string = typeof Buffer === "function"
  ? (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("latin1")
  : (bytes) => {
    let out = ""
    for (let i = 0; i < bytes.length; i += 8192) {
      out += String.fromCharCode.apply(null, Array.from(bytes.subarray(i, i + 8192)))
    }
    return out
  }

const append = (buffer: LineBuffer | undefined, pending: number, segment: Uint8Array, max: number): LineBuffer => {
  const need = pending + segment.length
  let buf = buffer
  if (buf === undefined || pending === 0 || buf.used !== pending || buf.bytes.length < need) {
    // fresh line, diverged branch, or too small: (re)allocate, bounded by the limit
    const size = Math.max(need, Math.min(Math.max(64, need * 2), max))
    const bytes = new Uint8Array(size)
    if (buf !== undefined && pending > 0) bytes.set(buf.bytes.subarray(0, pending))
    buf = { bytes, used: pending }
  }
  buf.bytes.set(segment, pending)
  buf.used = need
  return buf
}

const malformed = (detail: string) => fail(400, "Malformed", detail)

const isVchar = (c: number) => c >= 0x21 && c <= 0x7e

/** Bytes allowed in a start line before its end: VCHAR, SP, HTAB, obs-text, CR. */
const badStartByte = (c: number) => c !== 0x20 && c !== 0x09 && c !== CR && (c < 0x20 || c === 0x7f)

const HTTP_VERSION = /^HTTP\/[0-9]\.[0-9]$/

const parseRequestLine = (line: string): StartLine | HandshakeError => {
  // RFC 9112 §3: method SP request-target SP HTTP-version
  const parts = line.split(" ")
  if (parts.length !== 3) return malformed("request line is not 'method SP target SP version'")
  const [method, target, version] = parts as [string, string, string]
  if (!isToken(method)) return malformed("method is not a token")
  if (target.length === 0) return malformed("empty request target")
  for (let i = 0; i < target.length; i++) {
    if (!isVchar(target.charCodeAt(i))) return malformed("invalid character in request target")
  }
  if (!HTTP_VERSION.test(version)) return malformed("bad HTTP version in request line")
  return { _tag: "Request", method, target, version }
}

const parseStatusLine = (line: string): StartLine | HandshakeError => {
  // RFC 9112 §4: HTTP-version SP status-code SP [ reason-phrase ] (a missing last SP is tolerated)
  const m = /^(HTTP\/[0-9]\.[0-9]) ([0-9]{3})(?: ([^]*))?$/.exec(line)
  if (m === null) return malformed("status line is not 'version SP status SP reason'")
  const reason = m[3] ?? ""
  for (let i = 0; i < reason.length; i++) {
    const c = reason.charCodeAt(i)
    if (c !== 0x09 && (c < 0x20 || c === 0x7f)) return malformed("control character in reason phrase")
  }
  return { _tag: "Response", version: m[1]!, status: Number(m[2]), reason }
}

const parseFieldLine = (line: string): readonly [string, string] | HandshakeError => {
  const first = line.charCodeAt(0)
  // RFC 9112 §5.2: obs-fold is rejected with 400
  if (first === 0x20 || first === 0x09) return malformed("obsolete line folding or leading whitespace in a header")
  const colon = line.indexOf(":")
  if (colon <= 0) return malformed("header line without a name and ':'")
  const name = line.slice(0, colon)
  // also rejects whitespace before ':' (RFC 9112 §5.1)
  if (!isToken(name)) return malformed("header name is not a token")
  let start = colon + 1
  let end = line.length
  while (start < end && (line.charCodeAt(start) === 0x20 || line.charCodeAt(start) === 0x09)) start++
  while (end > start && (line.charCodeAt(end - 1) === 0x20 || line.charCodeAt(end - 1) === 0x09)) end--
  const value = line.slice(start, end)
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    // RFC 9110 §5.5: CR, LF and NUL must be rejected
    if (c === 0 || c === CR || c === LF) return malformed(`invalid character in value of header '${name}'`)
  }
  return [name, value]
}

const reverse = (list: Cons | undefined): Array<readonly [string, string]> => {
  const out: Array<readonly [string, string]> = []
  for (let c = list; c !== undefined; c = c.tail) out.push(c.head)
  return out.reverse()
}

const initialState = (kind: "request" | "response", options?: Partial<ParserOptions>): HeadState => ({
  kind,
  options: resolveOptions(options),
  consumed: 0,
  buffer: undefined,
  pending: 0,
  start: undefined,
  headers: undefined
})

const stepHead = (state: HeadState, chunk: Uint8Array): HeadStep => {
  const max = state.options.maxHeaderBytes
  let { consumed, buffer, pending, start, headers } = state
  let segStart = 0
  // Lines that lie whole in this chunk are sliced from one decoding of it (not one Buffer and
  // one native call per line); only bytes that can still be head (under the limit) are decoded.
  let text: string | undefined
  const textEnd = Math.min(chunk.length, max - consumed + pending + 1)
  for (let i = 0; i < chunk.length; i++) {
    const lineLength = pending + (i - segStart)
    // this byte would make the head exceed the limit (RFC 6585 §5)
    if (consumed + lineLength + 1 > max) {
      return { _tag: "Invalid", error: fail(431, "HeadTooLarge", `head exceeds ${max} bytes`) }
    }
    const c = chunk[i]!
    if (c !== LF) {
      // fail fast on binary garbage (e.g. a TLS hello) instead of waiting for the limit
      if (start === undefined && badStartByte(c)) {
        return { _tag: "Invalid", error: malformed(`invalid byte 0x${c.toString(16)} in start line`) }
      }
      continue
    }
    // a complete line: pending bytes + chunk[segStart, i)
    let line: string
    if (pending > 0) {
      const merged = new Uint8Array(lineLength)
      merged.set(buffer!.bytes.subarray(0, pending))
      merged.set(chunk.subarray(segStart, i), pending)
      let end = merged.length
      if (end > 0 && merged[end - 1] === CR) end-- // CRLF, else bare LF (RFC 9112 §2.2)
      line = latin1(merged.subarray(0, end))
    } else {
      let end = i
      if (end > segStart && chunk[end - 1] === CR) end--
      if (text === undefined) text = latin1(chunk.subarray(0, textEnd))
      line = text.slice(segStart, end)
    }
    consumed += lineLength + 1
    pending = 0
    buffer = undefined
    segStart = i + 1
    if (line.includes("\r")) return { _tag: "Invalid", error: malformed("bare CR in head") }
    if (start === undefined) {
      if (line.length === 0) continue // RFC 9112 §2.2: ignore empty lines before the start line
      const parsed = state.kind === "request" ? parseRequestLine(line) : parseStatusLine(line)
      if (parsed instanceof HandshakeError) return { _tag: "Invalid", error: parsed }
      start = parsed
      continue
    }
    if (line.length === 0) {
      // The head as received (the latin1 string already decoded) when the chunk held it and
      // nothing else: a slice of a longer text would keep the bytes after the head alive too.
      const raw = state.consumed === 0 && state.pending === 0 && text !== undefined && i + 1 === text.length
        ? text
        : undefined
      return { _tag: "Done", start, headers: reverse(headers), rest: chunk.subarray(i + 1), raw }
    }
    const field = parseFieldLine(line)
    if (field instanceof HandshakeError) return { _tag: "Invalid", error: field }
    headers = { head: field, tail: headers }
  }
  if (segStart < chunk.length) {
    const segment = chunk.subarray(segStart)
    buffer = append(buffer, pending, segment, max - consumed)
    pending += segment.length
  }
  return { _tag: "NeedMore", state: { kind: state.kind, options: state.options, consumed, buffer, pending, start, headers } }
}

/**
 * A fresh request parser.
 *
 * @example
 * const parser = initialRequestParser({ maxHeaderBytes: 8192 })
 */
export const initialRequestParser = (options?: Partial<ParserOptions>): RequestParser => ({
  _tag: "RequestParser",
  state: initialState("request", options)
})

/** One step of {@link stepRequest}. `rest` is a view of the bytes after the blank line. */
export type RequestStep =
  | { readonly _tag: "NeedMore"; readonly parser: RequestParser }
  | {
    readonly _tag: "Request"
    readonly request: HttpRequest
    readonly rest: Uint8Array
    /** The head's text as received, when it came in one chunk (see {@link requestHeadText}). */
    readonly raw?: string | undefined
  }
  | { readonly _tag: "Invalid"; readonly error: HandshakeError }

/**
 * Feed bytes to a request parser. Never throws; parser states are immutable
 * values. `rest` (a subarray of `chunk`) holds the bytes after the head: they
 * belong to the frame decoder.
 *
 * @example
 * const step = stepRequest(initialRequestParser(), bytes)
 * if (step._tag === "Request") step.request.path // "/chat"
 */
export const stepRequest = (parser: RequestParser, chunk: Uint8Array): RequestStep => {
  const step = stepHead(parser.state, chunk)
  switch (step._tag) {
    case "NeedMore":
      return { _tag: "NeedMore", parser: { _tag: "RequestParser", state: step.state } }
    case "Invalid":
      return step
    case "Done": {
      const start = step.start as Extract<StartLine, { _tag: "Request" }>
      const q = start.target.indexOf("?")
      const request: HttpRequest = {
        method: start.method,
        target: start.target,
        path: q === -1 ? start.target : start.target.slice(0, q),
        query: q === -1 ? "" : start.target.slice(q + 1),
        version: start.version,
        headers: step.headers
      }
      return { _tag: "Request", request, rest: step.rest, raw: step.raw }
    }
  }
}

/**
 * The request head as one latin1 string, as it would be sent: request line,
 * header lines, blank line. `parseRequestHead` reads it back. A live
 * connection keeps this one string instead of the parsed head's strings and
 * arrays, and parses again only if the handler asks.
 *
 * @example
 * formatRequestHead(request) // "GET /chat HTTP/1.1\r\nHost: example.com\r\n...\r\n\r\n"
 */
export const formatRequestHead = (request: HttpRequest): string => {
  // Joined, not concatenated: one flat string, not a rope that keeps every piece alive.
  const parts: Array<string> = [request.method, " ", request.target, " ", request.version, "\r\n"]
  for (let i = 0; i < request.headers.length; i++) {
    const [name, value] = request.headers[i]!
    parts.push(name, ": ", value, "\r\n")
  }
  parts.push("\r\n")
  return parts.join("")
}

/**
 * The request head as one string that starts with "METHOD target ": the text
 * as it was received when there is one (no second copy of it), else
 * {@link formatRequestHead}. `parseRequestHead` reads either back.
 *
 * @example
 * const step = stepRequest(parser, bytes)
 * if (step._tag === "Request") keep(requestHeadText(step.request, step.raw))
 */
export const requestHeadText = (request: HttpRequest, raw: string | undefined): string =>
  raw !== undefined && raw.startsWith(request.method) && raw.charCodeAt(request.method.length) === 0x20 &&
    raw.startsWith(request.target, request.method.length + 1)
    ? raw
    : formatRequestHead(request)

/** Parse a head made by {@link formatRequestHead} (or any complete request head). */
export const parseRequestHead = (head: string): HttpRequest | HandshakeError => {
  const bytes = new Uint8Array(head.length)
  for (let i = 0; i < head.length; i++) bytes[i] = head.charCodeAt(i) & 0xff
  const step = stepRequest(initialRequestParser({ maxHeaderBytes: head.length + 1 }), bytes)
  return step._tag === "Request"
    ? step.request
    : step._tag === "Invalid"
    ? step.error
    : fail(400, "Malformed", "incomplete request head")
}

/** A fresh response parser (client side). */
export const initialResponseParser = (options?: Partial<ParserOptions>): ResponseParser => ({
  _tag: "ResponseParser",
  state: initialState("response", options)
})

/** One step of {@link stepResponse}. */
export type ResponseStep =
  | { readonly _tag: "NeedMore"; readonly parser: ResponseParser }
  | { readonly _tag: "Response"; readonly response: HttpResponseHead; readonly rest: Uint8Array }
  | { readonly _tag: "Invalid"; readonly error: HandshakeError }

/**
 * Feed bytes to a response parser; same rules as {@link stepRequest}.
 *
 * @example
 * const step = stepResponse(initialResponseParser(), bytes)
 * if (step._tag === "Response") step.response.status // 101
 */
export const stepResponse = (parser: ResponseParser, chunk: Uint8Array): ResponseStep => {
  const step = stepHead(parser.state, chunk)
  switch (step._tag) {
    case "NeedMore":
      return { _tag: "NeedMore", parser: { _tag: "ResponseParser", state: step.state } }
    case "Invalid":
      return step
    case "Done": {
      const start = step.start as Extract<StartLine, { _tag: "Response" }>
      const response: HttpResponseHead = {
        status: start.status,
        reason: start.reason,
        version: start.version,
        headers: step.headers
      }
      return { _tag: "Response", response, rest: step.rest }
    }
  }
}

// ---------------------------------------------------------------------------
// Server side: classify and validate (RFC 6455 §4.2.1)
// ---------------------------------------------------------------------------

/** A request that passed {@link validateUpgrade}. */
export interface UpgradeRequest {
  readonly request: HttpRequest
  readonly key: string
  readonly host: string
  readonly origin: string | undefined
  readonly protocols: ReadonlyArray<string>
  readonly extensions: ReadonlyArray<ExtensionOffer>
}

/**
 * Is this request an attempt at a WebSocket upgrade at all? True when an
 * Upgrade header lists "websocket" or a Sec-WebSocket-Key / -Version header is
 * present. A plain GET returns false, so the app can answer it as HTTP.
 *
 * @example
 * isUpgradeAttempt(request) // false for "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
 */
export const isUpgradeAttempt = (request: HttpRequest): boolean =>
  hasToken(header(request, "upgrade"), "websocket") ||
  header(request, "sec-websocket-key") !== undefined ||
  header(request, "sec-websocket-version") !== undefined

// 16 bytes in base64 = 22 significant chars + "==" (RFC 4648 §4). The unused
// low bits of the last char are not checked (RFC 4648 §3.5 makes that optional).
const KEY = /^[A-Za-z0-9+/]{22}==$/

/**
 * Validate a client's opening handshake (RFC 6455 §4.2.1). Checks, in order:
 * GET (405), HTTP/1.1+ (400 for 1.0, 505 for 2+), one non-empty Host (400),
 * Upgrade lists "websocket" (400), Connection lists "upgrade" (400), exactly
 * one Sec-WebSocket-Key that is base64 of 16 bytes (400), and
 * Sec-WebSocket-Version "13" (426, also when missing).
 * A malformed Sec-WebSocket-Extensions header yields `extensions: []`.
 *
 * @example
 * const result = validateUpgrade(request)
 * if (result._tag === "Error") socket.end(rejectResponse(result.error))
 */
export const validateUpgrade = (
  request: HttpRequest
): { readonly _tag: "Ok"; readonly upgrade: UpgradeRequest } | { readonly _tag: "Error"; readonly error: HandshakeError } => {
  const error = (status: HandshakeErrorStatus, reason: HandshakeErrorReason, detail: string) =>
    ({ _tag: "Error", error: fail(status, reason, detail) }) as const
  // §4.2.1 item 1
  if (request.method !== "GET") return error(405, "MethodNotAllowed", `method ${request.method} is not GET`)
  if (request.version !== "HTTP/1.1") {
    const version = /^HTTP\/([0-9])\.([0-9])$/.exec(request.version)
    if (version === null) return error(400, "BadVersion", `bad HTTP version ${request.version}`)
    if (version[1] !== "1") return error(505, "BadVersion", `${request.version} is not supported`)
    if (version[2] === "0") return error(400, "BadVersion", "a WebSocket upgrade needs HTTP/1.1 or higher")
  }
  // §4.2.1 item 2; RFC 9112 §3.2: missing or repeated Host is a 400
  const hosts = headerValues(request, "host")
  if (hosts.length !== 1) return error(400, "MissingHost", hosts.length === 0 ? "missing Host" : "several Host headers")
  const host = hosts[0]!
  if (host.length === 0) return error(400, "MissingHost", "empty Host")
  // §4.2.1 items 3 and 4
  if (!hasToken(header(request, "upgrade"), "websocket")) {
    return error(400, "NotUpgrade", "Upgrade header does not list 'websocket'")
  }
  if (!hasToken(header(request, "connection"), "upgrade")) {
    return error(400, "NotUpgrade", "Connection header does not list 'upgrade'")
  }
  // §4.2.1 item 5
  const keys = headerValues(request, "sec-websocket-key")
  if (keys.length !== 1) {
    return error(400, "BadKey", keys.length === 0 ? "missing Sec-WebSocket-Key" : "several Sec-WebSocket-Key headers")
  }
  const key = keys[0]!
  if (!KEY.test(key)) return error(400, "BadKey", "Sec-WebSocket-Key is not base64 of 16 bytes")
  // §4.2.1 item 6, §4.4: answer 426 with the versions we speak
  const wsVersion = header(request, "sec-websocket-version")
  if (wsVersion !== "13") {
    return error(
      426,
      "UnsupportedWsVersion",
      wsVersion === undefined ? "missing Sec-WebSocket-Version" : `unsupported Sec-WebSocket-Version ${wsVersion}`
    )
  }
  const rawExtensions = header(request, "sec-websocket-extensions")
  const parsed = rawExtensions === undefined ? undefined : parseExtensions(rawExtensions)
  return {
    _tag: "Ok",
    upgrade: {
      request,
      key,
      host,
      origin: header(request, "origin"),
      protocols: commaList(header(request, "sec-websocket-protocol")),
      extensions: parsed?._tag === "Ok" ? parsed.offers : []
    }
  }
}

// ---------------------------------------------------------------------------
// Building responses
// ---------------------------------------------------------------------------

/** RFC 6455 §1.3 */
export const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/**
 * RFC 6455 §4.2.2: base64(SHA-1(key + GUID)).
 *
 * @example
 * acceptKey("dGhlIHNhbXBsZSBub25jZQ==") // "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
 */
export const acceptKey = (key: string): string =>
  // crypto.hash (Node 21.7+) is one native call, with no Hash object per handshake.
  typeof cryptoHash === "function"
    ? cryptoHash("sha1", key + WEBSOCKET_GUID, "base64")
    : Crypto.createHash("sha1").update(key + WEBSOCKET_GUID, "latin1").digest("base64")

const cryptoHash = (Crypto as { readonly hash?: (algorithm: string, data: string, encoding: "base64") => string }).hash

const REASONS: Record<number, string> = {
  101: "Switching Protocols",
  200: "OK",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported"
}

const encoder = new TextEncoder()

const safeValue = (value: string): boolean => !/[\r\n\0]/.test(value)
const stripUnsafe = (value: string): string => value.replace(/[\r\n\0]/g, "")

/** Header lines for extras: unsafe or managed names are dropped. */
const extraLines = (headers: Headers | undefined, managed: ReadonlyArray<string>): string => {
  let out = ""
  for (const [name, value] of headers ?? []) {
    if (!isToken(name) || !safeValue(value)) continue
    if (managed.includes(name.toLowerCase())) continue
    out += `${name}: ${value}\r\n`
  }
  return out
}

const optionalLine = (name: string, value: string | undefined): string =>
  value === undefined || !safeValue(value) ? "" : `${name}: ${value}\r\n`

/**
 * The server's 101 answer (RFC 6455 §4.2.2). Extra headers may not override
 * Upgrade, Connection or the Sec-WebSocket-* headers set here.
 *
 * @example
 * acceptResponse({ key: upgrade.key, protocol: "chat" })
 */
export const acceptResponse = (options: {
  readonly key: string
  readonly protocol?: string | undefined
  readonly extensions?: string | undefined
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
}): Uint8Array => {
  const head =
    "HTTP/1.1 101 Switching Protocols\r\n" +
    "Upgrade: websocket\r\n" +
    "Connection: Upgrade\r\n" +
    `Sec-WebSocket-Accept: ${acceptKey(options.key)}\r\n` +
    optionalLine("Sec-WebSocket-Protocol", options.protocol) +
    optionalLine("Sec-WebSocket-Extensions", options.extensions) +
    extraLines(options.headers, [
      "upgrade",
      "connection",
      "sec-websocket-accept",
      "sec-websocket-protocol",
      "sec-websocket-extensions"
    ]) +
    "\r\n"
  return utf8Bytes(head)
}

// On Node, a slice of Buffer's shared pool instead of an ArrayBuffer of its own per handshake.
const utf8Bytes = (text: string): Uint8Array =>
  typeof Buffer === "function" ? Buffer.from(text, "utf8") : encoder.encode(text)

/**
 * A complete HTTP/1.1 response with Content-Length and `Connection: close`.
 * The reason phrase comes from a small table ("Unknown" otherwise); a status
 * outside 100-999 becomes 500. Extra Content-Length, Transfer-Encoding and
 * Connection headers are dropped; 1xx, 204 and 304 get no body.
 *
 * @example
 * httpResponse({ status: 404, body: "no such room" })
 */
export const httpResponse = (options: {
  readonly status: number
  readonly headers?: ReadonlyArray<readonly [string, string]>
  readonly body?: string | Uint8Array
}): Uint8Array => {
  const status = Number.isInteger(options.status) && options.status >= 100 && options.status <= 999 ? options.status : 500
  const bodyless = status < 200 || status === 204 || status === 304
  const body = bodyless
    ? new Uint8Array(0)
    : typeof options.body === "string"
      ? encoder.encode(options.body)
      : (options.body ?? new Uint8Array(0))
  const head =
    `HTTP/1.1 ${status} ${REASONS[status] ?? "Unknown"}\r\n` +
    extraLines(options.headers, ["content-length", "transfer-encoding", "connection"]) +
    "Connection: close\r\n" +
    (bodyless ? "" : `Content-Length: ${body.length}\r\n`) +
    "\r\n"
  const headBytes = encoder.encode(head)
  const out = new Uint8Array(headBytes.length + body.length)
  out.set(headBytes)
  out.set(body, headBytes.length)
  return out
}

/**
 * The answer to a failed handshake: its status, a plain-text body (the
 * detail), `Sec-WebSocket-Version: 13` for 426 (RFC 6455 §4.4) and
 * `Allow: GET` for 405.
 *
 * @example
 * rejectResponse(result.error) // "HTTP/1.1 426 Upgrade Required\r\n..."
 */
export const rejectResponse = (error: HandshakeError): Uint8Array => {
  const headers: Array<readonly [string, string]> = [["Content-Type", "text/plain; charset=utf-8"]]
  if (error.status === 426) headers.push(["Sec-WebSocket-Version", "13"])
  if (error.status === 405) headers.push(["Allow", "GET"])
  return httpResponse({ status: error.status, headers, body: `${error.detail}\n` })
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/** Percent-encode every byte of the UTF-8 form that is not VCHAR (keeps the request line valid). */
const escapeTarget = (path: string): string => {
  let out = ""
  for (const b of encoder.encode(path)) {
    out += isVchar(b) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`
  }
  return out.length === 0 ? "/" : out
}

/**
 * A client's opening handshake (RFC 6455 §4.1). `key` should be 16 random
 * bytes in base64; protocols that are not tokens are left out.
 *
 * @example
 * clientRequest({ host: "example.com", path: "/chat", key: "dGhlIHNhbXBsZSBub25jZQ==", protocols: ["chat"] })
 */
export const clientRequest = (options: {
  readonly host: string
  readonly path: string
  readonly key: string
  readonly protocols?: ReadonlyArray<string>
  readonly extensions?: string
  readonly origin?: string
  readonly headers?: ReadonlyArray<readonly [string, string]>
}): Uint8Array => {
  const protocols = (options.protocols ?? []).filter(isToken)
  const head =
    `GET ${escapeTarget(options.path)} HTTP/1.1\r\n` +
    `Host: ${stripUnsafe(options.host)}\r\n` +
    "Upgrade: websocket\r\n" +
    "Connection: Upgrade\r\n" +
    `Sec-WebSocket-Key: ${stripUnsafe(options.key)}\r\n` +
    "Sec-WebSocket-Version: 13\r\n" +
    optionalLine("Sec-WebSocket-Protocol", protocols.length > 0 ? protocols.join(", ") : undefined) +
    optionalLine("Sec-WebSocket-Extensions", options.extensions) +
    optionalLine("Origin", options.origin) +
    extraLines(options.headers, [
      "host",
      "upgrade",
      "connection",
      "sec-websocket-key",
      "sec-websocket-version",
      "sec-websocket-protocol",
      "sec-websocket-extensions",
      "origin"
    ]) +
    "\r\n"
  return encoder.encode(head)
}

/**
 * Check the server's answer (RFC 6455 §4.1, client steps 1-6): status 101,
 * Upgrade lists "websocket", Connection lists "upgrade", Sec-WebSocket-Accept
 * matches `key`, at most one subprotocol (one of `requested.protocols` when
 * given), and a well-formed Sec-WebSocket-Extensions. Errors carry status 400.
 *
 * @example
 * const result = validateResponse(step.response, key, { protocols: ["chat"] })
 */
export const validateResponse = (
  response: HttpResponseHead,
  key: string,
  requested?: { readonly protocols?: ReadonlyArray<string> | undefined }
):
  | { readonly _tag: "Ok"; readonly protocol: string | undefined; readonly extensions: ReadonlyArray<ExtensionOffer> }
  | { readonly _tag: "Error"; readonly error: HandshakeError } => {
  const error = (reason: HandshakeErrorReason, detail: string) =>
    ({ _tag: "Error", error: fail(400, reason, detail) }) as const
  if (response.status !== 101) return error("BadStatus", `expected status 101, got ${response.status}`)
  if (!hasToken(header(response, "upgrade"), "websocket")) {
    return error("NotUpgrade", "Upgrade header does not list 'websocket'")
  }
  if (!hasToken(header(response, "connection"), "upgrade")) {
    return error("NotUpgrade", "Connection header does not list 'upgrade'")
  }
  const accept = headerValues(response, "sec-websocket-accept")
  if (accept.length !== 1 || accept[0] !== acceptKey(key)) {
    return error("BadAccept", "Sec-WebSocket-Accept does not match the key")
  }
  const protocols = headerValues(response, "sec-websocket-protocol")
  let protocol: string | undefined
  if (protocols.length > 0) {
    if (protocols.length > 1 || !isToken(protocols[0]!)) {
      return error("Malformed", "Sec-WebSocket-Protocol must be a single token")
    }
    protocol = protocols[0]!
    if (requested?.protocols !== undefined && !requested.protocols.includes(protocol)) {
      return error("Malformed", `server chose subprotocol '${protocol}' that was not offered`)
    }
  }
  const rawExtensions = header(response, "sec-websocket-extensions")
  if (rawExtensions === undefined) return { _tag: "Ok", protocol, extensions: [] }
  const parsed = parseExtensions(rawExtensions)
  if (parsed._tag === "Error") return error("Malformed", `Sec-WebSocket-Extensions: ${parsed.detail}`)
  return { _tag: "Ok", protocol, extensions: parsed.offers }
}

