import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { formatExtension, formatExtensions, isToken, parseExtensions } from "../../src/domain/Extensions.ts"
import type { ExtensionOffer } from "../../src/domain/Extensions.ts"

const ok = (value: string): ReadonlyArray<ExtensionOffer> => {
  const result = parseExtensions(value)
  if (result._tag !== "Ok") throw new Error(`expected Ok for ${JSON.stringify(value)}: ${result.detail}`)
  return result.offers
}

describe("parseExtensions", () => {
  it("parses a single extension without params", () => {
    expect(ok("permessage-deflate")).toEqual([{ name: "permessage-deflate", params: [] }])
  })

  it("parses the Chrome offer (param without value)", () => {
    expect(ok("permessage-deflate; client_max_window_bits")).toEqual([
      { name: "permessage-deflate", params: [["client_max_window_bits", true]] }
    ])
  })

  it("parses several offers in order (RFC 7692 §5 example)", () => {
    expect(
      ok("permessage-deflate; client_max_window_bits=10; server_no_context_takeover, permessage-deflate, x-webkit-deflate-frame")
    ).toEqual([
      {
        name: "permessage-deflate",
        params: [
          ["client_max_window_bits", "10"],
          ["server_no_context_takeover", true]
        ]
      },
      { name: "permessage-deflate", params: [] },
      { name: "x-webkit-deflate-frame", params: [] }
    ])
  })

  it("unquotes quoted-string values and unescapes quoted-pairs", () => {
    expect(ok('permessage-deflate; client_max_window_bits="10"')).toEqual([
      { name: "permessage-deflate", params: [["client_max_window_bits", "10"]] }
    ])
    expect(ok('x; a="\\1\\0"')).toEqual([{ name: "x", params: [["a", "10"]] }])
  })

  it("keeps params in the order sent and keeps duplicates", () => {
    expect(ok("x; b=2; a; b=3")).toEqual([
      {
        name: "x",
        params: [
          ["b", "2"],
          ["a", true],
          ["b", "3"]
        ]
      }
    ])
  })

  it("lowercases extension and parameter names, keeps values", () => {
    expect(ok("PerMessage-Deflate; Client_Max_Window_Bits=AbC")).toEqual([
      { name: "permessage-deflate", params: [["client_max_window_bits", "AbC"]] }
    ])
  })

  it("accepts whitespace variations around separators", () => {
    const expected = [
      {
        name: "a",
        params: [
          ["p", "1"],
          ["q", true]
        ]
      },
      { name: "b", params: [] }
    ]
    for (const value of ["a;p=1;q,b", "  a ; p = 1 ;\tq ,  b  ", "a;p=\"1\";q , b", "\ta;\tp\t=\t1;q,\tb\t"]) {
      expect(ok(value)).toEqual(expected)
    }
  })

  it("skips empty list elements (RFC 9110 §5.6.1), as from joined headers", () => {
    expect(ok(", a,, b ,")).toEqual([
      { name: "a", params: [] },
      { name: "b", params: [] }
    ])
  })

  it("rejects malformed values", () => {
    for (const value of [
      "",
      "   ",
      ",",
      "; a",
      "a;",
      "a; =1",
      "a; p=",
      "a; p=\"\"",
      "a; p=\"1 2\"",
      "a; p=\"unterminated",
      "a; p=\"1\"x",
      "a b",
      "a; p=1 2",
      "a; p==1",
      "a/b",
      "a; p=@",
      "a; p=\"\\\u0001\"",
      "a; p=\"a\u0001\"",
      "é"
    ]) {
      expect(parseExtensions(value)._tag, JSON.stringify(value)).toBe("Error")
    }
  })

  it("never throws on arbitrary strings", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 60 }), (s) => {
        const result = parseExtensions(s)
        expect(["Ok", "Error"]).toContain(result._tag)
      })
    )
  })
})

describe("formatExtension", () => {
  it("formats values and valueless params", () => {
    expect(formatExtension({ name: "permessage-deflate", params: [["client_max_window_bits", "10"]] })).toBe(
      "permessage-deflate; client_max_window_bits=10"
    )
    expect(
      formatExtension({
        name: "permessage-deflate",
        params: [
          ["server_no_context_takeover", true],
          ["client_max_window_bits", "15"]
        ]
      })
    ).toBe("permessage-deflate; server_no_context_takeover; client_max_window_bits=15")
    expect(formatExtension({ name: "x", params: [] })).toBe("x")
  })

  it("quotes non-token values", () => {
    expect(formatExtension({ name: "x", params: [["p", 'a "b"']] })).toBe('x; p="a \\"b\\""')
  })

  it("formatExtensions joins with ', '", () => {
    expect(formatExtensions([{ name: "a", params: [] }, { name: "b", params: [["c", true]] }])).toBe("a, b; c")
  })

  it("round-trips through parseExtensions", () => {
    const token = fc.stringMatching(/^[a-z0-9_-]{1,8}$/)
    const offer = fc.record({
      name: token,
      params: fc.array(fc.tuple(token, fc.oneof(fc.constant(true as const), fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,6}$/))), {
        maxLength: 4
      })
    })
    fc.assert(
      fc.property(fc.array(offer, { minLength: 1, maxLength: 4 }), (offers) => {
        expect(ok(formatExtensions(offers))).toEqual(offers)
      })
    )
  })
})

describe("isToken", () => {
  it("accepts tchars only", () => {
    expect(isToken("permessage-deflate")).toBe(true)
    expect(isToken("!#$%&'*+-.^_`|~09azAZ")).toBe(true)
    expect(isToken("")).toBe(false)
    expect(isToken("a b")).toBe(false)
    expect(isToken("a\"")).toBe(false)
    expect(isToken("é")).toBe(false)
  })
})
