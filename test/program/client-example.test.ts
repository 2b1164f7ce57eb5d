/**
 * `examples/client.ts` (shown in the README) against `examples/server.ts`, both as child processes:
 * the client's typed message goes through the chat room and comes back, and the client exits 0.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { afterEach, describe, expect, it } from "vitest"
import { withTimeout } from "../support/Timeout.ts"

const repoRoot = fileURLToPath(new URL("../..", import.meta.url))
const children: Array<ReturnType<typeof spawn>> = []
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
})

const run = (file: string, env: Record<string, string>) => {
  const child = spawn(process.execPath, ["--conditions=wsreactor-source", file], {
    cwd: repoRoot,
    env: { ...process.env, NO_COLOR: "1", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.push(child)
  let out = ""
  let err = ""
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (out += chunk))
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (err += chunk))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  return { child, exited, out: () => out, err: () => err }
}

describe("examples/client.ts", () => {
  it("talks to the chat room of examples/server.ts and exits 0", async () => {
    const server = run("examples/server.ts", { PORT: "0" })
    const port = await withTimeout(
      "examples/server.ts to listen",
      (async () => {
        for (;;) {
          const match = server.out().match(/listening on \S*:(\d+)/)
          if (match !== null) return Number(match[1])
          if (server.child.exitCode !== null) throw new Error(`server exited: ${server.err()}`)
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
      })(),
      10_000
    )
    const client = run("examples/client.ts", { URL: `ws://127.0.0.1:${port}/room/lobby` })
    const code = await withTimeout("examples/client.ts to exit", client.exited, 10_000)
    expect(client.err()).toBe("")
    expect(client.out()).toBe("[lobby] hello from the wsreactor client\n")
    expect(code).toBe(0)
  })
})
