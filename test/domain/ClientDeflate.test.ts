import { describe, expect, it } from "@effect/vitest"
import { acceptAnswer, clientOffer } from "../../src/domain/ClientDeflate.ts"
import { parseExtensions } from "../../src/domain/Extensions.ts"
import { defaultDeflateOptions, negotiate } from "../../src/domain/PerMessageDeflate.ts"

const offers = (header: string) => {
  const parsed = parseExtensions(header)
  if (parsed._tag !== "Ok") throw new Error(parsed.detail)
  return parsed.offers
}

describe("ClientDeflate (RFC 7692 from the client's side)", () => {
  it("offers client_max_window_bits always, the rest only when asked", () => {
    expect(clientOffer(defaultDeflateOptions)).toBe("permessage-deflate; client_max_window_bits")
    expect(clientOffer({ ...defaultDeflateOptions, serverMaxWindowBits: 10, clientMaxWindowBits: 12, serverNoContextTakeover: true }))
      .toBe("permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12")
  })

  it("maps the answer to this end's view: we compress with the client window, inflate with the server's", () => {
    const answer = acceptAnswer(
      offers("permessage-deflate; server_no_context_takeover; client_max_window_bits=10; server_max_window_bits=12"),
      defaultDeflateOptions
    )
    expect(answer).toEqual({
      _tag: "Agreed",
      params: { serverMaxWindowBits: 10, serverNoContextTakeover: false, clientMaxWindowBits: 12, clientNoContextTakeover: true }
    })
    expect(acceptAnswer([], defaultDeflateOptions)).toEqual({ _tag: "None" })
  })

  it("accepts whatever wsreactor's own server answers to its offer", () => {
    for (const options of [defaultDeflateOptions, { ...defaultDeflateOptions, clientMaxWindowBits: 11, serverNoContextTakeover: true }]) {
      const response = negotiate(offers(clientOffer(options)), { serverMaxWindowBits: 12, clientNoContextTakeover: true })!.response
      expect(acceptAnswer(offers(response), options)._tag).toBe("Agreed")
    }
  })

  it.each([
    ["permessage-deflate; client_max_window_bits", "no value in a response (§7.1.2.2)"],
    ["permessage-deflate; server_max_window_bits=16", "out of range"],
    ["permessage-deflate; client_max_window_bits=8", "zlib cannot deflate with 8"],
    ["permessage-deflate; server_no_context_takeover=1", "value on a flag"],
    ["permessage-deflate; server_no_context_takeover; server_no_context_takeover", "repeated"],
    ["permessage-deflate; foo", "unknown parameter"],
    ["x-other", "extension not offered"],
    ["permessage-deflate, permessage-deflate", "two answers"]
  ])("refuses %s (%s)", (header) => {
    expect(acceptAnswer(offers(header), defaultDeflateOptions)._tag).toBe("Invalid")
  })

  it("refuses a window over the one offered, a dropped server_no_context_takeover, and any answer when nothing was offered", () => {
    const options = { ...defaultDeflateOptions, serverMaxWindowBits: 10, clientMaxWindowBits: 11, serverNoContextTakeover: true }
    expect(acceptAnswer(offers("permessage-deflate; server_no_context_takeover; server_max_window_bits=11"), options)._tag).toBe("Invalid")
    expect(acceptAnswer(offers("permessage-deflate; server_no_context_takeover; client_max_window_bits=12"), options)._tag).toBe("Invalid")
    expect(acceptAnswer(offers("permessage-deflate; server_max_window_bits=10"), options)._tag).toBe("Invalid")
    expect(acceptAnswer(offers("permessage-deflate"), undefined)._tag).toBe("Invalid")
  })
})
