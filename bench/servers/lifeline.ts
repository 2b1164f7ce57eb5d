/**
 * Shared by the Node peers: exit when the orchestrator's stdin pipe closes,
 * so no server outlives a crashed or interrupted bench; and, for
 * bench/heap.ts, a heap snapshot on request (a line on stdin, idle otherwise).
 */
import { getHeapSpaceStatistics, writeHeapSnapshot } from "node:v8"

export const exitWithParent = (): void => {
  process.stdin.on("end", () => process.exit(0))
  process.stdin.on("error", () => process.exit(0))
  process.stdin.on("data", onCommand)
  process.stdin.resume()
  process.on("SIGTERM", () => process.exit(0))
}

let pending = ""

/**
 * `heap <file>` on stdin: full GC (when run with --expose-gc), then
 * `HEAP {"file","heapUsed","external","arrayBuffers"}` on stdout after
 * writing a V8 heap snapshot to <file>. The run.ts bench never writes to a
 * server's stdin, so this costs the measured servers nothing.
 */
const onCommand = (chunk: Buffer): void => {
  pending += chunk.toString()
  let nl: number
  while ((nl = pending.indexOf("\n")) >= 0) {
    const line = pending.slice(0, nl).trim()
    pending = pending.slice(nl + 1)
    if (line === "used") void liveHeap()
    else if (line === "spaces") spaces()
    else if (line.startsWith("heap ")) {
      const gc = (globalThis as { gc?: () => void }).gc
      gc?.()
      gc?.()
      const file = writeHeapSnapshot(line.slice(5))
      // read after the snapshot: it ends with a full GC and finished sweeping (right after gc() heapUsed still counts the dead)
      const { heapUsed, external, arrayBuffers } = process.memoryUsage()
      console.log(`HEAP ${JSON.stringify({ file, heapUsed, external, arrayBuffers })}`)
    }
  }
}

/**
 * `used` on stdin: the live heap without a snapshot (for bench/scratch/liveheap.ts): full GCs a
 * moment apart (concurrent sweeping finishes in between), then `USED {"heapUsed","external"}`.
 */
const liveHeap = async (): Promise<void> => {
  const gc = (globalThis as { gc?: () => void }).gc
  for (let i = 0; i < 3; i++) {
    gc?.()
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const { heapUsed, external, arrayBuffers } = process.memoryUsage()
  console.log(`USED ${JSON.stringify({ heapUsed, external, arrayBuffers })}`)
}

/**
 * `spaces` on stdin: V8's young and old generation as they are now (no GC), for the bench's idle
 * scenario: `SPACES {"young","old"}`, each `{ size, physical }` in bytes (physical: resident pages).
 */
const spaces = (): void => {
  const all = getHeapSpaceStatistics()
  const of = (name: string) => {
    const space = all.find((s) => s.space_name === name)
    return { size: space?.space_size ?? 0, physical: space?.physical_space_size ?? 0 }
  }
  console.log(`SPACES ${JSON.stringify({ young: of("new_space"), old: of("old_space") })}`)
}

/** Port from `--port <n>` (0 = ephemeral). */
export const portArg = (): number => {
  const i = process.argv.indexOf("--port")
  return i > 0 ? Number(process.argv[i + 1]) : 0
}
