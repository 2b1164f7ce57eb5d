/**
 * Shared by the Node peers: exit when the orchestrator's stdin pipe closes,
 * so no server outlives a crashed or interrupted bench.
 */
export const exitWithParent = (): void => {
  process.stdin.on("end", () => process.exit(0))
  process.stdin.on("error", () => process.exit(0))
  process.stdin.resume()
  process.on("SIGTERM", () => process.exit(0))
}

/** Port from `--port <n>` (0 = ephemeral). */
export const portArg = (): number => {
  const i = process.argv.indexOf("--port")
  return i > 0 ? Number(process.argv[i + 1]) : 0
}
