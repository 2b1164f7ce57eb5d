// Autobahn family 1: framing of text and binary messages (RFC 6455 §5.2).
import { describe, expect, it } from "vitest"
import { binaryOf, encodeFrame, Opcode, textOf } from "./RawClient.ts"
import { useEchoServer } from "./harness.ts"

const server = useEchoServer()
const lengths = [0, 125, 126, 127, 128, 65535, 65536]
const kinds = [
  { name: "text", opcode: Opcode.text, payload: (n: number) => Buffer.from(textOf(n)) },
  { name: "binary", opcode: Opcode.binary, payload: binaryOf }
] as const

describe("1 framing", () => {
  describe.each(kinds)("$name", ({ opcode, payload }) => {
    it.each(lengths)("1.x %i bytes, one frame, echoed exactly", async (n) => {
      const c = await server.connect()
      c.sendFrame({ opcode, payload: payload(n) })
      await c.expectMessage(opcode, payload(n))
      await c.closeCleanly()
    })

    // RFC 6455 §5.2 asks senders for minimal lengths, but Autobahn-compatible
    // servers accept non-minimal ones; a stricter server may fail with 1002.
    it.each([
      [0, 16],
      [5, 16],
      [125, 16],
      [0, 64],
      [125, 64],
      [126, 64],
      [65535, 64]
    ] as const)("%i bytes with a %i-bit length form", async (n, form) => {
      const c = await server.connect()
      c.sendFrame({ opcode, payload: payload(n), lengthForm: form })
      await c.expectMessage(opcode, payload(n))
      await c.closeCleanly()
    })

    it.each([0, 125, 126, 127, 128])("1.1.8 style: %i bytes sent 1 byte per write", async (n) => {
      const c = await server.connect()
      await c.sendChunked(encodeFrame({ opcode, payload: payload(n) }), 1)
      await c.expectMessage(opcode, payload(n))
      await c.closeCleanly()
    })

    it.each([65535, 65536])("%i bytes sent in 997-byte writes", async (n) => {
      const c = await server.connect()
      await c.sendChunked(encodeFrame({ opcode, payload: payload(n) }), 997)
      await c.expectMessage(opcode, payload(n))
      await c.closeCleanly()
    })
  })

  it("several messages in one write are echoed in order", async () => {
    const c = await server.connect()
    const msgs = [textOf(10), textOf(200), textOf(0)]
    c.sendRaw(
      Buffer.concat([
        ...msgs.map((m) => encodeFrame({ opcode: Opcode.text, payload: m })),
        encodeFrame({ opcode: Opcode.binary, payload: binaryOf(300) })
      ])
    )
    for (const m of msgs) await c.expectMessage(Opcode.text, m)
    await c.expectMessage(Opcode.binary, binaryOf(300))
    await c.closeCleanly()
  })

  // RFC 6455 §5.1: the server MUST close the connection on an unmasked client frame.
  it("an unmasked client frame → close 1002", async () => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.text, payload: "hello", mask: false })
    await c.expectClose([1002])
  })

  it("server frames are unmasked and have minimal headers for small payloads", async () => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.binary, payload: binaryOf(3) })
    const frame = await c.nextFrame()
    expect(frame).toMatchObject({ fin: true, rsv: 0, opcode: Opcode.binary })
    expect(frame.payload.equals(binaryOf(3))).toBe(true)
    await c.closeCleanly()
  })
})
