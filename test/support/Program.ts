/**
 * The real program (`node src/main.ts`) as a child process, for tests that
 * need its flags, its logs or its own process limits (`ulimit -n`).
 *
 * @example
 * const program = await startProgram(["--port", "0", "--host", "127.0.0.1"])
 * // ... connect to program.port
 * program.kill()
 */
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { withTimeout } from "./Timeout.ts"

const repoRoot = fileURLToPath(new URL("../..", import.meta.url))

export interface Program {
  readonly child: ChildProcess
  readonly port: number
  readonly output: () => string
  readonly waitForOutput: (pattern: RegExp, ms?: number) => Promise<RegExpMatchArray>
  readonly kill: () => void
}

/** Spawn the program (optionally under `ulimit -n openFiles`) and wait for its "listening on" line. */
export const startProgram = async (
  args: ReadonlyArray<string>,
  options: { readonly env?: NodeJS.ProcessEnv; readonly openFiles?: number } = {}
): Promise<Program> => {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1", ...options.env }
  delete env["PORT"]
  delete env["HOST"]
  const quoted = [process.execPath, "src/main.ts", ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ")
  const child = options.openFiles === undefined
    ? spawn(process.execPath, ["src/main.ts", ...args], { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] })
    : spawn("bash", ["-c", `ulimit -n ${options.openFiles} && exec ${quoted}`], { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] })
  let out = ""
  const watchers = new Set<() => void>()
  const onChunk = (chunk: string) => {
    out += chunk
    for (const check of watchers) check()
  }
  child.stdout!.setEncoding("utf8").on("data", onChunk)
  child.stderr!.setEncoding("utf8").on("data", onChunk)
  const waitForOutput = (pattern: RegExp, ms = 10_000) =>
    withTimeout(
      `output to match ${pattern}`,
      new Promise<RegExpMatchArray>((resolve, reject) => {
        const check = () => {
          const match = out.match(pattern)
          if (match !== null) {
            watchers.delete(check)
            resolve(match)
          }
        }
        watchers.add(check)
        check()
        child.once("exit", (code) => reject(new Error(`program exited (${code}) before ${pattern}:\n${out}`)))
      }),
      ms
    )
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  }
  try {
    const match = await waitForOutput(/listening on [^\s]+:(\d+)/)
    return { child, port: Number(match[1]), output: () => out, waitForOutput, kill }
  } catch (error) {
    kill()
    throw error
  }
}
