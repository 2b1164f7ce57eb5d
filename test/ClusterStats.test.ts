// Merging the workers' Prometheus text: same series summed, HELP/TYPE once, first-seen order.
import { describe, expect, it } from "@effect/vitest"
import { sumPrometheus } from "../src/ClusterStats.ts"

describe("ClusterStats.sumPrometheus", () => {
  it("sums samples with the same name and labels and keeps comments once", () => {
    const worker1 = [
      "# HELP open Connections open",
      "# TYPE open gauge",
      "open 3",
      "# TYPE closes counter",
      'closes{code="1000"} 2',
      ""
    ].join("\n")
    const worker2 = ["# HELP open Connections open", "# TYPE open gauge", "open 4", 'closes{code="1000"} 1', 'closes{code="1006"} 5', ""]
      .join("\n")
    expect(sumPrometheus([worker1, worker2])).toBe(
      [
        "# HELP open Connections open",
        "# TYPE open gauge",
        "open 7",
        "# TYPE closes counter",
        'closes{code="1000"} 3',
        'closes{code="1006"} 5',
        ""
      ].join("\n")
    )
  })

  it("skips lines that are not samples instead of failing", () => {
    expect(sumPrometheus(["garbage\nx notanumber\ny 1\n"])).toBe("y 1\n")
  })
})
