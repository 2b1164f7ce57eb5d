/**
 * Bugs the fuzzers found, each pinned by the smallest input that shows it (the
 * shrunk counterexamples themselves are replayed from test/fuzz/regressions/).
 */
import { describe, expect, it } from "@effect/vitest"
import * as zlib from "node:zlib"
import * as Effect from "effect/Effect"
import { defaultDeflateOptions } from "../../src/domain/PerMessageDeflate.ts"
import { CompressionLimiter, makeCompressor } from "../../src/services/Compression.ts"

const params = { serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 15 }
const enc = (s: string) => new TextEncoder().encode(s)
// What a permessage-deflate sender puts on the wire: deflate, sync flush, tail 00 00 ff ff removed.
const deflate = (s: string) => {
  const out = zlib.deflateRawSync(enc(s), { finishFlush: zlib.constants.Z_SYNC_FLUSH })
  return out.subarray(0, out.length - 4)
}

describe("found by fuzzing", () => {
  // Seed 74814652 (inflate-74814652.json). RFC 7692 §7.2.3: a sender may end a message with a
  // BFINAL = 1 block, and the next message then starts a new deflate stream. Here that block is
  // an empty stored block whose LEN/NLEN are the 00 00 ff ff the receiver appends, so zlib reads
  // all the input and nothing says the stream ended: the next message was inflated by the ended
  // stream and came out empty.
  it.effect("a message ending with a final empty stored block does not swallow the next one", () =>
    Effect.gen(function*() {
      const compressor = yield* makeCompressor(params, defaultDeflateOptions)
      // "Hello", its sync flush kept whole, then the 3 header bits of a final stored block (0x01).
      const first = yield* compressor.decompress(Uint8Array.of(...deflate("Hello"), 0x00, 0x00, 0xff, 0xff, 0x01), 1 << 20)
      expect(new TextDecoder().decode(first)).toBe("Hello")
      const second = yield* compressor.decompress(deflate("World"), 1 << 20)
      expect(new TextDecoder().decode(second)).toBe("World")
    }).pipe(Effect.scoped, Effect.provide(CompressionLimiter.layer(2))))
})
