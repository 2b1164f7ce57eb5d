// Autobahn families 3 (reserved bits) and 4 (reserved opcodes): RFC 6455 §5.2.
// Without a negotiated extension every RSV bit and reserved opcode fails the connection.
import { describe, it } from "vitest"
import { encodeFrame, Opcode } from "./RawClient.ts"
import { useEchoServer } from "./harness.ts"

const server = useEchoServer()
const rsvValues = [1, 2, 3, 4, 5, 6, 7]
const opcodes = [
  { name: "text", opcode: Opcode.text, payload: "Hello, world!" },
  { name: "binary", opcode: Opcode.binary, payload: Buffer.from([0, 1, 2, 0xff]) },
  { name: "ping", opcode: Opcode.ping, payload: "ping" },
  { name: "close", opcode: Opcode.close, payload: Buffer.from([0x03, 0xe8]) }
] as const

describe("3 reserved bits", () => {
  describe.each(opcodes)("$name", ({ opcode, payload }) => {
    it.each(rsvValues)("RSV=%i → close 1002", async (rsv) => {
      const c = await server.connect()
      c.sendFrame({ opcode, payload, rsv })
      await c.expectClose([1002])
    })
  })

  it.each(rsvValues)("3.2/3.3 style: valid text, RSV=%i text and a ping in one write → echo, then 1002, no pong", async (rsv) => {
    const c = await server.connect()
    c.sendRaw(
      Buffer.concat([
        encodeFrame({ opcode: Opcode.text, payload: "valid first" }),
        encodeFrame({ opcode: Opcode.text, payload: "bad", rsv }),
        encodeFrame({ opcode: Opcode.ping, payload: "must not be answered" })
      ])
    )
    await c.expectMessage(Opcode.text, "valid first")
    await c.expectClose([1002])
  })

  it("RSV bit on a continuation frame → close 1002", async () => {
    const c = await server.connect()
    c.sendFrame({ opcode: Opcode.text, fin: false, payload: "frag1" })
    c.sendFrame({ opcode: Opcode.continuation, fin: true, payload: "frag2", rsv: 4 })
    await c.expectClose([1002])
  })

  it("valid text sent 1 byte per write, then an RSV frame → echo, then 1002", async () => {
    const c = await server.connect()
    await c.sendChunked(
      Buffer.concat([
        encodeFrame({ opcode: Opcode.text, payload: "slow" }),
        encodeFrame({ opcode: Opcode.binary, payload: "bad", rsv: 7 })
      ]),
      1
    )
    await c.expectMessage(Opcode.text, "slow")
    await c.expectClose([1002])
  })
})

describe("4 reserved opcodes", () => {
  const reserved = [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]

  it.each(reserved)("opcode %i, empty → close 1002", async (opcode) => {
    const c = await server.connect()
    c.sendFrame({ opcode })
    await c.expectClose([1002])
  })

  it.each(reserved)("opcode %i with payload after a valid text, then a ping → echo, 1002, no pong", async (opcode) => {
    const c = await server.connect()
    c.sendRaw(
      Buffer.concat([
        encodeFrame({ opcode: Opcode.text, payload: "valid first" }),
        encodeFrame({ opcode, payload: "reserved opcode payload" }),
        encodeFrame({ opcode: Opcode.ping, payload: "must not be answered" })
      ])
    )
    await c.expectMessage(Opcode.text, "valid first")
    await c.expectClose([1002])
  })
})
