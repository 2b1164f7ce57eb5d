/**
 * The program's security defaults, over loopback against `node src/main.ts`:
 * TLS (wss:// and https:// with a certificate made here by openssl), the
 * chat's origin check, and a connection cap below the open-files limit.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Https from "node:https"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { cleanup, type ProgramOptions, startProgram } from "../support/Program.ts"
import { withTimeout } from "../support/Timeout.ts"

const WAIT_MS = 5_000
const sockets = new Set<WebSocket | Net.Socket>()

afterEach(() => {
  for (const s of sockets) s instanceof WebSocket ? s.terminate() : s.destroy()
  sockets.clear()
  cleanup()
})

const start = async (args: ReadonlyArray<string>, options?: ProgramOptions) => {
  const program = await startProgram(["--host", "127.0.0.1", "--port", "0", ...args], options)
  return program
}

type Outcome =
  | { readonly _tag: "open"; readonly ws: WebSocket }
  | { readonly _tag: "refused"; readonly status: number }
  | { readonly _tag: "error"; readonly code: string | undefined; readonly message: string }

const attempt = (url: string, options: WebSocket.ClientOptions = {}): Promise<Outcome> => {
  const ws = new WebSocket(url, options)
  sockets.add(ws)
  return withTimeout(
    `an outcome for ${url}`,
    new Promise<Outcome>((resolve) => {
      ws.once("open", () => resolve({ _tag: "open", ws }))
      ws.once("unexpected-response", (_req, res) => {
        res.resume()
        resolve({ _tag: "refused", status: res.statusCode ?? 0 })
      })
      ws.once("error", (error: NodeJS.ErrnoException) => resolve({ _tag: "error", code: error.code, message: error.message }))
    }),
    WAIT_MS
  )
}

const echoOnce = (ws: WebSocket, text: string) =>
  withTimeout(
    "echo",
    new Promise<string>((resolve) => {
      ws.once("message", (data) => resolve(String(data)))
      ws.send(text)
    }),
    WAIT_MS
  )

describe("TLS: --tls-cert / --tls-key", () => {
  let dir: string
  let cert: Buffer
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "wsreactor-tls-"))
    // A throwaway self-signed certificate for localhost and 127.0.0.1 (Debian's openssl; .ci/run installs it).
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "1",
      "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"
    ], { stdio: "ignore", timeout: 20_000 })
    cert = readFileSync(join(dir, "cert.pem"))
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  const tlsArgs = () => ["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")]

  it("echoes over wss:// and serves the page over https:// to a client that trusts the certificate", async () => {
    const program = await start(tlsArgs())
    await program.waitForStdout(/TLS on/)
    const outcome = await attempt(`wss://127.0.0.1:${program.port}/echo`, { ca: cert })
    expect(outcome._tag).toBe("open")
    if (outcome._tag !== "open") return
    expect(await echoOnce(outcome.ws, "over tls")).toBe("over tls")
    const page = await withTimeout(
      "GET / over https",
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        Https.get({ host: "127.0.0.1", port: program.port, path: "/", ca: cert, servername: "localhost" }, (res) => {
          let body = ""
          res.setEncoding("utf8").on("data", (c: string) => (body += c)).on("end", () => resolve({ status: res.statusCode ?? 0, body }))
        }).on("error", reject)
      }),
      WAIT_MS
    )
    expect(page.status).toBe(200)
    expect(page.body).toContain("wsreactor")
  })

  it("env TLS_CERT / TLS_KEY work like the flags", async () => {
    const program = await start([], { env: { TLS_CERT: join(dir, "cert.pem"), TLS_KEY: join(dir, "key.pem") } })
    const outcome = await attempt(`wss://localhost:${program.port}/echo`, { ca: cert })
    expect(outcome._tag).toBe("open")
  })

  it("a client that does not trust the certificate fails the TLS handshake; a plain-TCP client gets no WebSocket; the server goes on", async () => {
    const program = await start(tlsArgs())
    const untrusted = await attempt(`wss://127.0.0.1:${program.port}/echo`)
    expect(untrusted).toMatchObject({ _tag: "error", code: "DEPTH_ZERO_SELF_SIGNED_CERT" })
    const plain = await attempt(`ws://127.0.0.1:${program.port}/echo`)
    expect(plain._tag).toBe("error") // the HTTP request is not a TLS ClientHello: the server drops it
    // Raw garbage on the TLS port: dropped, never echoed.
    const raw = Net.connect(program.port, "127.0.0.1")
    sockets.add(raw)
    raw.on("error", () => {})
    raw.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await withTimeout("the server to drop plain TCP", new Promise((resolve) => raw.once("close", resolve)), WAIT_MS)
    const good = await attempt(`wss://127.0.0.1:${program.port}/echo`, { ca: cert })
    expect(good._tag).toBe("open")
  })

  it("refuses to start with only one of the two", async () => {
    await expect(start(["--tls-cert", join(dir, "cert.pem")])).rejects.toThrow(/go together/)
  })
})

describe("origin and connection caps", () => {
  it("the chat refuses a cross-site page (403) and takes --allow-origin; echo stays open", async () => {
    const program = await start(["--allow-origin", "https://app.example"])
    const base = `ws://127.0.0.1:${program.port}`
    expect(await attempt(`${base}/chat`, { origin: "https://evil.example" })).toEqual({ _tag: "refused", status: 403 })
    expect((await attempt(`${base}/chat`, { origin: "https://app.example" }))._tag).toBe("open")
    expect((await attempt(`${base}/chat`, { origin: `http://127.0.0.1:${program.port}` }))._tag).toBe("open")
    expect((await attempt(`${base}/echo`, { origin: "https://evil.example" }))._tag).toBe("open")
  })

  it("--max-connections-per-ip: one address past its share gets 429; a closed one frees its place", async () => {
    const program = await start(["--max-connections-per-ip", "2"])
    const url = `ws://127.0.0.1:${program.port}/echo`
    const first = await attempt(url)
    expect((await attempt(url))._tag).toBe("open")
    expect(await attempt(url)).toEqual({ _tag: "refused", status: 429 })
    if (first._tag === "open") first.ws.close(1000)
    const deadline = Date.now() + WAIT_MS
    let again = await attempt(url)
    while (again._tag !== "open" && Date.now() < deadline) again = await attempt(url)
    expect(again._tag).toBe("open")
  })

  it("under `ulimit -n 128` the default cap answers 503 before descriptors run out: no connection is reset", async () => {
    const program = await start([], { openFiles: 128 })
    await program.waitForStdout(/max connections 48 \(open-files limit 128\)/)
    const outcomes: Array<Outcome> = []
    for (let i = 0; i < 80; i++) outcomes.push(await attempt(`ws://127.0.0.1:${program.port}/echo`))
    const tally = (tag: Outcome["_tag"]) => outcomes.filter((o) => o._tag === tag).length
    expect(tally("error")).toBe(0)
    expect(tally("open")).toBe(48)
    expect(outcomes.filter((o) => o._tag === "refused" && o.status === 503)).toHaveLength(32)
    // Every open one still echoes.
    for (const o of outcomes) if (o._tag === "open") expect(await echoOnce(o.ws, "alive")).toBe("alive")
  })
})
