/**
 * The real program (`node src/main.ts ...`) as a child process, and `ws`
 * clients that record what they receive. Every child and client is tracked so
 * `cleanup` (in `afterEach`) leaves nothing running.
 *
 * @example
 * const program = await startProgram(["--port", "0", "--host", "127.0.0.1"])
 * const client = await openClient(program.port, "/chat")
 * afterEach(cleanup)
 */
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import WebSocket from "ws"
import { withTimeout } from "./Timeout.ts"

const repoRoot = fileURLToPath(new URL("../..", import.meta.url))
const children = new Set<ChildProcess>()
const clients = new Set<WebSocket>()

/** Kill every program (SIGKILL) and terminate every client still open. */
export const cleanup = (): void => {
  for (const ws of clients) ws.terminate()
  clients.clear()
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  }
  children.clear()
}

export interface Program {
  readonly child: ChildProcess
  /** Everything written so far, stdout and stderr interleaved. */
  readonly stdout: () => string
  /** Everything written to stderr so far. */
  readonly stderr: () => string
  /** Resolves once stdout matches `pattern`; fails if the program exits first or after `ms`. */
  readonly waitForStdout: (pattern: RegExp, ms?: number) => Promise<RegExpMatchArray>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** Where and how to run the program. */
export interface ProgramOptions {
  readonly env?: NodeJS.ProcessEnv | undefined
  /** Run under `ulimit -n openFiles` (the descriptor limit). */
  readonly openFiles?: number | undefined
}

/** Spawn `node src/main.ts ...args` from the repository root, with PORT/HOST/REDIS_URL/WORKERS unset. */
export const spawnProgram = (args: ReadonlyArray<string>, options: ProgramOptions = {}): Program => {
  const baseEnv = { ...process.env }
  for (const name of ["PORT", "HOST", "REDIS_URL", "WORKERS"]) delete baseEnv[name]
  const env = { ...baseEnv, NO_COLOR: "1", ...options.env }
  const quoted = [process.execPath, "src/main.ts", ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ")
  const child = options.openFiles === undefined
    ? spawn(process.execPath, ["src/main.ts", ...args], { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] })
    : spawn("bash", ["-c", `ulimit -n ${options.openFiles} && exec ${quoted}`], {
      cwd: repoRoot,
      env,
      stdio: ["ignore", "pipe", "pipe"]
    })
  children.add(child)
  let out = ""
  let err = ""
  const watchers = new Set<() => void>()
  const onData = (chunk: string) => {
    out += chunk
    for (const check of watchers) check()
  }
  child.stdout!.setEncoding("utf8").on("data", onData)
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    err += chunk
    onData(chunk)
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  const waitForStdout = (pattern: RegExp, ms = 10_000) =>
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
        void exited.then(({ code, signal }) => {
          watchers.delete(check)
          reject(new Error(`program exited (${code ?? signal}) before its output matched ${pattern}\n${out}`))
        })
      }),
      ms
    )
  return { child, stdout: () => out, stderr: () => err, waitForStdout, exited }
}

/** Start the program and learn its port from the "listening on" line. */
export const startProgram = async (args: ReadonlyArray<string>, options: ProgramOptions = {}) => {
  const program = spawnProgram(args, options)
  const match = await program.waitForStdout(/listening on [^\s]+:(\d+)/)
  return { ...program, port: Number(match[1]) }
}

export interface Client {
  readonly ws: WebSocket
  /** Every text message received, parsed as JSON when it parses. */
  readonly received: Array<unknown>
  readonly closed: Promise<number>
  /** Resolves with the first received message (from now on or already there) that matches. */
  readonly waitFor: (what: string, match: (message: any) => boolean, ms?: number) => Promise<unknown>
}

/** Open a `ws` client on 127.0.0.1:port/path and wait for the upgrade. */
export const openClient = async (port: number, path: string): Promise<Client> => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`)
  clients.add(ws)
  const received: Array<unknown> = []
  const watchers = new Set<() => void>()
  ws.on("message", (data) => {
    const text = (data as Buffer).toString("utf8")
    let value: unknown = text
    try {
      value = JSON.parse(text)
    } catch {
      // not JSON: keep the text
    }
    received.push(value)
    for (const check of watchers) check()
  })
  const closed = new Promise<number>((resolve) => ws.once("close", resolve))
  await withTimeout("open", new Promise<void>((resolve, reject) => ws.once("open", resolve).once("error", reject)), 5_000)
  const waitFor = (what: string, match: (message: any) => boolean, ms = 5_000) =>
    withTimeout(
      what,
      new Promise<unknown>((resolve) => {
        const check = () => {
          const found = received.find(match)
          if (found !== undefined) {
            watchers.delete(check)
            resolve(found)
          }
        }
        watchers.add(check)
        check()
      }),
      ms
    )
  return { ws, received, closed, waitFor }
}

/** GET a JSON or text page from the program. */
export const get = async (port: number, path: string): Promise<{ status: number; body: string }> => {
  const response = await withTimeout(`GET ${path}`, fetch(`http://127.0.0.1:${port}${path}`), 5_000)
  return { status: response.status, body: await response.text() }
}
