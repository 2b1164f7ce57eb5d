// The opening handshake at the HTTP level (RFC 6455 §4.1, §4.2, §4.4).
import { randomBytes } from "node:crypto"
import { describe, expect, it } from "vitest"
import type { HttpResponse } from "./RawClient.ts"
import { acceptFor, binaryOf, encodeFrame, Opcode } from "./RawClient.ts"
import { quirks, useEchoServer } from "./harness.ts"

const server = useEchoServer()
const newKey = (): string => randomBytes(16).toString("base64")

/** A request head; `null` drops a default header, other entries add or replace. */
const request = (overrides: Record<string, string | null> = {}, requestLine = "GET / HTTP/1.1"): string => {
  const headers: Record<string, string | null> = {
    Host: `127.0.0.1:${server.port()}`,
    Upgrade: "websocket",
    Connection: "Upgrade",
    "Sec-WebSocket-Key": newKey(),
    "Sec-WebSocket-Version": "13",
    ...overrides
  }
  const lines = Object.entries(headers).flatMap(([k, v]) => (v === null ? [] : [`${k}: ${v}`]))
  return [requestLine, ...lines].join("\r\n") + "\r\n\r\n"
}

/** Sends a raw request; resolves with the response head, or "closed" if the server hung up without one. */
const exchange = async (raw: string | Buffer): Promise<HttpResponse | "closed"> => {
  const c = await server.openRaw()
  c.sendRaw(typeof raw === "string" ? Buffer.from(raw, "latin1") : raw)
  try {
    return await c.readHttpResponse()
  } catch (e) {
    if (c.isEnded() && c.buffered() === 0) return "closed"
    throw e
  }
}

const expectRejected = async (raw: string, statuses: ReadonlyArray<number>): Promise<HttpResponse> => {
  const res = await exchange(raw)
  if (res === "closed") throw new Error(`expected HTTP ${statuses.join("/")}, the server closed without a response`)
  expect(statuses).toContain(res.status)
  return res
}

describe("handshake", () => {
  it("a valid request → 101 with the right Sec-WebSocket-Accept, then echo", async () => {
    const c = await server.connect()
    expect(c.response.status).toBe(101)
    c.sendFrame({ opcode: Opcode.text, payload: "hi" })
    await c.expectMessage(Opcode.text, "hi")
    await c.closeCleanly()
  })

  it("header names and tokens are case-insensitive; Connection may list several tokens", async () => {
    const key = newKey()
    const c = await server.openRaw()
    c.sendRaw(
      Buffer.from(
        request({
          Upgrade: null,
          Connection: null,
          "Sec-WebSocket-Key": null,
          "Sec-WebSocket-Version": null,
          upgrade: "WebSocket",
          connection: "keep-alive, Upgrade",
          "sec-websocket-key": key,
          "SEC-WEBSOCKET-VERSION": "13"
        })
      )
    )
    const res = await c.readHttpResponse()
    expect(res.status).toBe(101)
    expect(res.headers["sec-websocket-accept"]).toBe(acceptFor(key))
  })

  it("a request written 1 byte at a time → 101", async () => {
    const key = newKey()
    const c = await server.openRaw()
    await c.sendChunked(Buffer.from(request({ "Sec-WebSocket-Key": key })), 1)
    const res = await c.readHttpResponse()
    expect(res.status).toBe(101)
    expect(res.headers["sec-websocket-accept"]).toBe(acceptFor(key))
  })

  it("no subprotocol or extension is agreed unless offered and known", async () => {
    const c = await server.connect({ extensions: ["x-unknown-extension; foo=1"] })
    expect(c.response.headers["sec-websocket-protocol"]).toBeUndefined()
    expect(c.response.headers["sec-websocket-extensions"]).toBeUndefined()
    await c.closeCleanly()
  })

  // RFC 6455 §4.2.2: the server may pick one offered subprotocol or none.
  it("a selected subprotocol is one of those offered", async () => {
    const c = await server.connect({ protocols: ["chat", "superchat"] })
    const chosen = c.response.headers["sec-websocket-protocol"]
    if (chosen !== undefined) expect(["chat", "superchat"]).toContain(chosen)
    await c.closeCleanly()
  })

  it("a frame in the same TCP write as the upgrade request is echoed", async () => {
    const c = await server.connect({
      trailing: Buffer.concat([
        encodeFrame({ opcode: Opcode.text, payload: "early bird" }),
        encodeFrame({ opcode: Opcode.ping, payload: "early ping" })
      ])
    })
    // The pong and the echo may come in either order: the reactor answers pings itself, the
    // echo comes from the handler (RFC 6455 §5.5.2 only says "as soon as practical").
    const first = await c.nextFrame()
    const second = await c.nextFrame()
    const frames = [first, second].map((f) => [f.opcode, Buffer.from(f.payload).toString()] as const)
    expect(frames).toContainEqual([Opcode.text, "early bird"])
    expect(frames).toContainEqual([Opcode.pong, "early ping"])
    await c.closeCleanly()
  })

  describe("invalid requests are refused", () => {
    it("missing Upgrade → 400 or 426", () => expectRejected(request({ Upgrade: null }), [400, 426]))
    it("Upgrade: h2c → 400 or 426", () => expectRejected(request({ Upgrade: "h2c" }), [400, 426]))
    it("Connection without Upgrade → 400 or 426", () => expectRejected(request({ Connection: "keep-alive" }), [400, 426]))
    it("missing Sec-WebSocket-Key → 400", () => expectRejected(request({ "Sec-WebSocket-Key": null }), [400]))
    // RFC 6455 §4.1: the key is 16 random bytes, base64-encoded (24 characters).
    it.each([
      ["short (8 bytes)", randomBytes(8).toString("base64")],
      ["long (17 bytes)", randomBytes(17).toString("base64")],
      ["not base64", "!!!!!!!!!!!!!!!!!!!!!!=="],
      ["empty", ""]
    ])("Sec-WebSocket-Key %s → 400", async (_, key) => {
      await expectRejected(request({ "Sec-WebSocket-Key": key }), [400])
    })
    it("missing Sec-WebSocket-Version → 400 or 426", () =>
      expectRejected(request({ "Sec-WebSocket-Version": null }), [400, 426]))

    // RFC 6455 §4.4: refuse and list the supported versions.
    it.each(["7", "12", "14", "abc"])("Sec-WebSocket-Version: %s → 400/426 listing version 13", async (version) => {
      const res = await expectRejected(request({ "Sec-WebSocket-Version": version }), [400, 426])
      expect(res.headers["sec-websocket-version"]?.split(/\s*,\s*/)).toContain("13")
    })

    it("Sec-WebSocket-Version: 8 → 426 listing version 13", async () => {
      if (quirks.acceptsVersion8) {
        const res = await exchange(request({ "Sec-WebSocket-Version": "8" }))
        expect(res === "closed" ? 0 : res.status).toBe(101) // the ws reference still speaks hybi-08
        return
      }
      const res = await expectRejected(request({ "Sec-WebSocket-Version": "8" }), [426, 400])
      expect(res.headers["sec-websocket-version"]?.split(/\s*,\s*/)).toContain("13")
    })

    it("POST → 400 or 405", () => expectRejected(request({}, "POST / HTTP/1.1"), [400, 405]))
    // RFC 6455 §4.1 (item 4) requires Host; §4.2.1 then asks for a 400.
    it("missing Host → 400", () => expectRejected(request({ Host: null }), quirks.requiresHost ? [400] : [400, 101]))

    it("a header block over 16 KiB → 431 or 400, or the connection is closed", async () => {
      const res = await exchange(request({ "X-Padding": "a".repeat(17 * 1024) }))
      if (res !== "closed") expect([400, 431]).toContain(res.status)
    })

    it("garbage instead of HTTP → 400, or the connection is closed", async () => {
      const res = await exchange(Buffer.concat([binaryOf(200), Buffer.from("\r\n\r\n")]))
      if (res !== "closed") expect(res.status).toBe(400)
    })
  })

  it("a hostile connection does not disturb echoes on concurrent ones", async () => {
    const good = await Promise.all(Array.from({ length: 5 }, () => server.connect()))
    const hostile = await server.connect()
    const hostileHttp = await server.openRaw()
    for (let round = 0; round < 3; round++) {
      hostile.sendRaw(binaryOf(64 + round)) // unmasked garbage, reserved opcodes...
      hostileHttp.sendRaw(binaryOf(100 + round))
      good.forEach((c, i) => c.sendFrame({ opcode: Opcode.text, payload: `round ${round} client ${i}` }))
      await Promise.all(good.map((c, i) => c.expectMessage(Opcode.text, `round ${round} client ${i}`)))
    }
    // The hostile client is failed (a 1002 close frame, or a plain drop).
    await hostile.expectCloseOrDrop([1002, 1007, 1009])
    await Promise.all(good.map((c) => c.closeCleanly()))
  })
})
