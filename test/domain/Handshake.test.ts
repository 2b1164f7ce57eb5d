import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import {
  acceptKey,
  acceptResponse,
  clientRequest,
  defaultParserOptions,
  header,
  HandshakeError,
  httpResponse,
  initialRequestParser,
  initialResponseParser,
  isUpgradeAttempt,
  rejectResponse,
  parseRequestHead,
  requestHeadText,
  stepRequest,
  stepResponse,
  validateResponse,
  validateUpgrade,
  WEBSOCKET_GUID
} from "../../src/domain/Handshake.ts"
import type { HttpRequest, HttpResponseHead, RequestStep, ResponseStep } from "../../src/domain/Handshake.ts"
import { concatBytes, splitAt } from "../support/Bytes.ts"

const enc = new TextEncoder()
const dec = new TextDecoder()
const bytes = (s: string) => enc.encode(s)
const text = (b: Uint8Array) => dec.decode(b)

const KEY = "dGhlIHNhbXBsZSBub25jZQ=="

const chrome = [
  "GET /chat?room=1 HTTP/1.1",
  "Host: server.example.com",
  "Connection: Upgrade",
  "Pragma: no-cache",
  "Cache-Control: no-cache",
  "User-Agent: Mozilla/5.0",
  "Upgrade: websocket",
  "Origin: http://example.com",
  "Sec-WebSocket-Version: 13",
  "Accept-Encoding: gzip, deflate, br",
  `Sec-WebSocket-Key: ${KEY}`,
  "Sec-WebSocket-Protocol: chat, superchat",
  "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
  "",
  ""
].join("\r\n")

/** Feed all chunks; stop at the first final step; return it with the unfed bytes appended to rest. */
// The final step as the parser gave it (raw included).
const feedRequestSteps = (chunks: ReadonlyArray<Uint8Array>): RequestStep => {
  let parser = initialRequestParser()
  for (const chunk of chunks) {
    const step = stepRequest(parser, chunk)
    if (step._tag !== "NeedMore") return step
    parser = step.parser
  }
  return { _tag: "NeedMore", parser }
}

const feedRequest = (chunks: ReadonlyArray<Uint8Array>, options?: { maxHeaderBytes: number }): RequestStep => {
  let parser = initialRequestParser(options)
  for (let i = 0; i < chunks.length; i++) {
    const step = stepRequest(parser, chunks[i]!)
    if (step._tag === "NeedMore") {
      parser = step.parser
      continue
    }
    if (step._tag === "Request") {
      const rest = concat([step.rest, ...chunks.slice(i + 1)])
      // The head text a connection keeps (as received, or formatted) reads back as the same request.
      const { raw, ...request } = step
      expect(parseRequestHead(requestHeadText(step.request, raw))).toEqual(step.request)
      return { ...request, rest }
    }
    return step
  }
  return { _tag: "NeedMore", parser }
}

const feedResponse = (chunks: ReadonlyArray<Uint8Array>): ResponseStep => {
  let parser = initialResponseParser()
  for (let i = 0; i < chunks.length; i++) {
    const step = stepResponse(parser, chunks[i]!)
    if (step._tag === "NeedMore") {
      parser = step.parser
      continue
    }
    if (step._tag === "Response") return { ...step, rest: concat([step.rest, ...chunks.slice(i + 1)]) }
    return step
  }
  return { _tag: "NeedMore", parser }
}

const concat = concatBytes

const parse = (raw: string): HttpRequest => {
  const step = stepRequest(initialRequestParser(), bytes(raw))
  if (step._tag !== "Request") throw new Error(`expected a request, got ${step._tag}`)
  return step.request
}

/** A valid upgrade request with some header lines replaced/removed. */
const upgradeWith = (overrides: Record<string, string | null>, requestLine = "GET /chat HTTP/1.1"): HttpRequest => {
  const base: Array<[string, string]> = [
    ["Host", "server.example.com"],
    ["Upgrade", "websocket"],
    ["Connection", "Upgrade"],
    ["Sec-WebSocket-Key", KEY],
    ["Sec-WebSocket-Version", "13"]
  ]
  const lines = base
    .filter(([n]) => overrides[n] !== null)
    .map(([n, v]) => `${n}: ${overrides[n] ?? v}`)
  for (const [n, v] of Object.entries(overrides)) {
    if (v !== null && !base.some(([b]) => b === n)) lines.push(`${n}: ${v}`)
  }
  return parse(`${requestLine}\r\n${lines.join("\r\n")}\r\n\r\n`)
}

const expectError = (request: HttpRequest, status: number, reason: string): HandshakeError => {
  const result = validateUpgrade(request)
  if (result._tag !== "Error") throw new Error("expected an error")
  expect(result.error).toBeInstanceOf(HandshakeError)
  expect(result.error.status).toBe(status)
  expect(result.error.reason).toBe(reason)
  return result.error
}

describe("acceptKey", () => {
  it("matches RFC 6455 §1.3", () => {
    expect(WEBSOCKET_GUID).toBe("258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    expect(acceptKey("dGhlIHNhbXBsZSBub25jZQ==")).toBe("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
  })
})

describe("stepRequest", () => {
  it("parses a Chrome-like request", () => {
    const request = parse(chrome)
    expect(request.method).toBe("GET")
    expect(request.target).toBe("/chat?room=1")
    expect(request.path).toBe("/chat")
    expect(request.query).toBe("room=1")
    expect(request.version).toBe("HTTP/1.1")
    expect(request.headers[0]).toEqual(["Host", "server.example.com"])
    expect(request.headers.length).toBe(12)
    expect(header(request, "sec-websocket-extensions")).toBe("permessage-deflate; client_max_window_bits")
  })

  it("keeps names as sent, trims values, joins repeated headers", () => {
    const request = parse("GET / HTTP/1.1\r\nX-A:   1 \t\r\nx-a:2\r\nX-Empty:\r\n\r\n")
    expect(request.headers).toEqual([
      ["X-A", "1"],
      ["x-a", "2"],
      ["X-Empty", ""]
    ])
    expect(header(request, "X-a")).toBe("1, 2")
    expect(header(request, "x-empty")).toBe("")
    expect(header(request, "missing")).toBeUndefined()
    expect(request.query).toBe("")
  })

  it("hands the bytes after the blank line on exactly", () => {
    const frame = new Uint8Array([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58, 0x0d, 0x0a, 0x0d, 0x0a])
    const step = stepRequest(initialRequestParser(), concat([bytes(chrome), frame]))
    expect(step._tag).toBe("Request")
    if (step._tag === "Request") expect(Array.from(step.rest)).toEqual(Array.from(frame))
    const empty = stepRequest(initialRequestParser(), bytes(chrome))
    expect(empty._tag === "Request" && empty.rest.length).toBe(0)
  })

  it("needs more until the blank line", () => {
    const step = stepRequest(initialRequestParser(), bytes(chrome.slice(0, -2)))
    expect(step._tag).toBe("NeedMore")
    if (step._tag === "NeedMore") expect(stepRequest(step.parser, bytes("\r\n"))._tag).toBe("Request")
  })

  it("accepts bare LF line endings and skips leading empty lines (RFC 9112 §2.2)", () => {
    const request = parse("\r\n\nGET /a HTTP/1.1\nHost: h\r\nX: y\n\n")
    expect(request.path).toBe("/a")
    expect(request.headers).toEqual([
      ["Host", "h"],
      ["X", "y"]
    ])
  })

  it("rejects malformed heads with 400", () => {
    for (const raw of [
      "GET /  HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1 x\r\n\r\n",
      "GET /\r\n\r\n",
      "GET / HTTP/11\r\n\r\n",
      "GET / http/1.1\r\n\r\n",
      "G(T / HTTP/1.1\r\n\r\n",
      "GET /a\u0080b HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", // obs-fold
      "GET / HTTP/1.1\r\n\tX: a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : a\r\n\r\n", // space before colon
      "GET / HTTP/1.1\r\n: a\r\n\r\n",
      "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
      "GET / HTTP/1.1\r\nX(: a\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\u0000b\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\r\r\n\r\n",
      "GET / HTTP/1.1\rHost: a\r\n\r\n",
      "\u0016\u0003\u0001\u0002\u0000"
    ]) {
      const step = stepRequest(initialRequestParser(), bytes(raw))
      expect(step._tag, JSON.stringify(raw)).toBe("Invalid")
      if (step._tag === "Invalid") {
        expect(step.error.status).toBe(400)
        expect(step.error.reason).toBe("Malformed")
      }
    }
  })

  it("detects binary garbage in the start line without waiting for a newline", () => {
    expect(stepRequest(initialRequestParser(), new Uint8Array([0x16, 0x03]))._tag).toBe("Invalid")
  })

  it("enforces the 16 KiB default limit over the whole head", () => {
    expect(defaultParserOptions.maxHeaderBytes).toBe(16384)
    const prefix = "GET / HTTP/1.1\r\nX: "
    const exact = prefix + "a".repeat(16384 - prefix.length - 4) + "\r\n\r\n"
    expect(exact.length).toBe(16384)
    expect(stepRequest(initialRequestParser(), bytes(exact))._tag).toBe("Request")
    const over = prefix + "a".repeat(16384 - prefix.length - 3) + "\r\n\r\n"
    const step = stepRequest(initialRequestParser(), bytes(over))
    expect(step._tag === "Invalid" && [step.error.status, step.error.reason]).toEqual([431, "HeadTooLarge"])
  })

  it("fails as soon as the limit is crossed, before any newline", () => {
    const parser = initialRequestParser({ maxHeaderBytes: 100 })
    const first = stepRequest(parser, bytes("GET /" + "a".repeat(95)))
    expect(first._tag).toBe("NeedMore")
    if (first._tag !== "NeedMore") return
    const second = stepRequest(first.parser, bytes("b"))
    expect(second._tag === "Invalid" && second.error.status).toBe(431)
    // many headers, each small
    const many = "GET / HTTP/1.1\r\n" + "X: 1\r\n".repeat(4000)
    const step = stepRequest(initialRequestParser(), bytes(many))
    expect(step._tag === "Invalid" && step.error.reason).toBe("HeadTooLarge")
  })

  it("feeding byte by byte gives the same request", () => {
    const data = concat([bytes(chrome), new Uint8Array([1, 2, 3])])
    const whole = feedRequest([data])
    const bytewise = feedRequest(Array.from(data, (b) => new Uint8Array([b])))
    expect(bytewise).toEqual(whole)
    expect(whole._tag === "Request" && Array.from(whole.rest)).toEqual([1, 2, 3])
  })

  it("keeps the head's text as received when it came in one chunk (no formatted copy)", () => {
    const head = "GET /chat?room=a HTTP/1.1\nHost: example.com\r\nUpgrade: websocket\r\n\r\n"
    const step = stepRequest(initialRequestParser(), bytes(head))
    expect(step._tag === "Request" && step.raw).toBe(head)
    expect(step._tag === "Request" && requestHeadText(step.request, step.raw)).toBe(head)
    // Bytes after the head in the same chunk: no text of the chunk is kept (it would hold them too).
    const withFrame = stepRequest(initialRequestParser(), concat([bytes(head), new Uint8Array([0x81])]))
    expect(withFrame._tag === "Request" && withFrame.raw).toBeUndefined()
    // In pieces there is no single text: the head is formatted from the parsed request.
    const split = feedRequestSteps([bytes(head.slice(0, 10)), bytes(head.slice(10))])
    expect(split._tag === "Request" && split.raw).toBeUndefined()
    // Empty lines before the request line are allowed (RFC 9112 §2.2); the kept text starts at the method.
    const leading = stepRequest(initialRequestParser(), bytes("\r\n" + head))
    expect(leading._tag === "Request" && leading.raw).toBe("\r\n" + head)
    expect(leading._tag === "Request" && requestHeadText(leading.request, leading.raw).startsWith("GET /chat?room=a ")).toBe(true)
  })

  it("parser states are persistent values (an old state can be reused)", () => {
    const a = stepRequest(initialRequestParser(), bytes("GET /x HTTP/1.1\r\nX-Long: abc"))
    if (a._tag !== "NeedMore") throw new Error("expected NeedMore")
    const b1 = stepRequest(a.parser, bytes("def"))
    const b2 = stepRequest(a.parser, bytes("XYZ\r\n\r\n"))
    if (b1._tag !== "NeedMore") throw new Error("expected NeedMore")
    const c1 = stepRequest(b1.parser, bytes("\r\n\r\n"))
    expect(b2._tag === "Request" && header(b2.request, "x-long")).toBe("abcXYZ")
    expect(c1._tag === "Request" && header(c1.request, "x-long")).toBe("abcdef")
  })

  it("handles a slow byte-by-byte client in linear time", () => {
    const raw = bytes("GET / HTTP/1.1\r\nX: " + "a".repeat(16000) + "\r\n\r\n")
    const started = performance.now()
    let parser = initialRequestParser()
    let last: RequestStep | undefined
    for (const b of raw) {
      last = stepRequest(parser, new Uint8Array([b]))
      if (last._tag === "NeedMore") parser = last.parser
    }
    expect(last?._tag).toBe("Request")
    expect(performance.now() - started).toBeLessThan(2000)
  })

  it("property: any split of a valid request gives the same result", () => {
    const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/)
    const value = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,20}[\x21-\x7e])?$/)
    const request = fc.record({
      method: token,
      target: fc.stringMatching(/^\/[\x21-\x7e]{0,30}$/),
      headers: fc.array(fc.tuple(token, value), { maxLength: 12 }),
      lf: fc.boolean(),
      rest: fc.uint8Array({ maxLength: 20 })
    })
    fc.assert(
      fc.property(request, fc.array(fc.nat(), { maxLength: 10 }), (r, points) => {
        const eol = r.lf ? "\n" : "\r\n"
        const head = `${r.method} ${r.target} HTTP/1.1${eol}${r.headers.map(([n, v]) => `${n}: ${v}${eol}`).join("")}${eol}`
        const data = concat([bytes(head), r.rest])
        const whole = feedRequest([data])
        expect(whole._tag).toBe("Request")
        if (whole._tag === "Request") {
          expect(whole.request.headers).toEqual(r.headers)
          expect(whole.request.method).toBe(r.method)
          expect(Array.from(whole.rest)).toEqual(Array.from(r.rest))
        }
        expect(feedRequest(splitAt(data, points))).toEqual(whole)
      }),
      { numRuns: 200 }
    )
  })

  it("property: random splits of random (mutated) heads agree with whole feeding", () => {
    fc.assert(
      fc.property(
        fc.nat({ max: chrome.length - 1 }),
        fc.integer({ min: 0, max: 255 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (at, byte, points) => {
          const data = bytes(chrome)
          data[at] = byte
          expect(feedRequest(splitAt(data, points), { maxHeaderBytes: 300 })).toEqual(
            feedRequest([data], { maxHeaderBytes: 300 })
          )
        }
      ),
      { numRuns: 200 }
    )
  })

  it("property: random garbage never throws", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 6 }), (chunks) => {
        const step = feedRequest(chunks, { maxHeaderBytes: 128 })
        expect(["NeedMore", "Request", "Invalid"]).toContain(step._tag)
        const response = feedResponse(chunks)
        expect(["NeedMore", "Response", "Invalid"]).toContain(response._tag)
      }),
      { numRuns: 300 }
    )
    fc.assert(
      fc.property(fc.array(fc.string({ unit: fc.constantFrom("G", "E", "T", " ", "/", ":", "\r", "\n", "\t", "a", "H", "\u0000") }), { maxLength: 6 }), (parts) => {
        const step = feedRequest(parts.map(bytes))
        expect(["NeedMore", "Request", "Invalid"]).toContain(step._tag)
      }),
      { numRuns: 300 }
    )
  })
})

describe("stepResponse", () => {
  it("parses a status line and headers, with rest", () => {
    const step = stepResponse(
      initialResponseParser(),
      concat([bytes("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"), new Uint8Array([0x81, 0])])
    )
    expect(step._tag).toBe("Response")
    if (step._tag === "Response") {
      expect(step.response).toEqual({
        status: 101,
        reason: "Switching Protocols",
        version: "HTTP/1.1",
        headers: [["Upgrade", "websocket"]]
      })
      expect(Array.from(step.rest)).toEqual([0x81, 0])
    }
  })

  it("tolerates an empty reason phrase", () => {
    for (const line of ["HTTP/1.1 200 ", "HTTP/1.1 200"]) {
      const step = stepResponse(initialResponseParser(), bytes(`${line}\r\n\r\n`))
      expect(step._tag === "Response" && step.response.reason).toBe("")
    }
  })

  it("rejects bad status lines", () => {
    for (const line of ["HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1  200 OK", "HTTP 200 OK", "HTTP/1.1 abc OK"]) {
      expect(stepResponse(initialResponseParser(), bytes(`${line}\r\n\r\n`))._tag).toBe("Invalid")
    }
  })
})

describe("isUpgradeAttempt", () => {
  it("is false for a plain GET and true for any WebSocket hint", () => {
    expect(isUpgradeAttempt(parse("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))).toBe(false)
    expect(isUpgradeAttempt(parse("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"))).toBe(false)
    expect(isUpgradeAttempt(parse("GET / HTTP/1.1\r\nUpgrade: h2c, WebSocket\r\n\r\n"))).toBe(true)
    expect(isUpgradeAttempt(parse(`GET / HTTP/1.1\r\nsec-websocket-key: ${KEY}\r\n\r\n`))).toBe(true)
    expect(isUpgradeAttempt(parse("GET / HTTP/1.1\r\nSec-WebSocket-Version: 8\r\n\r\n"))).toBe(true)
    expect(isUpgradeAttempt(parse(chrome))).toBe(true)
  })
})

describe("validateUpgrade", () => {
  it("accepts a Chrome-like request and parses its fields", () => {
    const result = validateUpgrade(parse(chrome))
    expect(result._tag).toBe("Ok")
    if (result._tag !== "Ok") return
    const u = result.upgrade
    expect(u.key).toBe(KEY)
    expect(u.host).toBe("server.example.com")
    expect(u.origin).toBe("http://example.com")
    expect(u.protocols).toEqual(["chat", "superchat"])
    expect(u.extensions).toEqual([{ name: "permessage-deflate", params: [["client_max_window_bits", true]] }])
    expect(u.request.path).toBe("/chat")
  })

  it("is case-insensitive for header names and tokens", () => {
    const request = parse(
      `GET / HTTP/1.1\r\nhOsT: h\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, UPGRADE\r\nsec-websocket-key: ${KEY}\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n`
    )
    const result = validateUpgrade(request)
    expect(result._tag).toBe("Ok")
    if (result._tag === "Ok") {
      expect(result.upgrade.origin).toBeUndefined()
      expect(result.upgrade.protocols).toEqual([])
      expect(result.upgrade.extensions).toEqual([])
    }
  })

  it("accepts Connection: keep-alive, Upgrade (Firefox) and HTTP/1.2", () => {
    expect(validateUpgrade(upgradeWith({ Connection: "keep-alive, Upgrade" }))._tag).toBe("Ok")
    expect(validateUpgrade(upgradeWith({}, "GET / HTTP/1.2"))._tag).toBe("Ok")
  })

  it("collects protocols from several headers and comma lists", () => {
    const request = parse(
      `GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\nSec-WebSocket-Protocol: c\r\nSec-WebSocket-Protocol: ,d ,\r\nSec-WebSocket-Extensions: x; p=1\r\nSec-WebSocket-Extensions: y\r\n\r\n`
    )
    const result = validateUpgrade(request)
    expect(result._tag === "Ok" && result.upgrade.protocols).toEqual(["a", "b", "c", "d"])
    expect(result._tag === "Ok" && result.upgrade.extensions).toEqual([
      { name: "x", params: [["p", "1"]] },
      { name: "y", params: [] }
    ])
  })

  it("treats a malformed Sec-WebSocket-Extensions header as no offers", () => {
    const result = validateUpgrade(upgradeWith({ "Sec-WebSocket-Extensions": "permessage-deflate; =" }))
    expect(result._tag).toBe("Ok")
    expect(result._tag === "Ok" && result.upgrade.extensions).toEqual([])
  })

  it("rejects a method other than GET with 405 and Allow: GET", () => {
    const error = expectError(upgradeWith({}, "POST /chat HTTP/1.1"), 405, "MethodNotAllowed")
    expectError(upgradeWith({}, "get /chat HTTP/1.1"), 405, "MethodNotAllowed")
    expect(text(rejectResponse(error))).toContain("\r\nAllow: GET\r\n")
  })

  it("rejects HTTP/1.0 with 400 and HTTP/2.0 with 505", () => {
    expectError(upgradeWith({}, "GET / HTTP/1.0"), 400, "BadVersion")
    expectError(upgradeWith({}, "GET / HTTP/2.0"), 505, "BadVersion")
  })

  it("requires exactly one non-empty Host", () => {
    expectError(upgradeWith({ Host: null }), 400, "MissingHost")
    expectError(upgradeWith({ Host: "" }), 400, "MissingHost")
    expectError(upgradeWith({ host: "other" }), 400, "MissingHost")
  })

  it("requires Upgrade: websocket", () => {
    expectError(upgradeWith({ Upgrade: null }), 400, "NotUpgrade")
    expectError(upgradeWith({ Upgrade: "h2c" }), 400, "NotUpgrade")
    expectError(upgradeWith({ Upgrade: "websockets" }), 400, "NotUpgrade")
    expect(validateUpgrade(upgradeWith({ Upgrade: "foo, WEBSOCKET" }))._tag).toBe("Ok")
  })

  it("requires Connection to list upgrade", () => {
    expectError(upgradeWith({ Connection: null }), 400, "NotUpgrade")
    expectError(upgradeWith({ Connection: "keep-alive" }), 400, "NotUpgrade")
    expectError(upgradeWith({ Connection: "keep-alive upgrade" }), 400, "NotUpgrade")
  })

  it("requires one Sec-WebSocket-Key of 16 base64 bytes", () => {
    expectError(upgradeWith({ "Sec-WebSocket-Key": null }), 400, "BadKey")
    expectError(upgradeWith({ "sec-websocket-key": KEY }), 400, "BadKey") // twice
    const bad = [
      "dGhlIHNhbXBsZSBub25jZQ=", // 23 chars
      "dGhlIHNhbXBsZSBub25jZQ===", // 25 chars
      "dGhlIHNhbXBsZSBub25jZQ", // no padding
      "dGhlIHNhbXBsZSBub25jZ===", // bad padding
      "dGhlIHNhbXBsZSBub25jZQ=A", // padding not at end
      "dGhlIHNhbXBsZSBub25j", // 15 bytes, 20 chars
      "dGhlIHNhbXBsZSBub25jZS0=", // 17 bytes
      "AAAAAAAAAAAAAAAAAAAAAAAAAA==", // 20 bytes
      "dGhlIHNhbXBsZSBub25j_Q==", // base64url alphabet
      "dGhlIHNhbXBsZSBub25j Q==",
      ""
    ]
    for (const key of bad) expectError(upgradeWith({ "Sec-WebSocket-Key": key }), 400, "BadKey")
    // 15 bytes = 20 chars with no padding; 17 bytes = 24 chars with one '='
    expect(Buffer.from("dGhlIHNhbXBsZSBub25j", "base64").length).toBe(15)
    expect(Buffer.from("dGhlIHNhbXBsZSBub25jZS0=", "base64").length).toBe(17)
    expect(validateUpgrade(upgradeWith({ "Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAA==" }))._tag).toBe("Ok")
    expect(validateUpgrade(upgradeWith({ "Sec-WebSocket-Key": "+/+/+/+/+/+/+/+/+/+/+w==" }))._tag).toBe("Ok")
  })

  it("answers 426 with Sec-WebSocket-Version: 13 for other or missing versions", () => {
    for (const version of ["8", "12", "14", "13, 8", " 7 "]) {
      const error = expectError(upgradeWith({ "Sec-WebSocket-Version": version }), 426, "UnsupportedWsVersion")
      const raw = text(rejectResponse(error))
      expect(raw.startsWith("HTTP/1.1 426 Upgrade Required\r\n")).toBe(true)
      expect(raw).toContain("\r\nSec-WebSocket-Version: 13\r\n")
    }
    expectError(upgradeWith({ "Sec-WebSocket-Version": null }), 426, "UnsupportedWsVersion")
  })
})

describe("responses", () => {
  it("acceptResponse builds the 101 answer (RFC 6455 §4.2.2)", () => {
    expect(text(acceptResponse({ key: KEY }))).toBe(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    expect(
      text(
        acceptResponse({
          key: KEY,
          protocol: "chat",
          extensions: "permessage-deflate",
          headers: [
            ["X-Server", "wsreactor"],
            ["Bad", "a\r\nSet-Cookie: x=1"],
            ["Bad Name", "v"],
            ["connection", "close"]
          ]
        })
      )
    ).toBe(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\nX-Server: wsreactor\r\n\r\n"
    )
  })

  it("acceptResponse drops a protocol with CR/LF", () => {
    expect(text(acceptResponse({ key: KEY, protocol: "a\r\nX: y" }))).not.toContain("X: y")
  })

  it("rejectResponse carries status, close, content type and length", () => {
    const error = new HandshakeError({ status: 400, reason: "BadKey", detail: "bad key" })
    expect(error.message).toBe("400 BadKey: bad key")
    expect(text(rejectResponse(error))).toBe(
      "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 8\r\n\r\nbad key\n"
    )
    const big = new HandshakeError({ status: 431, reason: "HeadTooLarge", detail: "x" })
    expect(text(rejectResponse(big)).startsWith("HTTP/1.1 431 Request Header Fields Too Large\r\n")).toBe(true)
  })

  it("httpResponse counts UTF-8 bytes, drops unsafe and managed headers", () => {
    const raw = text(
      httpResponse({
        status: 200,
        headers: [
          ["Content-Type", "text/plain"],
          ["X-Evil", "a\nb"],
          ["X-Nul", "a\u0000"],
          ["Content-Length", "1"],
          ["Transfer-Encoding", "chunked"]
        ],
        body: "héllo"
      })
    )
    expect(raw).toBe("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 6\r\n\r\nhéllo")
    expect(text(httpResponse({ status: 299 }))).toBe("HTTP/1.1 299 Unknown\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    expect(text(httpResponse({ status: 204, body: "ignored" }))).toBe("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    expect(text(httpResponse({ status: 42 })).startsWith("HTTP/1.1 500 Internal Server Error\r\n")).toBe(true)
    const binary = httpResponse({ status: 503, body: new Uint8Array([0, 255]) })
    expect(Array.from(binary.slice(-2))).toEqual([0, 255])
  })

  it("every built response parses back", () => {
    const step = stepResponse(initialResponseParser(), httpResponse({ status: 404, body: "nope" }))
    expect(step._tag === "Response" && step.response.status).toBe(404)
    expect(step._tag === "Response" && text(step.rest)).toBe("nope")
  })
})

describe("client side", () => {
  it("round trip: clientRequest → validateUpgrade → acceptResponse → validateResponse", () => {
    const key = "AQIDBAUGBwgJCgsMDQ4PEA=="
    const requestBytes = clientRequest({
      host: "example.com:8080",
      path: "/chat?x=1",
      key,
      protocols: ["chat", "super chat", "v2"],
      extensions: "permessage-deflate; client_max_window_bits",
      origin: "https://example.com",
      headers: [
        ["X-Trace", "1"],
        ["Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="]
      ]
    })
    const parsed = feedRequest(Array.from(requestBytes, (b) => new Uint8Array([b])))
    if (parsed._tag !== "Request") throw new Error("expected a request")
    expect(parsed.request.target).toBe("/chat?x=1")
    const validated = validateUpgrade(parsed.request)
    if (validated._tag !== "Ok") throw new Error(validated.error.message)
    expect(validated.upgrade.protocols).toEqual(["chat", "v2"])
    expect(validated.upgrade.origin).toBe("https://example.com")
    expect(validated.upgrade.host).toBe("example.com:8080")
    expect(validated.upgrade.key).toBe(key)
    expect(header(parsed.request, "x-trace")).toBe("1")

    const answer = acceptResponse({ key: validated.upgrade.key, protocol: "v2", extensions: "permessage-deflate" })
    const response = feedResponse([concat([answer, new Uint8Array([0x82, 0x00])])])
    if (response._tag !== "Response") throw new Error("expected a response")
    expect(Array.from(response.rest)).toEqual([0x82, 0x00])
    const result = validateResponse(response.response, key, { protocols: ["chat", "v2"] })
    expect(result).toEqual({ _tag: "Ok", protocol: "v2", extensions: [{ name: "permessage-deflate", params: [] }] })
  })

  it("clientRequest escapes the path and strips CR/LF from required values", () => {
    const raw = text(clientRequest({ host: "h\r\nX: y", path: "/a b\r\n", key: KEY }))
    expect(raw.startsWith("GET /a%20b%0D%0A HTTP/1.1\r\nHost: hX: y\r\n")).toBe(true)
    expect(text(clientRequest({ host: "h", path: "", key: KEY })).startsWith("GET / HTTP/1.1\r\n")).toBe(true)
    expect(text(clientRequest({ host: "h", path: "/\ud800", key: KEY })).startsWith("GET /%EF%BF%BD HTTP/1.1\r\n")).toBe(true)
  })

  const response = (status: number, headers: ReadonlyArray<readonly [string, string]>): HttpResponseHead => ({
    status,
    reason: "",
    version: "HTTP/1.1",
    headers
  })
  const good: ReadonlyArray<readonly [string, string]> = [
    ["Upgrade", "WebSocket"],
    ["Connection", "upgrade"],
    ["Sec-WebSocket-Accept", acceptKey(KEY)]
  ]

  it("validateResponse checks status, tokens, accept, protocol and extensions", () => {
    expect(validateResponse(response(101, good), KEY)).toEqual({ _tag: "Ok", protocol: undefined, extensions: [] })
    const reasonOf = (status: number, headers: ReadonlyArray<readonly [string, string]>, requested?: ReadonlyArray<string>) => {
      const result = validateResponse(response(status, headers), KEY, requested ? { protocols: requested } : undefined)
      return result._tag === "Error" ? result.error.reason : "Ok"
    }
    expect(reasonOf(200, good)).toBe("BadStatus")
    expect(reasonOf(101, good.filter(([n]) => n !== "Upgrade"))).toBe("NotUpgrade")
    expect(reasonOf(101, good.filter(([n]) => n !== "Connection"))).toBe("NotUpgrade")
    expect(reasonOf(101, good.filter(([n]) => n !== "Sec-WebSocket-Accept"))).toBe("BadAccept")
    expect(reasonOf(101, [...good.slice(0, 2), ["Sec-WebSocket-Accept", acceptKey("AAAAAAAAAAAAAAAAAAAAAA==")]])).toBe("BadAccept")
    expect(reasonOf(101, [...good, ["Sec-WebSocket-Accept", acceptKey(KEY)]])).toBe("BadAccept")
    expect(reasonOf(101, [...good, ["Sec-WebSocket-Protocol", "a, b"]])).toBe("Malformed")
    expect(reasonOf(101, [...good, ["Sec-WebSocket-Protocol", "c"]], ["a", "b"])).toBe("Malformed")
    expect(reasonOf(101, [...good, ["Sec-WebSocket-Protocol", "b"]], ["a", "b"])).toBe("Ok")
    expect(reasonOf(101, [...good, ["Sec-WebSocket-Extensions", "x;"]])).toBe("Malformed")
  })
})
