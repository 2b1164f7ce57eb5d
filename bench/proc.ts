/**
 * Server-side measurements from /proc (Linux): CPU time and resident memory of
 * a child process, read by the orchestrator, never by the process itself.
 */
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync, writeFileSync } from "node:fs"

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100
  } catch {
    return 100
  }
})()

/**
 * User + system CPU time of a whole process (all threads), in microseconds.
 *
 * @example
 * const before = cpuMicros(pid) // ... later: cpuMicros(pid) - before
 */
export const cpuMicros = (pid: number): number => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // The command name may contain spaces: fields start after the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    // utime and stime are fields 14 and 15 of proc(5); here offset by 3.
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / clockTicks
  } catch {
    return NaN
  }
}

const statusKiB = (pid: number, key: string): number => {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    return m ? Number(m[1]) : NaN
  } catch {
    return NaN
  }
}

/** Current resident set size in bytes. */
export const rssBytes = (pid: number): number => statusKiB(pid, "VmRSS") * 1024

/** Peak resident set size (VmHWM) in bytes since start or the last `resetPeakRss`. */
export const peakRssBytes = (pid: number): number => statusKiB(pid, "VmHWM") * 1024

/** Resets VmHWM to the current RSS (proc(5), clear_refs "5"), so one server can serve several runs. */
export const resetPeakRss = (pid: number): void => {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5")
  } catch {
    // not permitted: the peak then covers the server's whole life
  }
}

/** Machine description for the report: CPU model and logical core count. */
export const machine = (): { cpu: string; cores: number } => {
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8")
    const cpu = /^model name\s*:\s*(.+)$/m.exec(info)?.[1] ?? "unknown"
    const cores = info.match(/^processor\s*:/gm)?.length ?? 0
    return { cpu, cores }
  } catch {
    return { cpu: "unknown", cores: 0 }
  }
}

/**
 * A process and all its descendants (a cluster primary and its workers), from
 * /proc/PID/task/TID/children; [pid] alone when that file is missing.
 *
 * @example
 * processTree(primary).reduce((sum, pid) => sum + cpuMicros(pid), 0)
 */
export const processTree = (pid: number): Array<number> => {
  const out: Array<number> = []
  const visit = (p: number): void => {
    out.push(p)
    let tasks: Array<string> = []
    try {
      tasks = readdirSync(`/proc/${p}/task`)
    } catch {
      return
    }
    for (const tid of tasks) {
      try {
        for (const child of readFileSync(`/proc/${p}/task/${tid}/children`, "utf8").trim().split(/\s+/)) {
          if (child.length > 0) visit(Number(child))
        }
      } catch {
        // gone, or no children file
      }
    }
  }
  visit(pid)
  return out
}
