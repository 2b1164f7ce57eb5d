/**
 * The server under conformance test: wsreactor's echo app on a real TCP port.
 * `CONFORMANCE_TARGET=ws` swaps in the `ws` reference server instead, to check
 * the suite itself (that server's known deviations are in `referenceQuirks`).
 */
import { echoApp } from "../../src/Demo.ts"
import * as Reference from "./ReferenceEchoServer.ts"
import { startServer } from "./TcpServer.ts"

const useReference = process.env["CONFORMANCE_TARGET"] === "ws"

export const referenceQuirks = useReference ? Reference.referenceQuirks : undefined

export const startEchoServer = (): Promise<{ readonly port: number; readonly close: () => Promise<void> }> =>
  useReference ? Reference.startEchoServer() : startServer(echoApp)
