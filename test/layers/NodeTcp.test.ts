// Accept errors are logged once per burst (a start line, a summary once quiet) and every one counted.
import { describe, expect, it } from "vitest"
import { acceptErrorBursts } from "../../src/layers/NodeTcp.ts"

const emfile = Object.assign(new Error("accept EMFILE"), { code: "EMFILE" })

describe("acceptErrorBursts", () => {
  it("500 errors in a burst make two log lines and 500 counts; a later burst logs again", async () => {
    const lines: Array<string> = []
    let counted = 0
    const bursts = acceptErrorBursts({ count: () => counted++, log: (line) => lines.push(line), quietMs: 20 })
    for (let i = 0; i < 500; i++) bursts.report(emfile)
    expect(lines).toEqual([expect.stringMatching(/^accept failed: EMFILE/)])
    await new Promise((resolve) => setTimeout(resolve, 150))
    expect(lines).toHaveLength(2)
    expect(lines[1]).toBe("accept errors over: 500 failed accept(s) (EMFILE) in that burst")
    expect(counted).toBe(500)

    bursts.report(emfile)
    expect(lines).toHaveLength(3)
    bursts.stop()
    expect(lines[3]).toBe("accept errors over: 1 failed accept(s) (EMFILE) in that burst")
  })
})
