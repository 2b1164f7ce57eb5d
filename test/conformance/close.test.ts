// Autobahn family 7: the close handshake (RFC 6455 §5.5.1, §7).
import { describe, it } from "vitest"
import { closePayload, encodeFrame, NoStatus, Opcode } from "./RawClient.ts"
import { useEchoServer } from "./harness.ts"

const server = useEchoServer()
const close = (code?: number, reason?: string | Uint8Array) =>
  encodeFrame({ opcode: Opcode.close, payload: closePayload(code, reason) })

describe("7 close", () => {
  it("7.1.1 echo, then close 1000 → close 1000 and TCP end", async () => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.text, payload: "Hello World!" })
    await c.expectMessage(Opcode.text, "Hello World!")
    c.sendRaw(close(1000))
    // The server echoes the code (RFC 6455 §5.5.1) and closes TCP first (§7.1.1).
    const frame = await c.nextFrame()
    if (frame.opcode !== Opcode.close || frame.payload.readUInt16BE(0) !== 1000) {
      throw new Error(`expected close 1000, got opcode ${frame.opcode} <${frame.payload.toString("hex")}>`)
    }
    await c.expectTcpClosed()
  })

  it.each([
    ["7.1.2 a second close", close(1000)],
    ["7.1.3 a ping", encodeFrame({ opcode: Opcode.ping, payload: "Hello World!" })],
    ["7.1.4 a text", encodeFrame({ opcode: Opcode.text, payload: "Hello World!" })],
    ["a binary", encodeFrame({ opcode: Opcode.binary, payload: Buffer.from([1, 2, 3]) })]
  ] as const)("%s after the close frame gets no answer", async (_, after) => {
    const c = await server.connect()
    c.sendRaw(Buffer.concat([close(1000), after]))
    // expectClose fails on any frame before the close and on bytes after it.
    await c.expectClose([1000])
  })

  it("7.1.5 close in the middle of a fragmented message: the message is dropped", async () => {
    const c = await server.connect()
    c.sendRaw(
      Buffer.concat([
        encodeFrame({ opcode: Opcode.text, fin: false, payload: "fragment1" }),
        close(1000),
        encodeFrame({ opcode: Opcode.continuation, fin: true, payload: "fragment2" })
      ])
    )
    await c.expectClose([1000])
  })

  it("7.1.6 a large message, then close, then a ping → echo, close, no pong", async () => {
    const c = await server.connect()
    const big = Buffer.alloc(256 * 1024, 0x2a)
    c.sendRaw(
      Buffer.concat([
        encodeFrame({ opcode: Opcode.text, payload: big }),
        close(1000),
        encodeFrame({ opcode: Opcode.ping, payload: "late" })
      ])
    )
    await c.expectMessage(Opcode.text, big)
    await c.expectClose([1000])
  })

  it("7.3.1 close with an empty payload → close with an empty payload or 1000", async () => {
    const c = await server.connect()
    c.sendRaw(close())
    await c.expectClose([NoStatus, 1000])
  })

  it("7.3.2 close with a 1-byte payload → close 1002", async () => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.close, payload: Buffer.from([0x03]) })
    await c.expectClose([1002])
  })

  it.each([
    ["7.3.3 1000, no reason", ""],
    ["7.3.4 1000 with a reason", "Hello World!"],
    ["1000 with a UTF-8 reason", "κόσμε 😀"],
    ["7.3.5 1000 with a 123-byte reason (125-byte payload)", "*".repeat(123)]
  ] as const)("close %s → close 1000", async (_, reason) => {
    const c = await server.connect()
    c.sendRaw(close(1000, reason))
    await c.expectClose([1000])
  })

  // RFC 6455 §5.5: control frame payloads are at most 125 bytes.
  it("7.3.6 close with a 124-byte reason (126-byte payload) → close 1002", async () => {
    const c = await server.connect()
    c.sendRaw(close(1000, "*".repeat(124)))
    await c.expectClose([1002])
  })

  // RFC 6455 §8.1 asks for 1007; 1002 is also a fair reading for a bad close frame.
  it.each([
    ["7.5.1 surrogate in the reason", Buffer.from("cebae1bdb9cf83cebcceb5eda080656469746564", "hex")],
    ["overlong in the reason", Buffer.from("c0af", "hex")],
    ["truncated reason", Buffer.from("41e0a0", "hex")]
  ] as const)("close 1000 with invalid UTF-8: %s → close 1007 (or 1002)", async (_, reason) => {
    const c = await server.connect()
    c.sendRaw(close(1000, reason))
    await c.expectClose([1007, 1002])
  })

  // RFC 6455 §5.5.1: the server replies with a close, usually echoing the code.
  it.each([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999])(
    "7.7 valid code %i → close with the same code or 1000",
    async (code) => {
      const c = await server.connect()
      c.sendRaw(close(code, "reason"))
      await c.expectClose([code, 1000])
    }
  )

  // 1012-1014 are IANA-registered (RFC 6455 §11.7) but older Autobahn runs call them invalid.
  it.each([1012, 1013, 1014])("code %i (IANA-registered) → echoed, 1000 or 1002", async (code) => {
    const c = await server.connect()
    c.sendRaw(close(code))
    await c.expectClose([code, 1000, 1002])
  })

  // RFC 6455 §7.4.1/§7.4.2: these codes must never appear on the wire.
  it.each([0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])(
    "7.9 invalid code %i → close 1002",
    async (code) => {
      const c = await server.connect()
      c.sendRaw(close(code))
      await c.expectClose([1002])
    }
  )

  // RFC 6455 §7.1.7: failing the connection means closing it, without waiting for the peer.
  it("after a protocol error the server ends TCP even if the client never answers the close", async () => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.ping, payload: Buffer.alloc(126) })
    const frame = await c.nextFrame()
    if (frame.opcode !== Opcode.close || frame.payload.readUInt16BE(0) !== 1002) {
      throw new Error(`expected close 1002, got opcode ${frame.opcode} <${frame.payload.toString("hex")}>`)
    }
    await c.expectTcpClosed(3_000)
  })
})
