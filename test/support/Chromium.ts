/**
 * Debian's Chromium driven by playwright-core, for the browser tests. Never a
 * downloaded browser: `.ci/run` installs the `chromium` package.
 *
 * @example
 * const browser = await launchChromium()
 */
import { existsSync } from "node:fs"
import { type Browser, chromium } from "playwright-core"

export const CHROMIUM = "/usr/bin/chromium"

/** Launch headless; fails (never skips) when the package is missing. */
export const launchChromium = (): Promise<Browser> => {
  if (!existsSync(CHROMIUM)) {
    return Promise.reject(new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)`))
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    // No background networking: this machine's network is closed, and nothing but localhost is wanted.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic"
    ]
  })
}
