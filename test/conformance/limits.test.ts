// Autobahn families 9 (limits/performance) and 10 (auto-fragmentation).
// wsreactor's message limit is 16 MiB of payload; one byte more → 1009 (RFC 6455 §7.4.1).
import { describe, it } from "vitest"
import type { RawClient } from "./RawClient.ts"
import { binaryOf, encodeFragmented, encodeFrame, fragmentsOf, Opcode, textOf } from "./RawClient.ts"
import { useEchoServer } from "./harness.ts"

const server = useEchoServer()
const KiB = 1024
const MiB = 1024 * KiB
const LIMIT = 16 * MiB
const BIG_TIMEOUT = 15_000

const payloadOf = (opcode: number, n: number): Buffer => (opcode === Opcode.text ? Buffer.from(textOf(n)) : binaryOf(n))
const kinds = [
  { name: "text", opcode: Opcode.text },
  { name: "binary", opcode: Opcode.binary }
] as const

/** Writes `bytes` in slices, stopping early once the server has answered or closed. */
const sendUntilReply = async (c: RawClient, bytes: Buffer, slice = MiB): Promise<void> => {
  for (let i = 0; i < bytes.length; i += slice) {
    if (c.buffered() > 0 || c.isEnded()) return
    c.sendRaw(bytes.subarray(i, i + slice))
    while (c.socket.writableLength > 4 * MiB && c.buffered() === 0 && !c.isEnded()) {
      await new Promise((r) => setTimeout(r, 5))
    }
  }
}

describe("9 limits", () => {
  describe.each(kinds)("$name", ({ opcode }) => {
    it.each([64 * KiB, 256 * KiB, MiB, 4 * MiB])(
      "9.1/9.2 %i bytes in one frame → echo",
      async (n) => {
        const c = await server.connect()
        const payload = payloadOf(opcode, n)
        c.sendFrame({ opcode, payload })
        await c.expectMessage(opcode, payload, BIG_TIMEOUT)
        await c.closeCleanly()
      },
      BIG_TIMEOUT
    )

    it.each([64 * KiB, 256 * KiB, MiB, 4 * MiB])(
      "9.3/9.4 %i bytes in 64 KiB fragments → echo",
      async (n) => {
        const c = await server.connect()
        const payload = payloadOf(opcode, n)
        c.sendRaw(encodeFragmented(opcode, fragmentsOf(payload, 64 * KiB)))
        await c.expectMessage(opcode, payload, BIG_TIMEOUT)
        await c.closeCleanly()
      },
      BIG_TIMEOUT
    )

    it.each([64, 256, 1024, 4096])(
      "9.5/9.6 1 MiB in one frame, written in %i-byte slices → echo",
      async (slice) => {
        const c = await server.connect()
        const payload = payloadOf(opcode, MiB)
        await c.sendChunked(encodeFrame({ opcode, payload }), slice)
        await c.expectMessage(opcode, payload, BIG_TIMEOUT)
        await c.closeCleanly()
      },
      BIG_TIMEOUT
    )

    it("9.7/9.8 1000 small messages in one write → all echoed in order", async () => {
      const c = await server.connect()
      const msgs = Array.from({ length: 1000 }, (_, i) => payloadOf(opcode, i % 40))
      c.sendRaw(Buffer.concat(msgs.map((payload) => encodeFrame({ opcode, payload }))))
      for (const m of msgs) await c.expectMessage(opcode, m)
      await c.closeCleanly()
    })
  })

  it(
    "16 MiB text in one frame (exactly the limit) → echo",
    async () => {
      const c = await server.connect()
      const payload = payloadOf(Opcode.text, LIMIT)
      await sendUntilReply(c, encodeFrame({ opcode: Opcode.text, payload }))
      await c.expectMessage(Opcode.text, payload, BIG_TIMEOUT)
      await c.closeCleanly()
    },
    BIG_TIMEOUT * 2
  )

  it(
    "16 MiB binary in 64 KiB fragments (exactly the limit) → echo",
    async () => {
      const c = await server.connect()
      const payload = payloadOf(Opcode.binary, LIMIT)
      await sendUntilReply(c, encodeFragmented(Opcode.binary, fragmentsOf(payload, 64 * KiB)))
      await c.expectMessage(Opcode.binary, payload, BIG_TIMEOUT)
      await c.closeCleanly()
    },
    BIG_TIMEOUT * 2
  )

  it.each(kinds)(
    "$name of 16 MiB + 1 in one frame → close 1009",
    async ({ opcode }) => {
      const c = await server.connect()
      await sendUntilReply(c, encodeFrame({ opcode, payload: payloadOf(opcode, LIMIT + 1) }))
      await c.expectClose([1009], BIG_TIMEOUT)
    },
    BIG_TIMEOUT * 2
  )

  it.each(kinds)(
    "$name of 16 MiB + 1 in 64 KiB fragments → close 1009",
    async ({ opcode }) => {
      const c = await server.connect()
      const payload = payloadOf(opcode, LIMIT + 1)
      await sendUntilReply(c, encodeFragmented(opcode, fragmentsOf(payload, 64 * KiB)))
      await c.expectClose([1009], BIG_TIMEOUT)
    },
    BIG_TIMEOUT * 2
  )

  it("a 64-bit length with the top bit set → close (1002 or 1009)", async () => {
    const c = await server.connect()
    // RFC 6455 §5.2: the most significant bit of a 64-bit length MUST be 0.
    const header = Buffer.from([0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4])
    c.sendRaw(header)
    await c.expectClose([1002, 1009])
  })
})

describe("10 auto-fragmentation", () => {
  // 10.1.1: the server may fragment its reply; readMessage reassembles it.
  it.each(kinds)("10.1.1 $name of 65536 bytes in one frame → echo (any fragmentation)", async ({ opcode }) => {
    const c = await server.connect()
    const payload = payloadOf(opcode, 65536)
    c.sendFrame({ opcode, payload })
    await c.expectMessage(opcode, payload)
    await c.closeCleanly()
  })

  // At most 4096 fragments per message: servers may cap the fragment count as a
  // DoS guard (ws closes with 1008 past 16384), which RFC 6455 §10.4 allows.
  it.each([1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384, 65536])(
    "binary of min(65536, 4096 fragments) bytes sent as %i-byte fragments → echo",
    async (size) => {
      const c = await server.connect()
      const payload = binaryOf(Math.min(65536, size * 4096))
      c.sendRaw(encodeFragmented(Opcode.binary, fragmentsOf(payload, size)))
      await c.expectMessage(Opcode.binary, payload, 5_000)
      await c.closeCleanly()
    },
    10_000
  )
})
