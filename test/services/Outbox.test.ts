import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { pack } from "../../src/services/Outbox.ts"
import { concatBytes } from "../support/Bytes.ts"

const view = (x: Uint8Array) => Buffer.from(x.buffer, x.byteOffset, x.length)
const sum = (xs: ReadonlyArray<Uint8Array>) => xs.reduce((n, x) => n + x.length, 0)

describe("Outbox.pack", () => {
  it("small frames of one turn become one buffer", () => {
    const batch = [new Uint8Array([1, 2]), new Uint8Array([3]), new Uint8Array(100).fill(4)]
    const out = pack(batch, sum(batch))
    expect(out.length).toBe(1)
    expect(new Uint8Array(out[0]!)).toEqual(concatBytes(batch))
  })

  it("an echo's header and large payload go out as they are: no copy", () => {
    const header = new Uint8Array([0x82, 0x7e, 0x40, 0x00])
    const payload = new Uint8Array(16384)
    const out = pack([header, payload], 4 + 16384)
    expect(out.length).toBe(2)
    expect(out[0]).toBe(header)
    expect(out[1]).toBe(payload)
  })

  it("property: same bytes in order; large buffers by reference; coalesced runs at most 64 KiB", () => {
    const chunk = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 300 }),
      fc.integer({ min: 1, max: 4095 }).map((n) => new Uint8Array(n).fill(n & 0xff)),
      fc.integer({ min: 4096, max: 70000 }).map((n) => new Uint8Array(n).fill(n & 0xff))
    )
    fc.assert(
      fc.property(fc.array(chunk, { minLength: 1, maxLength: 120 }), (batch) => {
        const out = pack(batch, sum(batch))
        expect(view(concatBytes(out)).equals(view(concatBytes(batch)))).toBe(true)
        const inputs = new Set<Uint8Array>(batch)
        const outputs = new Set<Uint8Array>(out)
        for (const b of batch) if (b.length >= 4096) expect(outputs.has(b)).toBe(true)
        for (const o of out) if (!inputs.has(o)) expect(o.length).toBeLessThanOrEqual(64 * 1024)
        // Never two small buffers side by side: they would have been coalesced.
        for (let i = 1; i < out.length; i++) {
          const small = (b: Uint8Array) => b.length < 4096 && inputs.has(b)
          if (small(out[i - 1]!) && small(out[i]!)) {
            expect(out[i - 1]!.length + out[i]!.length).toBeGreaterThan(64 * 1024)
          }
        }
      }),
      { numRuns: 200 }
    )
  })
})
