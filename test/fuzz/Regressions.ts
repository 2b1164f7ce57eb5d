/**
 * Saved fuzz counterexamples: `npm run fuzz` writes each shrunk failing input
 * to test/fuzz/regressions/<property>-<seed>.json, and domain.test.ts replays
 * every file there on each `npm test`, so a bug found once stays fixed.
 *
 * JSON cannot hold Uint8Array or bigint: they are written as
 * `{ "$bytes": "<hex>" }` and `{ "$bigint": "<decimal>" }`.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const regressionsDir = fileURLToPath(new URL("./regressions/", import.meta.url))

export interface Regression {
  readonly property: string
  /** How it was found: `fc.assert(..., { seed, path })` reproduces the run. */
  readonly seed: number
  readonly path: string | undefined
  /** The violation, as first reported. */
  readonly error: string
  readonly input: unknown
}

export const serialize = (regression: Regression): string =>
  JSON.stringify(regression, (_key, value: unknown) =>
    value instanceof Uint8Array
      ? { $bytes: Buffer.from(value).toString("hex") }
      : typeof value === "bigint"
      ? { $bigint: value.toString() }
      : value, 2) + "\n"

export const deserialize = (text: string): Regression =>
  JSON.parse(text, (_key, value: unknown) => {
    if (typeof value === "object" && value !== null) {
      const v = value as Record<string, unknown>
      if (typeof v["$bytes"] === "string") return new Uint8Array(Buffer.from(v["$bytes"], "hex"))
      if (typeof v["$bigint"] === "string") return BigInt(v["$bigint"])
    }
    return value
  }) as Regression

/** Write a counterexample; returns the file written. */
export const save = (regression: Regression): string => {
  fs.mkdirSync(regressionsDir, { recursive: true })
  const file = path.join(regressionsDir, `${regression.property}-${regression.seed >>> 0}.json`)
  fs.writeFileSync(file, serialize(regression))
  return file
}

/** Every saved counterexample, by file name. */
export const load = (): Array<{ readonly file: string; readonly regression: Regression }> =>
  fs.existsSync(regressionsDir)
    ? fs.readdirSync(regressionsDir).filter((f) => f.endsWith(".json")).sort().map((file) => ({
      file,
      regression: deserialize(fs.readFileSync(path.join(regressionsDir, file), "utf8"))
    }))
    : []
