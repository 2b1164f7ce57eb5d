// Autobahn family 5: fragmentation (RFC 6455 §5.4).
import { describe, it } from "vitest"
import { binaryOf, encodeFragmented, encodeFrame, fragmentsOf, Opcode, textOf } from "./RawClient.ts"
import { useEchoServer } from "./harness.ts"

const server = useEchoServer()
const text = (opcode: number, payload: string, fin: boolean) => encodeFrame({ opcode, payload, fin })

describe("5 fragmentation", () => {
  // RFC 6455 §5.5: control frames MUST NOT be fragmented.
  it.each([
    ["5.1 ping", Opcode.ping],
    ["5.2 pong", Opcode.pong],
    ["close", Opcode.close]
  ] as const)("%s in 2 fragments → close 1002", async (_, opcode) => {
    const c = await server.connect()
    c.sendRaw(
      Buffer.concat([
        encodeFrame({ opcode, fin: false, payload: Buffer.from([0x03, 0xe8]) }),
        encodeFrame({ opcode: Opcode.continuation, fin: true, payload: "x" })
      ])
    )
    await c.expectClose([1002])
  })

  it.each([
    ["5.3 in one write", "one"],
    ["5.4 one write per frame", "frames"],
    ["5.5 1 byte per write", "bytes"]
  ] as const)("text in 2 fragments, %s → echo", async (_, mode) => {
    const c = await server.connect()
    const frames = [text(Opcode.text, "fragment1", false), text(Opcode.continuation, "fragment2", true)]
    if (mode === "one") c.sendRaw(Buffer.concat(frames))
    else if (mode === "frames") for (const f of frames) await c.sendChunked(f, f.length, 5)
    else await c.sendChunked(Buffer.concat(frames), 1)
    await c.expectMessage(Opcode.text, "fragment1fragment2")
    await c.closeCleanly()
  })

  it.each([
    ["5.6 in one write", "one"],
    ["5.7 one write per frame", "frames"],
    ["5.8 1 byte per write", "bytes"]
  ] as const)("text in 2 fragments with a ping between, %s → pong, then echo", async (_, mode) => {
    const c = await server.connect()
    const frames = [
      text(Opcode.text, "fragment1", false),
      encodeFrame({ opcode: Opcode.ping, payload: "pongme!" }),
      text(Opcode.continuation, "fragment2", true)
    ]
    if (mode === "one") c.sendRaw(Buffer.concat(frames))
    else if (mode === "frames") for (const f of frames) await c.sendChunked(f, f.length, 5)
    else await c.sendChunked(Buffer.concat(frames), 1)
    await c.expectPong("pongme!")
    await c.expectMessage(Opcode.text, "fragment1fragment2")
    await c.closeCleanly()
  })

  it("5.19 text in 5 fragments with 2 pings and a pong interleaved → pongs, then echo", async () => {
    const c = await server.connect()
    c.sendRaw(
      Buffer.concat([
        text(Opcode.text, "fragment1", false),
        text(Opcode.continuation, "fragment2", false),
        encodeFrame({ opcode: Opcode.ping, payload: "pongme 1!" }),
        text(Opcode.continuation, "fragment3", false),
        encodeFrame({ opcode: Opcode.pong, payload: "unsolicited" }),
        text(Opcode.continuation, "fragment4", false),
        encodeFrame({ opcode: Opcode.ping, payload: "pongme 2!" }),
        text(Opcode.continuation, "fragment5", true)
      ])
    )
    await c.expectPong("pongme 1!")
    await c.expectPong("pongme 2!")
    await c.expectMessage(Opcode.text, "fragment1fragment2fragment3fragment4fragment5")
    await c.closeCleanly()
  })

  it.each([1, 2, 7, 100])("text of 1000 bytes in %i-byte fragments → echo", async (size) => {
    const c = await server.connect()
    const payload = Buffer.from(textOf(1000))
    c.sendRaw(encodeFragmented(Opcode.text, fragmentsOf(payload, size)))
    await c.expectMessage(Opcode.text, payload)
    await c.closeCleanly()
  })

  it("binary of 300 bytes in 1-byte fragments → echo", async () => {
    const c = await server.connect()
    c.sendRaw(encodeFragmented(Opcode.binary, fragmentsOf(binaryOf(300), 1)))
    await c.expectMessage(Opcode.binary, binaryOf(300))
    await c.closeCleanly()
  })

  it.each([
    ["all fragments empty", ["", "", ""], ""],
    ["empty first fragment", ["", "abc"], "abc"],
    ["empty middle fragments", ["ab", "", "", "cd"], "abcd"],
    ["empty last fragment", ["abc", ""], "abc"]
  ] as const)("empty fragments: %s → echo", async (_, parts, expected) => {
    const c = await server.connect()
    c.sendRaw(encodeFragmented(Opcode.text, parts.map((p) => Buffer.from(p))))
    await c.expectMessage(Opcode.text, expected)
    await c.closeCleanly()
  })

  it("binary in empty fragments → empty binary echo", async () => {
    const c = await server.connect()
    c.sendRaw(encodeFragmented(Opcode.binary, [Buffer.alloc(0), Buffer.alloc(0)]))
    await c.expectMessage(Opcode.binary, Buffer.alloc(0))
    await c.closeCleanly()
  })

  // RFC 6455 §5.4: a continuation needs an open fragmented message.
  it.each([
    ["5.9 FIN=1, in one write", true, "one"],
    ["5.10 FIN=1, one write per frame", true, "frames"],
    ["5.11 FIN=1, 1 byte per write", true, "bytes"],
    ["5.12 FIN=0, in one write", false, "one"],
    ["5.13 FIN=0, one write per frame", false, "frames"],
    ["5.14 FIN=0, 1 byte per write", false, "bytes"]
  ] as const)("continuation without a start, %s → close 1002", async (_, fin, mode) => {
    const c = await server.connect()
    const frames = [
      text(Opcode.continuation, "non-continuation payload", fin),
      text(Opcode.text, "Hello, world!", true)
    ]
    if (mode === "one") c.sendRaw(Buffer.concat(frames))
    else if (mode === "frames") for (const f of frames) await c.sendChunked(f, f.length, 5)
    else await c.sendChunked(Buffer.concat(frames), 1)
    await c.expectClose([1002])
  })

  it("5.15 complete fragmented message, then a continuation without start → echo, then 1002", async () => {
    const c = await server.connect()
    c.sendRaw(
      Buffer.concat([
        text(Opcode.text, "fragment1", false),
        text(Opcode.continuation, "fragment2", true),
        text(Opcode.continuation, "fragment3", false),
        text(Opcode.text, "fragment4", true)
      ])
    )
    await c.expectMessage(Opcode.text, "fragment1fragment2")
    await c.expectClose([1002])
  })

  it.each([
    ["5.16 two unstarted continuation runs", [Opcode.continuation, false, Opcode.continuation, true]],
    ["5.17 two unstarted FIN continuations", [Opcode.continuation, true, Opcode.continuation, true]]
  ] as const)("%s → close 1002", async (_, spec) => {
    const c = await server.connect()
    c.sendRaw(
      Buffer.concat([
        text(spec[0], "fragment1", spec[1]),
        text(spec[2], "fragment2", spec[3]),
        text(Opcode.text, "fragment3", true)
      ])
    )
    await c.expectClose([1002])
  })

  it.each([
    ["5.18 text", Opcode.text],
    ["binary", Opcode.binary]
  ] as const)("%s data frame while a fragmented message is open → close 1002", async (_, opcode) => {
    const c = await server.connect()
    c.sendRaw(Buffer.concat([text(Opcode.text, "fragment1", false), text(opcode, "fragment2", true)]))
    await c.expectClose([1002])
  })

  it("a close frame in the middle of a fragmented message → close handshake, no echo", async () => {
    const c = await server.connect()
    c.sendRaw(
      Buffer.concat([
        text(Opcode.text, "fragment1", false),
        encodeFrame({ opcode: Opcode.close, payload: Buffer.from([0x03, 0xe8]) })
      ])
    )
    await c.expectClose([1000])
  })
})
