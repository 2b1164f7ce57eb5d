// Autobahn family 6: UTF-8 handling of text messages (RFC 6455 §5.6, §8.1).
import { describe, it } from "vitest"
import { encodeFragmented, encodeFrame, fragmentsOf, Opcode } from "./RawClient.ts"
import { quirks, useEchoServer } from "./harness.ts"

const server = useEchoServer()
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex")
const KOSME = "cebae1bdb9cf83cebcceb5" // κόσμε

const valid: ReadonlyArray<readonly [string, Buffer]> = [
  ["empty", Buffer.alloc(0)],
  ["ASCII", Buffer.from("Hello, world!")],
  ["6.2 mixed 2-byte", Buffer.from("Hello-µ@ßöäüàá-UTF-8!!")],
  ["6.5 κόσμε", hex(KOSME)],
  ["U+0000", hex("00")],
  ["U+0080 first 2-byte", hex("c280")],
  ["U+0800 first 3-byte", hex("e0a080")],
  ["U+10000 first 4-byte", hex("f0908080")],
  ["U+007F last 1-byte", hex("7f")],
  ["U+07FF last 2-byte", hex("dfbf")],
  ["U+FFFF last 3-byte", hex("efbfbf")],
  ["U+10FFFF last 4-byte", hex("f48fbfbf")],
  ["U+D7FF before surrogates", hex("ed9fbf")],
  ["U+E000 after surrogates", hex("ee8080")],
  ["U+FFFD replacement char", hex("efbfbd")],
  ["U+FFFE noncharacter", hex("efbfbe")],
  ["U+FDD0 noncharacter", hex("efb790")],
  ["4-byte emoji", Buffer.from("emoji 😀 done")]
]

const invalid: ReadonlyArray<readonly [string, Buffer]> = [
  ["6.3 κόσμε + surrogate ED A0 80 + text", hex(KOSME + "eda080" + "656469746564")],
  ["lone continuation 80", hex("80")],
  ["lone continuation BF", hex("bf")],
  ["continuations 80 BF 80", hex("80bf80")],
  ["C0 80 overlong NUL", hex("c080")],
  ["C1 BF overlong", hex("c1bf")],
  ["E0 80 AF overlong '/'", hex("e080af")],
  ["E0 9F BF overlong", hex("e09fbf")],
  ["F0 80 80 AF overlong '/'", hex("f08080af")],
  ["F0 8F BF BF overlong", hex("f08fbfbf")],
  ["F8 88 80 80 AF 5-byte form", hex("f8888080af")],
  ["FC 84 80 80 80 AF 6-byte form", hex("fc84808080af")],
  ["ED A0 80 surrogate U+D800", hex("eda080")],
  ["ED AD BF surrogate U+DB7F", hex("edadbf")],
  ["ED B0 80 surrogate U+DC00", hex("edb080")],
  ["ED BF BF surrogate U+DFFF", hex("edbfbf")],
  ["surrogate pair ED A0 80 ED B0 80", hex("eda080edb080")],
  ["F4 90 80 80 above U+10FFFF", hex("f4908080")],
  ["F5 80 80 80", hex("f5808080")],
  ["FE", hex("fe")],
  ["FF", hex("ff")],
  ["FE FE FF FF", hex("fefeffff")],
  ["C2 41 missing continuation", hex("c241")],
  ["E0 A0 41 missing continuation", hex("e0a041")],
  ["truncated 2-byte at end", hex("41c2")],
  ["truncated 3-byte at end", hex("41e0a0")],
  ["truncated 4-byte at end", hex("41f09080")],
  ["κόσμε truncated mid-character", hex("cebae1bd")]
]

describe("6 UTF-8", () => {
  describe("valid text is echoed", () => {
    it.each(valid)("%s, one frame", async (_, payload) => {
      const c = await server.connect()
      c.sendFrame({ opcode: Opcode.text, payload })
      await c.expectMessage(Opcode.text, payload)
      await c.closeCleanly()
    })

    // Autobahn 6.x fragments each sample; a code point may span fragments.
    it.each(valid.filter(([, p]) => p.length > 1))("%s, split into 2 fragments at every byte position", async (_, payload) => {
      for (let k = 1; k < payload.length; k++) {
        const c = await server.connect()
        c.sendRaw(encodeFragmented(Opcode.text, [payload.subarray(0, k), payload.subarray(k)]))
        await c.expectMessage(Opcode.text, payload)
        await c.closeCleanly()
      }
    })

    it.each(valid.filter(([, p]) => p.length > 1))("%s, in 1-byte fragments", async (_, payload) => {
      const c = await server.connect()
      c.sendRaw(encodeFragmented(Opcode.text, fragmentsOf(payload, 1)))
      await c.expectMessage(Opcode.text, payload)
      await c.closeCleanly()
    })
  })

  describe("invalid text → close 1007", () => {
    it.each(invalid)("%s, one frame", async (_, payload) => {
      const c = await server.connect()
      c.sendFrame({ opcode: Opcode.text, payload })
      await c.expectClose([1007])
    })

    it.each(invalid.filter(([, p]) => p.length > 1))("%s, split into 2 fragments at every byte position", async (_, payload) => {
      for (let k = 1; k < payload.length; k++) {
        const c = await server.connect()
        c.sendRaw(encodeFragmented(Opcode.text, [payload.subarray(0, k), payload.subarray(k)]))
        await c.expectClose([1007])
      }
    })

    it.each(invalid.filter(([, p]) => p.length > 1))("%s, in 1-byte fragments", async (_, payload) => {
      const c = await server.connect()
      c.sendRaw(encodeFragmented(Opcode.text, fragmentsOf(payload, 1)))
      await c.expectClose([1007])
    })

    it.each(invalid.slice(0, 4))("%s, one frame sent 1 byte per write", async (_, payload) => {
      const c = await server.connect()
      await c.sendChunked(encodeFrame({ opcode: Opcode.text, payload }), 1)
      await c.expectClose([1007])
    })

    it("invalid text after a valid one in the same write → echo, then 1007", async () => {
      const c = await server.connect()
      c.sendRaw(
        Buffer.concat([
          encodeFrame({ opcode: Opcode.text, payload: "fine" }),
          encodeFrame({ opcode: Opcode.text, payload: hex("eda080") })
        ])
      )
      await c.expectMessage(Opcode.text, "fine")
      await c.expectClose([1007])
    })

    it("binary messages are not UTF-8 checked", async () => {
      const c = await server.connect()
      c.sendFrame({ opcode: Opcode.binary, payload: hex("eda080fffe") })
      await c.expectMessage(Opcode.binary, hex("eda080fffe"))
      await c.closeCleanly()
    })
  })

  // Autobahn 6.4.x: the server should fail as soon as the invalid byte arrives,
  // not when the message completes. The ws reference only checks complete
  // messages, so with it (quirks.utf8FailFast false) a late 1007 is accepted.
  describe("fail-fast on invalid UTF-8 in an unfinished message", () => {
    it.each([
      ["6.4.1 κόσμε + F4 90 80 80 in fragment 1", hex(KOSME + "f4908080"), "656469746564"],
      ["6.4.2 κόσμε F4 in fragment 1, 90 in fragment 2", hex(KOSME + "f4"), "90808065646974"],
      ["surrogate in fragment 1", hex("41eda080"), "42"]
    ] as const)("%s → close 1007 before the final fragment", async (name, first, rest) => {
      const c = await server.connect()
      const second = hex(rest)
      const withBadSecond = name.startsWith("6.4.2")
      c.sendFrame({ opcode: Opcode.text, fin: false, payload: first })
      if (withBadSecond) c.sendFrame({ opcode: Opcode.continuation, fin: false, payload: second.subarray(0, 1) })
      if (quirks.utf8FailFast) {
        await c.expectClose([1007], 1_000)
        return
      }
      await new Promise((r) => setTimeout(r, 200))
      if (c.buffered() === 0 && !c.isEnded()) {
        c.sendFrame({ opcode: Opcode.continuation, fin: true, payload: withBadSecond ? second.subarray(1) : second })
      }
      await c.expectClose([1007])
    })
  })
})
