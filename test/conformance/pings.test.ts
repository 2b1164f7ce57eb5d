// Autobahn family 2: pings and pongs (RFC 6455 §5.5.2, §5.5.3).
import { describe, it } from "vitest"
import { binaryOf, encodeFrame, Opcode } from "./RawClient.ts"
import { useEchoServer } from "./harness.ts"

const server = useEchoServer()

describe("2 pings", () => {
  it.each([
    ["2.1 empty", Buffer.alloc(0)],
    ["2.2 small text", Buffer.from("Hello, world!")],
    ["2.3 small binary", Buffer.from([0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff])],
    ["2.4 125 bytes", binaryOf(125)]
  ] as const)("%s ping → pong with the same payload", async (_, payload) => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.ping, payload })
    await c.expectPong(payload)
    await c.closeCleanly()
  })

  // RFC 6455 §5.5: control frames carry at most 125 bytes.
  it("2.5 ping with 126 bytes → close 1002", async () => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.ping, payload: binaryOf(126) })
    await c.expectClose([1002])
  })

  // RFC 6455 §5.5: control frames MUST NOT be fragmented.
  it("ping with FIN=0 → close 1002", async () => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.ping, fin: false, payload: "frag" })
    await c.expectClose([1002])
  })

  it("2.6 125-byte ping sent 1 byte per write → pong", async () => {
    const c = await server.connect()
    await c.sendChunked(encodeFrame({ opcode: Opcode.ping, payload: binaryOf(125) }), 1)
    await c.expectPong(binaryOf(125))
    await c.closeCleanly()
  })

  // RFC 6455 §5.5.3: an unsolicited pong MAY be sent and needs no reply.
  it.each([
    ["2.7 empty", Buffer.alloc(0)],
    ["2.8 with payload", Buffer.from("unsolicited pong payload")]
  ] as const)("%s unsolicited pong is ignored, the connection still echoes", async (_, payload) => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.pong, payload })
    c.sendFrame({ opcode: Opcode.text, payload: "after pong" })
    await c.expectMessage(Opcode.text, "after pong")
    await c.closeCleanly()
  })

  it("2.9 unsolicited pong then ping → only the pong for the ping", async () => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.pong, payload: "unsolicited" })
    c.sendFrame({ opcode: Opcode.ping, payload: "solicited" })
    await c.expectPong("solicited")
    await c.closeCleanly()
  })

  it.each([
    ["2.10 in one write", false],
    ["2.11 one per write", true]
  ] as const)("%s: 10 pings → 10 pongs in order", async (_, separate) => {
    const c = await server.connect()
    const frames = Array.from({ length: 10 }, (_, i) => encodeFrame({ opcode: Opcode.ping, payload: `ping ${i}` }))
    if (separate) for (const f of frames) await c.sendChunked(f, f.length)
    else c.sendRaw(Buffer.concat(frames))
    for (let i = 0; i < 10; i++) await c.expectPong(`ping ${i}`)
    await c.closeCleanly()
  })
})
