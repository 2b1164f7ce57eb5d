/**
 * The demo page in a real browser: Debian's Chromium, headless, driven by
 * `playwright-core` (which never downloads a browser of its own). Two pages
 * join the chat, talk both ways and see each other in the members list; the
 * echo panel answers; screenshots are saved to test-artifacts/chat.png (and
 * join.png, the page before joining).
 *
 * Chromium is required, not optional: `.ci/run` installs it, and a missing
 * browser fails this test instead of skipping it.
 */
import { existsSync, mkdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import * as Effect from "effect/Effect"
import type { Browser, Page } from "playwright-core"
import { launchChromium } from "../support/Chromium.ts"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Demo from "../../src/Demo.ts"
import * as Broker from "../../src/services/Broker.ts"
import * as Metrics from "../../src/services/Metrics.ts"
import type { ServerState } from "../../src/services/Server.ts"
import { type RunningServer, startServer } from "../support/TcpServer.ts"

const artifacts = fileURLToPath(new URL("../../test-artifacts/", import.meta.url))
const WAIT_MS = 10_000

let server: RunningServer
let browser: Browser
/** Uncaught exceptions in any page's script. */
const pageErrors: Array<string> = []

beforeAll(async () => {
  const metrics = Metrics.makeIsolated()
  let state: ServerState | undefined
  const app = Effect.runSync(
    Demo.make({ metrics, state: () => state }).pipe(Effect.provideService(Broker.Broker, Broker.makeMemory()))
  )
  server = await startServer(app, { hooks: metrics.hooks, onState: (s) => (state = s) })
  browser = await launchChromium()
}, 60_000)

afterAll(async () => {
  await browser?.close()
  await server?.close()
})

const openPage = async (): Promise<Page> => {
  // A context per page: two independent "tabs" as two users would have.
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 })
  const page = await context.newPage()
  page.setDefaultTimeout(WAIT_MS)
  page.on("pageerror", (error) => pageErrors.push(error.message))
  await page.goto(`http://127.0.0.1:${server.port}/`)
  return page
}

const joinAs = async (page: Page, name: string) => {
  await page.fill("#name", name)
  await page.click("#join-button")
  await page.locator("#me-name", { hasText: name }).waitFor()
  await expect.poll(() => page.locator("#status").getAttribute("data-state")).toBe("open")
}

const send = async (page: Page, text: string) => {
  await page.fill("#message-input", text)
  await page.press("#message-input", "Enter")
}

const members = (page: Page) => page.locator("#members li").evaluateAll((items) => items.map((li) => (li as HTMLElement).dataset["name"]))

const expectMessage = async (page: Page, from: string, text: string) =>
  page.locator(`#messages .msg[data-from="${from}"] .bubble`, { hasText: text }).waitFor()

describe("the demo page in headless Chromium", () => {
  it("two pages chat both ways, see each other, echo works, and a screenshot is saved", async () => {
    const ada = await openPage()
    const bob = await openPage()
    expect(await ada.title()).toContain("wsreactor")

    await joinAs(ada, "Ada")
    mkdirSync(artifacts, { recursive: true })
    await bob.screenshot({ path: `${artifacts}join.png` }) // the page before joining
    await joinAs(bob, "Bob")
    for (const page of [ada, bob]) {
      await expect.poll(() => members(page), { timeout: WAIT_MS }).toEqual(["Ada", "Bob"])
      await expect.poll(() => page.textContent("#member-count")).toBe("2")
    }

    await send(ada, "Hello Bob! Typed messages over a real WebSocket.")
    await send(bob, "Hi Ada — ça marche from this tab too.")
    await send(ada, "Presence, rooms and metrics: all on Effect.")
    for (const page of [ada, bob]) {
      await expectMessage(page, "Ada", "Hello Bob!")
      await expectMessage(page, "Bob", "Hi Ada — ça marche")
      await expectMessage(page, "Ada", "Presence, rooms and metrics")
    }
    // Each page shows its own messages on the right.
    expect(await ada.locator("#messages .msg.mine").count()).toBe(2)
    expect(await bob.locator("#messages .msg.mine").count()).toBe(1)

    // The echo panel: a second socket on /echo.
    await ada.fill("#echo-input", "ping from the browser")
    await ada.press("#echo-input", "Enter")
    await ada.locator("#echo-log li", { hasText: "←ping from the browser" }).waitFor()

    await ada.screenshot({ path: `${artifacts}chat.png` })
    expect(existsSync(`${artifacts}chat.png`)).toBe(true)

    // Bob closes his tab: Ada sees him leave.
    await bob.context().close()
    await ada.locator("#messages .system", { hasText: "Bob left" }).waitFor()
    await expect.poll(() => members(ada)).toEqual(["Ada"])

    expect(pageErrors).toEqual([])
    await ada.context().close()
  }, 60_000)
})
