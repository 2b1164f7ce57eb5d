/**
 * The README's `examples/server.ts` as a child process: Ctrl-C (SIGINT) closes open connections
 * with 1001 and the process exits 0 (with NodeRuntime's default teardown an interrupted program
 * exits 130; the example uses `Server.teardown`).
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { afterEach, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { withTimeout } from "../support/Timeout.ts"

const repoRoot = fileURLToPath(new URL("../..", import.meta.url))
const kill: Array<() => void> = []
afterEach(() => {
  for (const k of kill.splice(0)) k()
})

describe("examples/server.ts", () => {
  it("exits 0 on SIGINT after closing its connections with 1001", async () => {
    // `wsreactor-source`: inside the repository the example's `import "wsreactor"` is the .ts sources.
    const child = spawn(process.execPath, ["--conditions=wsreactor-source", "examples/server.ts"], {
      cwd: repoRoot,
      env: { ...process.env, PORT: "0", NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    kill.push(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
    let out = ""
    let err = ""
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (err += chunk))
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
    const port = await withTimeout(
      "the listening line",
      new Promise<number>((resolve, reject) => {
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
          out += chunk
          const match = out.match(/listening on \S*:(\d+)/)
          if (match !== null) resolve(Number(match[1]))
        })
        void exited.then(() => reject(new Error(`exited early: ${out}${err}`)))
      }),
      10_000
    )
    const ws = new WebSocket(`ws://127.0.0.1:${port}/echo`)
    kill.push(() => ws.terminate())
    const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)))
    await withTimeout("open", new Promise((resolve) => ws.once("open", resolve)), 5_000)

    child.kill("SIGINT")
    expect(await withTimeout("the client's close", closed, 5_000)).toBe(1001)
    expect(await withTimeout("exit", exited, 10_000)).toBe(0)
    expect(err).toBe("")
  })
})
