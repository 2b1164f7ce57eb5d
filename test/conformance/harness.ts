/**
 * Shared setup for the conformance test files: one echo server per file,
 * every client socket destroyed after each test.
 *
 * @example
 * const server = useEchoServer()
 * it("echoes", async () => {
 *   const c = await server.connect()
 *   ...
 * })
 */
import { afterAll, afterEach, beforeAll } from "vitest"
import * as EchoServer from "../support/EchoServer.ts"
import * as Raw from "./RawClient.ts"

interface Quirks {
  readonly utf8FailFast: boolean
  readonly acceptsVersion8: boolean
  readonly requiresHost: boolean
}

/**
 * Known deviations of the TEMPORARY reference server (ws). The real server
 * exports no `referenceQuirks`, so every expectation is then strict.
 */
export const quirks: Quirks = {
  utf8FailFast: true,
  acceptsVersion8: false,
  requiresHost: true,
  ...((EchoServer as Record<string, unknown>)["referenceQuirks"] as Partial<Quirks> | undefined)
}

export interface EchoServerHandle {
  readonly port: () => number
  readonly connect: (options?: Raw.ConnectOptions) => Promise<Raw.RawClient & { readonly response: Raw.HttpResponse }>
  readonly openRaw: () => Promise<Raw.RawClient>
}

/** Registers beforeAll/afterAll/afterEach hooks for the current file. */
export const useEchoServer = (): EchoServerHandle => {
  let server: { readonly port: number; readonly close: () => Promise<void> } | undefined
  const clients = new Set<Raw.RawClient>()
  beforeAll(async () => {
    server = await EchoServer.startEchoServer()
  })
  afterAll(async () => {
    await server?.close()
  })
  afterEach(() => {
    for (const c of clients) c.destroy()
    clients.clear()
  })
  const port = (): number => {
    if (server === undefined) throw new Error("echo server not started")
    return server.port
  }
  const track = <C extends Raw.RawClient>(c: C): C => {
    clients.add(c)
    return c
  }
  return {
    port,
    connect: async (options) => track(await Raw.connect(port(), options)),
    openRaw: async () => track(await Raw.openRaw(port()))
  }
}
