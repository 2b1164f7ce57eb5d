import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { parseExtensions } from "../../src/domain/Extensions.ts"
import type { ExtensionOffer } from "../../src/domain/Extensions.ts"
import {
  defaultDeflateOptions,
  InvalidDeflateOptions,
  negotiate,
  resolveDeflateOptions
} from "../../src/domain/PerMessageDeflate.ts"
import type { DeflateOptions, DeflateParams } from "../../src/domain/PerMessageDeflate.ts"

const offersOf = (header: string): ReadonlyArray<ExtensionOffer> => {
  const parsed = parseExtensions(header)
  if (parsed._tag === "Error") throw new Error(`test header does not parse: ${parsed.detail}`)
  return parsed.offers
}

const params = (p: Partial<DeflateParams> = {}): DeflateParams => ({
  serverNoContextTakeover: false,
  clientNoContextTakeover: false,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: 15,
  ...p
})

const PMD = "permessage-deflate"

describe("negotiate: accepted offers (default options)", () => {
  // [offer header, exact response, agreed params]
  const table: ReadonlyArray<readonly [string, string, DeflateParams]> = [
    // RFC 7692 §7.1 shapes, one parameter at a time
    [PMD, PMD, params()],
    [`${PMD}; client_max_window_bits`, PMD, params()], // browsers, ws: no value → nothing to answer
    [`${PMD}; server_no_context_takeover`, `${PMD}; server_no_context_takeover`, params({ serverNoContextTakeover: true })],
    [`${PMD}; client_no_context_takeover`, `${PMD}; client_no_context_takeover`, params({ clientNoContextTakeover: true })],
    [`${PMD}; server_max_window_bits=9`, `${PMD}; server_max_window_bits=9`, params({ serverMaxWindowBits: 9 })],
    [`${PMD}; server_max_window_bits=12`, `${PMD}; server_max_window_bits=12`, params({ serverMaxWindowBits: 12 })],
    [`${PMD}; server_max_window_bits=15`, `${PMD}; server_max_window_bits=15`, params()],
    [`${PMD}; client_max_window_bits=9`, `${PMD}; client_max_window_bits=9`, params({ clientMaxWindowBits: 9 })],
    [`${PMD}; client_max_window_bits=15`, `${PMD}; client_max_window_bits=15`, params()],
    // 8 for the client's window is fine: we inflate with 9, which is always safe
    [`${PMD}; client_max_window_bits=8`, `${PMD}; client_max_window_bits=8`, params({ clientMaxWindowBits: 9 })],
    // quoted values equal tokens (RFC 7692 §5.1 / RFC 6455 §9.1)
    [`${PMD}; server_max_window_bits="10"`, `${PMD}; server_max_window_bits=10`, params({ serverMaxWindowBits: 10 })],
    // names are case-insensitive
    [`Permessage-Deflate; Server_No_Context_Takeover`, `${PMD}; server_no_context_takeover`, params({ serverNoContextTakeover: true })],
    // Autobahn 12.x/13.x combinations
    [`${PMD}; client_no_context_takeover; client_max_window_bits`, `${PMD}; client_no_context_takeover`, params({ clientNoContextTakeover: true })],
    [
      `${PMD}; client_no_context_takeover; client_max_window_bits; server_no_context_takeover`,
      `${PMD}; server_no_context_takeover; client_no_context_takeover`,
      params({ serverNoContextTakeover: true, clientNoContextTakeover: true })
    ],
    [
      `${PMD}; client_max_window_bits; server_max_window_bits=9`,
      `${PMD}; server_max_window_bits=9`,
      params({ serverMaxWindowBits: 9 })
    ],
    [
      `${PMD}; client_max_window_bits; server_max_window_bits=15`,
      `${PMD}; server_max_window_bits=15`,
      params()
    ],
    [
      `${PMD}; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=9`,
      `${PMD}; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9`,
      params({ serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 9 })
    ],
    [
      `${PMD}; server_no_context_takeover; server_max_window_bits=15; client_max_window_bits=9`,
      `${PMD}; server_no_context_takeover; server_max_window_bits=15; client_max_window_bits=9`,
      params({ serverNoContextTakeover: true, clientMaxWindowBits: 9 })
    ],
    // parameters in any order
    [
      `${PMD}; server_max_window_bits=10; client_max_window_bits=11; client_no_context_takeover; server_no_context_takeover`,
      `${PMD}; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11`,
      params({ serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 11 })
    ],
    // several offers: the first acceptable one wins
    [`${PMD}; server_max_window_bits=9, ${PMD}; server_max_window_bits=15`, `${PMD}; server_max_window_bits=9`, params({ serverMaxWindowBits: 9 })],
    [`${PMD}; server_max_window_bits=8, ${PMD}; client_max_window_bits`, PMD, params()],
    [`${PMD}; server_max_window_bits=8, ${PMD}; server_max_window_bits=9`, `${PMD}; server_max_window_bits=9`, params({ serverMaxWindowBits: 9 })],
    [`${PMD}; foo, ${PMD}; server_no_context_takeover`, `${PMD}; server_no_context_takeover`, params({ serverNoContextTakeover: true })],
    [`${PMD}; client_max_window_bits=16, ${PMD}`, PMD, params()],
    // other extensions are skipped
    [`x-webkit-deflate-frame, ${PMD}; client_max_window_bits`, PMD, params()],
    [`foo; bar=1, ${PMD}, baz`, PMD, params()]
  ]
  for (const [offer, response, agreed] of table) {
    it(`${offer} → ${response}`, () => {
      const result = negotiate(offersOf(offer))
      expect(result?.response).toBe(response)
      expect(result?.params).toEqual(agreed)
    })
  }
})

describe("negotiate: declined offers (default options)", () => {
  const table: ReadonlyArray<string> = [
    // unknown parameters
    `${PMD}; foo`,
    `${PMD}; foo=1`,
    `${PMD}; client_max_window`,
    `${PMD}; no_context_takeover`,
    // duplicates
    `${PMD}; server_no_context_takeover; server_no_context_takeover`,
    `${PMD}; client_no_context_takeover; client_no_context_takeover`,
    `${PMD}; server_max_window_bits=10; server_max_window_bits=10`,
    `${PMD}; client_max_window_bits; client_max_window_bits=10`,
    `${PMD}; client_max_window_bits; CLIENT_MAX_WINDOW_BITS`,
    // *_no_context_takeover take no value
    `${PMD}; server_no_context_takeover=1`,
    `${PMD}; client_no_context_takeover=true`,
    `${PMD}; client_no_context_takeover="x"`,
    // server_max_window_bits needs a value in 8..15; 8 is declined (zlib cannot deflate with 2^8)
    `${PMD}; server_max_window_bits`,
    `${PMD}; server_max_window_bits=8`,
    `${PMD}; server_max_window_bits=7`,
    `${PMD}; server_max_window_bits=16`,
    `${PMD}; server_max_window_bits=0`,
    `${PMD}; server_max_window_bits=09`,
    `${PMD}; server_max_window_bits=010`,
    `${PMD}; server_max_window_bits=+9`,
    `${PMD}; server_max_window_bits=9.0`,
    `${PMD}; server_max_window_bits=a`,
    // client_max_window_bits: no value or 8..15
    `${PMD}; client_max_window_bits=7`,
    `${PMD}; client_max_window_bits=16`,
    `${PMD}; client_max_window_bits=015`,
    `${PMD}; client_max_window_bits=0x9`,
    `${PMD}; client_max_window_bits="10a"`,
    // all offers invalid
    `${PMD}; server_max_window_bits=8, ${PMD}; foo, ${PMD}; client_max_window_bits=20`,
    // no permessage-deflate at all
    `x-webkit-deflate-frame`,
    `deflate-frame; no_context_takeover`
  ]
  for (const offer of table) {
    it(`${offer} → decline`, () => {
      expect(negotiate(offersOf(offer))).toBeUndefined()
    })
  }

  it("no offers → decline", () => {
    expect(negotiate([])).toBeUndefined()
  })

  it("values are checked as strings, not numbers (offers built by hand)", () => {
    expect(negotiate([{ name: PMD, params: [["server_max_window_bits", " 9"]] }])).toBeUndefined()
    expect(negotiate([{ name: PMD, params: [["server_max_window_bits", ""]] }])).toBeUndefined()
    expect(negotiate([{ name: PMD, params: [["client_max_window_bits", "1e1"]] }])).toBeUndefined()
  })
})

describe("negotiate: server options", () => {
  const table: ReadonlyArray<readonly [string, Partial<DeflateOptions>, string, DeflateParams]> = [
    [PMD, { serverNoContextTakeover: true }, `${PMD}; server_no_context_takeover`, params({ serverNoContextTakeover: true })],
    [PMD, { clientNoContextTakeover: true }, `${PMD}; client_no_context_takeover`, params({ clientNoContextTakeover: true })],
    // a server max below 15 is announced even when not offered (§7.1.2.1 MAY)
    [PMD, { serverMaxWindowBits: 10 }, `${PMD}; server_max_window_bits=10`, params({ serverMaxWindowBits: 10 })],
    [PMD, { serverMaxWindowBits: 15 }, PMD, params()],
    [`${PMD}; server_max_window_bits=12`, { serverMaxWindowBits: 10 }, `${PMD}; server_max_window_bits=10`, params({ serverMaxWindowBits: 10 })],
    [`${PMD}; server_max_window_bits=9`, { serverMaxWindowBits: 10 }, `${PMD}; server_max_window_bits=9`, params({ serverMaxWindowBits: 9 })],
    // client_max_window_bits is answered only when offered (§7.1.2.2 MUST NOT otherwise)
    [PMD, { clientMaxWindowBits: 10 }, PMD, params()],
    [`${PMD}; client_max_window_bits`, { clientMaxWindowBits: 10 }, `${PMD}; client_max_window_bits=10`, params({ clientMaxWindowBits: 10 })],
    [`${PMD}; client_max_window_bits=9`, { clientMaxWindowBits: 10 }, `${PMD}; client_max_window_bits=9`, params({ clientMaxWindowBits: 9 })],
    [`${PMD}; client_max_window_bits=12`, { clientMaxWindowBits: 10 }, `${PMD}; client_max_window_bits=10`, params({ clientMaxWindowBits: 10 })],
    [`${PMD}; client_max_window_bits`, { clientMaxWindowBits: 8 }, `${PMD}; client_max_window_bits=8`, params({ clientMaxWindowBits: 9 })],
    [
      `${PMD}; client_max_window_bits`,
      { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 12, clientMaxWindowBits: 11 },
      `${PMD}; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=11`,
      { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 12, clientMaxWindowBits: 11 }
    ],
    // level, memLevel, threshold, concurrency do not change the handshake
    [PMD, { level: 9, memLevel: 9, threshold: 0, concurrency: 1 }, PMD, params()],
    // undefined in a partial means "the default"
    [PMD, { serverMaxWindowBits: undefined as unknown as number }, PMD, params()]
  ]
  for (const [offer, options, response, agreed] of table) {
    it(`${offer} with ${JSON.stringify(options)} → ${response}`, () => {
      const result = negotiate(offersOf(offer), options)
      expect(result?.response).toBe(response)
      expect(result?.params).toEqual(agreed)
    })
  }

  it("the response always re-parses as one permessage-deflate element", () => {
    const result = negotiate(offersOf(`${PMD}; client_max_window_bits; server_no_context_takeover`), { clientMaxWindowBits: 9 })
    const reparsed = parseExtensions(result!.response)
    expect(reparsed).toEqual({
      _tag: "Ok",
      offers: [{ name: PMD, params: [["server_no_context_takeover", true], ["client_max_window_bits", "9"]] }]
    })
  })

  it("resolveDeflateOptions: defaults and ranges", () => {
    expect(resolveDeflateOptions()).toEqual({ _tag: "Ok", options: defaultDeflateOptions })
    expect(defaultDeflateOptions).toEqual({
      serverNoContextTakeover: false,
      clientNoContextTakeover: false,
      serverMaxWindowBits: 15,
      clientMaxWindowBits: undefined,
      level: 1,
      memLevel: 8,
      threshold: 1024,
      concurrency: 4,
      maxCompressingConnections: 1024,
      idleReleaseMs: 30_000
    })
    const bad: ReadonlyArray<Partial<DeflateOptions>> = [
      { serverMaxWindowBits: 8 },
      { serverMaxWindowBits: 16 },
      { serverMaxWindowBits: 9.5 },
      { clientMaxWindowBits: 7 },
      { clientMaxWindowBits: 16 },
      { level: -1 },
      { level: 10 },
      { memLevel: 0 },
      { memLevel: 10 },
      { threshold: -1 },
      { concurrency: 0 },
      { concurrency: 1.5 },
      { maxCompressingConnections: -1 },
      { maxCompressingConnections: 0.5 },
      { idleReleaseMs: -1 },
      { idleReleaseMs: 86_400_001 }
    ]
    for (const options of bad) {
      const r = resolveDeflateOptions(options)
      expect(r._tag, JSON.stringify(options)).toBe("Error")
      expect(() => negotiate(offersOf(PMD), options)).toThrow(InvalidDeflateOptions)
    }
    expect(resolveDeflateOptions({ clientMaxWindowBits: 8, serverMaxWindowBits: 9, level: 0 })._tag).toBe("Ok")
    expect(resolveDeflateOptions({ maxCompressingConnections: 0, idleReleaseMs: 0 })._tag).toBe("Ok") // 0: no cap, never release
  })
})

describe("negotiate: RFC 7692 §7 rules hold for any offer (property)", () => {
  const paramName = fc.constantFrom(
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
    "foo"
  )
  const paramValue = fc.oneof(
    fc.constant<true>(true),
    fc.constantFrom("7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "09", "x")
  )
  const offer = fc.record({
    name: fc.constantFrom(PMD, PMD, PMD, "x-other"),
    params: fc.array(fc.tuple(paramName, paramValue), { maxLength: 5 })
  })
  const options = fc.record({
    serverNoContextTakeover: fc.boolean(),
    clientNoContextTakeover: fc.boolean(),
    serverMaxWindowBits: fc.integer({ min: 9, max: 15 }),
    clientMaxWindowBits: fc.option(fc.integer({ min: 8, max: 15 }), { nil: undefined })
  })

  const valid = (o: ExtensionOffer): boolean => {
    if (o.name !== PMD) return false
    const names = o.params.map(([n]) => n)
    if (new Set(names).size !== names.length) return false
    return o.params.every(([n, v]) => {
      if (n.endsWith("_no_context_takeover")) return v === true
      if (n === "server_max_window_bits") return typeof v === "string" && /^(9|1[0-5])$/.test(v)
      if (n === "client_max_window_bits") return v === true || /^([89]|1[0-5])$/.test(v)
      return false
    })
  }

  it("accepts exactly the first valid offer, with a conforming response", () => {
    fc.assert(
      fc.property(fc.array(offer, { maxLength: 4 }), options, (offers, opts) => {
        const result = negotiate(offers, opts)
        const chosen = offers.find(valid)
        if (chosen === undefined) return result === undefined
        if (result === undefined) return false
        const reparsed = parseExtensions(result.response)
        if (reparsed._tag !== "Ok" || reparsed.offers.length !== 1) return false
        const answer = new Map(reparsed.offers[0]!.params)
        const offered = new Map(chosen.params)
        // §7.1.1.1: offered server_no_context_takeover MUST be answered
        if (offered.has("server_no_context_takeover") && !answer.has("server_no_context_takeover")) return false
        // §7.1.2.1: answered value ≤ offered value, never 8
        const smwb = answer.get("server_max_window_bits")
        if (offered.has("server_max_window_bits") && smwb === undefined) return false
        if (smwb !== undefined) {
          if (Number(smwb) < 9 || Number(smwb) > Number(offered.get("server_max_window_bits") ?? 15)) return false
          if (Number(smwb) !== result.params.serverMaxWindowBits) return false
          if (Number(smwb) > opts.serverMaxWindowBits) return false
        }
        // §7.1.2.2: only if offered, ≤ offered (15 without a value)
        const cmwb = answer.get("client_max_window_bits")
        if (cmwb !== undefined) {
          const o = offered.get("client_max_window_bits")
          if (o === undefined) return false
          if (Number(cmwb) > (o === true ? 15 : Number(o))) return false
          if (result.params.clientMaxWindowBits !== Math.max(9, Number(cmwb))) return false
        } else if (result.params.clientMaxWindowBits !== 15) return false
        // the params say what the response says
        return result.params.serverNoContextTakeover === answer.has("server_no_context_takeover") &&
          result.params.clientNoContextTakeover === answer.has("client_no_context_takeover")
      }),
      { numRuns: 2000 }
    )
  })
})
