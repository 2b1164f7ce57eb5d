// `node src/main.ts --workers 2`: two worker processes on one port under a supervising primary.
// The chat spans both workers without Redis (through the primary); a worker killed with SIGKILL
// loses only its own clients and comes back; SIGTERM stops everything with 1001 and exit 0;
// a crash loop makes the primary give up loudly.
import { afterEach, describe, expect, it } from "@effect/vitest"
import * as Http from "node:http"
import { type Client, cleanup, openClient, type Program, startProgram, spawnProgram } from "../support/Program.ts"
import { withTimeout } from "../support/Timeout.ts"

afterEach(cleanup)

/** GET on a fresh TCP connection (no keep-alive), so that successive requests reach different workers. */
const getFresh = (port: number, path: string) =>
  withTimeout(
    `GET ${path}`,
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      Http.get({ host: "127.0.0.1", port, path, agent: false }, (response) => {
        let body = ""
        response.setEncoding("utf8").on("data", (chunk: string) => (body += chunk))
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body }))
      }).on("error", reject)
    }),
    5_000
  )

const join = (name: string) => JSON.stringify({ type: "join", name })
const say = (text: string) => JSON.stringify({ type: "message", text })

/** Worker pids from the primary's "worker N online (pid P)" lines, in order. */
const workerPids = (program: Program) => [...program.stdout().matchAll(/online \(pid (\d+)\)/g)].map((m) => Number(m[1]))

const count = (text: string, pattern: RegExp) => [...text.matchAll(pattern)].length

const waitForCount = (program: Program, pattern: RegExp, n: number, ms = 10_000) =>
  program.waitForStdout(new RegExp(`(?:[\\s\\S]*?${pattern.source}){${n}}`), ms)

/** Open a chat client and join; resolves with the client and the members its "joined" listed. */
const joinAs = async (port: number, name: string): Promise<Client & { readonly members: ReadonlyArray<string> }> => {
  const client = await openClient(port, "/chat/room")
  client.ws.send(join(name))
  const joined = await client.waitFor(`${name} joined`, (m) => m.type === "joined" && m.name === name) as { members: Array<string> }
  return { ...client, members: joined.members }
}

/** `from` says `text`; every client in `to` receives it. */
const reachesAll = async (from: Client, text: string, to: ReadonlyArray<Client>) => {
  from.ws.send(say(text))
  await Promise.all(to.map((c) => c.waitFor(`"${text}"`, (m) => m.type === "message" && m.text === text)))
}

describe("node src/main.ts --workers 2", () => {
  it("the chat spans both workers; a worker killed with SIGKILL loses only its clients and is restarted; SIGTERM exits 0", async () => {
    const program = await startProgram(["--port", "0", "--host", "127.0.0.1", "--workers", "2"])
    await waitForCount(program, /listening on 127\.0\.0\.1:\d+/, 2)
    const pids = workerPids(program)
    expect(pids).toHaveLength(2)

    // Round-robin over two workers: consecutive connections alternate.
    const clients: Array<Client & { readonly members: ReadonlyArray<string> }> = []
    for (let i = 0; i < 6; i++) clients.push(await joinAs(program.port, `c${i}`))
    // Presence spans the workers too: one member list, one set of names.
    expect(clients[5]!.members).toEqual(["c0", "c1", "c2", "c3", "c4", "c5"])
    const impostor = await openClient(program.port, "/chat/room")
    impostor.ws.send(join("C0"))
    await impostor.waitFor("the name taken", (m) => m.type === "error" && /taken/.test(m.message))
    impostor.ws.close()
    await withTimeout("the impostor's close", impostor.closed, 5_000)
    for (const [i, client] of clients.entries()) await reachesAll(client, `hello from c${i}`, clients)

    // /healthz and /metrics answer for the whole server, whichever worker takes the request.
    for (let i = 0; i < 4; i++) {
      const health = JSON.parse((await getFresh(program.port, "/healthz")).body)
      expect(health).toMatchObject({ status: "ok", connections: 6, workers: 2, workersAnswering: 2 })
      expect(health.perWorker.map((w: { pid: number }) => w.pid).sort()).toEqual([...pids].sort())
      const metrics = (await getFresh(program.port, "/metrics")).body
      expect(metrics).toMatch(/^wsreactor_connections_open 6$/m)
      expect(metrics).toMatch(/^wsreactor_workers 2$/m)
      expect(metrics.match(/^# TYPE wsreactor_connections_open gauge$/gm)).toHaveLength(1)
    }

    const closes = clients.map((c) => c.closed.then((code) => ({ c, code })))
    process.kill(pids[0]!, "SIGKILL")
    await program.waitForStdout(/killed by SIGKILL; restarting it in \d+ ms/)
    await waitForCount(program, /online \(pid \d+\)/, 3)
    await waitForCount(program, /listening on 127\.0\.0\.1:\d+/, 3)
    // Whoever was on the killed worker saw the TCP connection drop (1006); the others stayed.
    const settled = await withTimeout(
      "the killed worker's clients to close",
      Promise.race([Promise.all(closes), new Promise<null>((resolve) => setTimeout(() => resolve(null), 1_000))]),
      5_000
    )
    expect(settled).toBeNull() // not everyone closed
    const lost = clients.filter((c) => c.ws.readyState !== c.ws.OPEN)
    const survivors = clients.filter((c) => c.ws.readyState === c.ws.OPEN)
    expect(lost.length).toBe(3)
    expect(survivors.length).toBe(3)
    expect(await lost[0]!.closed).toBe(1006)

    // The restarted worker serves again, and the chat still spans both workers.
    const fresh = [await joinAs(program.port, "n0"), await joinAs(program.port, "n1")]
    // The killed worker's members left the room with it.
    const survivorNames = clients.filter((c) => survivors.includes(c)).map((c) => `c${clients.indexOf(c)}`)
    expect(fresh[1]!.members).toEqual([...survivorNames, "n0", "n1"])
    await reachesAll(survivors[0]!, "after the restart", [...survivors, ...fresh])
    await reachesAll(fresh[0]!, "from a new client", [...survivors, ...fresh])
    await reachesAll(fresh[1]!, "from another new client", [...survivors, ...fresh])
    expect(workerPids(program)).toHaveLength(3)

    const everyone = [...survivors, ...fresh]
    const closed = Promise.all(everyone.map((c) => c.closed))
    program.child.kill("SIGTERM")
    expect(await withTimeout("clients to close", closed, 10_000)).toEqual(everyone.map(() => 1001))
    expect(await withTimeout("the primary to exit", program.exited, 10_000)).toEqual({ code: 0, signal: null })
    expect(count(program.stdout(), /exited with code 0/g)).toBe(2)
  }, 60_000)

  it("a crash loop (the workers cannot listen) makes the primary stop restarting and exit 1, saying why", async () => {
    // 192.0.2.1 (TEST-NET-1, RFC 5737) is on no interface here: every worker fails to listen.
    const program = spawnProgram(["--port", "0", "--host", "192.0.2.1", "--workers", "2"])
    const exit = await withTimeout("the primary to give up", program.exited, 20_000)
    expect(exit.code).toBe(1)
    expect(program.stdout()).toMatch(/crash loop: \d+ worker deaths within \d+ ms/)
    expect(program.stdout()).toMatch(/restarting it in \d+ ms/)
  }, 30_000)
})
