/**
 * Two servers on one Redis are one chat, in a real browser: the demo page of
 * server A and the demo page of server B (two ports, each with its own Redis
 * broker, as two machines would have) see each other's joins and messages.
 * Debian's Chromium, headless, like test/browser/chat.test.ts; a real
 * redis-server on a free loopback port.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import type { Browser, Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Demo from "../../src/Demo.ts"
import * as RedisBroker from "../../src/layers/Redis.ts"
import * as Broker from "../../src/services/Broker.ts"
import { launchChromium } from "../support/Chromium.ts"
import { type RedisServer, startRedis } from "../support/RedisServer.ts"
import { type RunningServer, startServer } from "../support/TcpServer.ts"

const WAIT_MS = 10_000

let redis: RedisServer
let browser: Browser
const servers: Array<RunningServer> = []
const scope = Effect.runSync(Scope.make())
const pageErrors: Array<string> = []

/** A demo server with its own Redis broker: one "machine". */
const startNode = async () => {
  const broker = await Effect.runPromise(
    RedisBroker.make({ url: redis.url, prefix: "browser:" }).pipe(
      Scope.provide(scope),
      Effect.provideService(References.MinimumLogLevel, "Error")
    )
  )
  while (broker.status?.().state !== "ready") await new Promise((resolve) => setTimeout(resolve, 20))
  const app = Effect.runSync(Demo.make().pipe(Effect.provideService(Broker.Broker, broker)))
  const server = await startServer(app)
  servers.push(server)
  return server
}

beforeAll(async () => {
  redis = await startRedis()
  browser = await launchChromium()
}, 60_000)

afterAll(async () => {
  await browser?.close()
  for (const server of servers) await server.close()
  await Effect.runPromise(Scope.close(scope, Exit.void))
  await redis?.stop()
})

const openPage = async (port: number): Promise<Page> => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
  const page = await context.newPage()
  page.setDefaultTimeout(WAIT_MS)
  page.on("pageerror", (error) => pageErrors.push(error.message))
  await page.goto(`http://127.0.0.1:${port}/`)
  return page
}

const joinAs = async (page: Page, name: string) => {
  await page.fill("#name", name)
  await page.click("#join-button")
  await page.locator("#me-name", { hasText: name }).waitFor()
}

const send = async (page: Page, text: string) => {
  await page.fill("#message-input", text)
  await page.press("#message-input", "Enter")
}

describe("two servers on one Redis, one page on each, in headless Chromium", () => {
  it("the pages see each other's joins and messages across the servers", async () => {
    const a = await startNode()
    const b = await startNode()
    const ada = await openPage(a.port)
    const bob = await openPage(b.port)

    await joinAs(ada, "Ada")
    await joinAs(bob, "Bob")
    // Bob joined on B; Ada's page on A hears it through Redis.
    await ada.locator("#messages .system", { hasText: "Bob joined" }).waitFor()

    await send(ada, "Hello from server A")
    await send(bob, "And hello from server B")
    for (const page of [ada, bob]) {
      await page.locator(`#messages .msg[data-from="Ada"] .bubble`, { hasText: "Hello from server A" }).waitFor()
      await page.locator(`#messages .msg[data-from="Bob"] .bubble`, { hasText: "And hello from server B" }).waitFor()
    }
    // Once each: no echo through Redis.
    expect(await ada.locator("#messages .msg .bubble", { hasText: "Hello from server A" }).count()).toBe(1)
    expect(await bob.locator("#messages .msg .bubble", { hasText: "And hello from server B" }).count()).toBe(1)

    await bob.context().close()
    await ada.locator("#messages .system", { hasText: "Bob left" }).waitFor()
    expect(pageErrors).toEqual([])
    await ada.context().close()
  }, 60_000)
})
