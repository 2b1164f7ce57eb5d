/**
 * The README's runnable examples as child processes, with real clients:
 * - `examples/server.ts`: Ctrl-C (SIGINT) closes open connections with 1001 and the process exits 0
 *   (with NodeRuntime's default teardown an interrupted program exits 130; the example uses
 *   `Server.teardown`);
 * - `examples/tls.ts`: wss:// with the test certificate in test/support/tls, trusted by the client;
 * - `examples/http.ts` and `examples/http-router.ts`: an HTTP API (node:http, effect/http) and the
 *   WebSocket routes on one port.
 */
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import * as Net from "node:net"
import { fileURLToPath } from "node:url"
import { afterEach, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { withTimeout } from "../support/Timeout.ts"

const repoRoot = fileURLToPath(new URL("../..", import.meta.url))
const tlsDir = fileURLToPath(new URL("../support/tls/", import.meta.url))
const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

/** Run an example on a free port; resolves once it logs the port it listens on. */
const startExample = async (file: string, env: Record<string, string> = {}) => {
  // `wsreactor-source`: inside the repository the example's `import "wsreactor"` is the .ts sources.
  const child = spawn(process.execPath, ["--conditions=wsreactor-source", file], {
    cwd: repoRoot,
    env: { ...process.env, PORT: "0", NO_COLOR: "1", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  })
  let out = ""
  let err = ""
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (err += chunk))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  const port = await withTimeout(
    `${file} to listen`,
    new Promise<number>((resolve, reject) => {
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        out += chunk
        const match = out.match(/listening on \S*:(\d+)/)
        if (match !== null) resolve(Number(match[1]))
      })
      void exited.then(() => reject(new Error(`${file} exited early: ${out}${err}`)))
    }),
    10_000
  )
  return { child, port, exited, stderr: () => err }
}

/** A port that was free a moment ago (for examples that do not log theirs). */
const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const probe = Net.createServer().once("error", reject)
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as Net.AddressInfo
      probe.close(() => resolve(port))
    })
  })

/** Run an example on `port` and wait until it answers HTTP there. */
const startOnPort = async (file: string, port: number, probePath: string) => {
  const child = spawn(process.execPath, ["--conditions=wsreactor-source", file], {
    cwd: repoRoot,
    env: { ...process.env, PORT: String(port), NO_COLOR: "1" },
    stdio: ["ignore", "ignore", "pipe"]
  })
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  })
  let err = ""
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (err += chunk))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  const deadline = Date.now() + 10_000
  for (;;) {
    const response = await fetch(`http://127.0.0.1:${port}${probePath}`).catch(() => undefined)
    if (response !== undefined) return { child, exited, first: response, stderr: () => err }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`${file} did not answer on ${port}: ${err}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Open a client and wait until it is open; `closed` resolves with the close code. */
const connect = async (url: string, options: WebSocket.ClientOptions = {}) => {
  const ws = new WebSocket(url, options)
  cleanups.push(() => ws.terminate())
  const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)))
  await withTimeout(`open ${url}`, new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject)), 5_000)
  return { ws, closed }
}

const echoOnce = (ws: WebSocket, text: string) =>
  withTimeout(
    "echo",
    new Promise<string>((resolve) => {
      ws.once("message", (data) => resolve(String(data)))
      ws.send(text)
    }),
    5_000
  )

describe("examples/server.ts", () => {
  it("exits 0 on SIGINT after closing its connections with 1001", async () => {
    const example = await startExample("examples/server.ts")
    const { ws, closed } = await connect(`ws://127.0.0.1:${example.port}/echo`)
    expect(await echoOnce(ws, "hi")).toBe("hi")
    example.child.kill("SIGINT")
    expect(await withTimeout("the client's close", closed, 5_000)).toBe(1001)
    expect(await withTimeout("exit", example.exited, 10_000)).toBe(0)
    expect(example.stderr()).toBe("")
  })
})

describe("examples/tls.ts", () => {
  it("serves wss:// with the given key and certificate", async () => {
    const example = await startExample("examples/tls.ts", {
      TLS_KEY: `${tlsDir}key.pem`,
      TLS_CERT: `${tlsDir}cert.pem`
    })
    // The client trusts exactly the test certificate: the handshake is verified, not skipped.
    const { ws } = await connect(`wss://127.0.0.1:${example.port}/echo`, { ca: readFileSync(`${tlsDir}cert.pem`) })
    expect(await echoOnce(ws, "over TLS")).toBe("over TLS")
    // A plain ws:// client on the TLS port gets no WebSocket.
    await expect(connect(`ws://127.0.0.1:${example.port}/echo`)).rejects.toThrow()
    example.child.kill("SIGTERM")
    expect(await withTimeout("exit", example.exited, 10_000)).toBe(0)
  })
})

describe("examples/http.ts and examples/http-router.ts", () => {
  for (
    const [file, probe, body] of [
      ["examples/http.ts", "/api/items", `{"path":"/api/items"}`],
      ["examples/http-router.ts", "/api/hello", "hello"]
    ] as const
  ) {
    it(`${file}: the API and the WebSocket echo on one port; SIGINT exits 0`, async () => {
      const port = await freePort()
      const example = await startOnPort(file, port, probe)
      expect(await example.first.text()).toBe(body)
      const { ws, closed } = await connect(`ws://127.0.0.1:${port}/echo`)
      expect(await echoOnce(ws, "one port")).toBe("one port")
      example.child.kill("SIGINT")
      expect(await withTimeout("the client's close", closed, 5_000)).toBe(1001)
      expect(await withTimeout("exit", example.exited, 10_000)).toBe(0)
    })
  }
})
