/**
 * A real `redis-server` for a test: its own process on a free loopback port,
 * no persistence, stopped (SIGKILL) by `stop`. `.ci/run` installs Debian's
 * redis-server; a machine without it fails the test with that message.
 *
 * @example
 * const redis = await startRedis()
 * // ... RedisBroker.layer({ url: redis.url }) ...
 * await redis.kill()    // as if it crashed
 * await redis.restart() // same port, empty
 * await redis.stop()
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Net from "node:net"
import { onTestFinished } from "vitest"
import { withTimeout } from "./Timeout.ts"

export interface RedisServer {
  readonly port: number
  readonly url: string
  /** SIGKILL, and wait until the process is gone. */
  readonly kill: () => Promise<void>
  /** Start again on the same port (after `kill`). */
  readonly restart: () => Promise<void>
  /** Kill if running. Safe to call twice. */
  readonly stop: () => Promise<void>
}

/** A port the kernel says is free now (bound on 127.0.0.1, then released). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

const launch = (port: number): Promise<ChildProcess> =>
  withTimeout(
    `redis-server on port ${port} to accept connections`,
    new Promise<ChildProcess>((resolve, reject) => {
      const child = spawn(
        "redis-server",
        ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "notice"],
        { stdio: ["ignore", "pipe", "pipe"] }
      )
      let out = ""
      child.once("error", (error) => reject(new Error(`cannot run redis-server (is it installed? .ci/run installs it): ${error.message}`)))
      child.once("exit", (code) => reject(new Error(`redis-server exited with ${code}:\n${out}`)))
      child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
        out += chunk
        if (out.includes("Ready to accept connections")) resolve(child)
      })
    }),
    10_000
  )

const killChild = (child: ChildProcess): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  child.kill("SIGKILL")
  return withTimeout("redis-server to exit", exited, 5_000)
}

/** Start a redis-server on a free loopback port (or on `port`). */
export const startRedis = async (chosen?: number): Promise<RedisServer> => {
  const port = chosen ?? await freePort()
  let child: ChildProcess | undefined = await launch(port)
  // A test that times out never reaches its `finally`: stop the server when the test ends, however it
  // ends. (Outside a test, in `beforeAll`, there is no current test: the caller's `afterAll` stops it.)
  try {
    onTestFinished(() => {
      if (child !== undefined) child.kill("SIGKILL")
    })
  } catch {
    // not inside a test
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill: async () => {
      if (child !== undefined) await killChild(child)
      child = undefined
    },
    restart: async () => {
      if (child !== undefined) await killChild(child)
      child = await launch(port)
    },
    stop: async () => {
      if (child !== undefined) await killChild(child)
      child = undefined
    }
  }
}
