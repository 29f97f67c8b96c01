import Testing
@testable import Placement

func vcpus(_ demands: [Double], pinned: [Int?]) -> [VCPUSample] {
    demands.enumerated().map { index, demand in
        VCPUSample(name: "vm\(index + 1)", usage: demand, demand: demand,
                   affinity: pinned[index].map { [$0] } ?? [0, 1], lastCPU: pinned[index] ?? index % 2)
    }
}

func apply(_ pinning: Pinning, to samples: [VCPUSample]) -> [VCPUSample] {
    var result = samples
    for (index, cpu) in pinning { result[index].affinity = [cpu] }
    return result
}

func loads(_ samples: [VCPUSample], _ cpus: [Int] = [0, 1]) -> [Double] {
    cpus.map { cpu in samples.filter { $0.pinnedCPU == cpu }.reduce(0) { $0 + $1.demand } }
}

@Suite struct LoadAwarePlacementTests {
    @Test func spreadsVCPUsPiledOnOneCPU() { // scenario 1
        var policy = LoadAwarePlacement()
        let start = vcpus(Array(repeating: 100, count: 8), pinned: Array(repeating: 0, count: 8))
        let pinning = policy.decide(start, hostCPUs: [0, 1])
        #expect(pinning.count == 4, "fewest moves: \(pinning)")
        let after = apply(pinning, to: start)
        #expect(loads(after) == [400, 400])
        #expect(policy.decide(after, hostCPUs: [0, 1]).isEmpty) // and then it stays put
    }

    @Test func leavesABalancedHostAlone() { // scenario 3
        var policy = LoadAwarePlacement()
        let balanced = vcpus([98, 101, 99, 100, 102, 97, 100, 99], pinned: [0, 1, 0, 1, 0, 1, 0, 1])
        #expect(policy.decide(balanced, hostCPUs: [0, 1]).isEmpty)
    }

    @Test func pinsFloatingVCPUsEvenly() { // scenario 4
        var policy = LoadAwarePlacement()
        let floating = vcpus(Array(repeating: 100, count: 8), pinned: Array(repeating: nil, count: 8))
        let after = apply(policy.decide(floating, hostCPUs: [0, 1]), to: floating)
        #expect(after.allSatisfy { $0.pinnedCPU != nil })
        #expect(loads(after) == [400, 400])
    }

    @Test func balancesUsageNotCounts() { // scenario 5: heavy and light mixed
        var policy = LoadAwarePlacement()
        let mixed = vcpus([40, 10, 40, 10, 40, 10, 40, 10], pinned: Array(repeating: nil, count: 8))
        let after = apply(policy.decide(mixed, hostCPUs: [0, 1]), to: mixed)
        #expect(loads(after) == [100, 100])
        var roundRobin = RoundRobinPlacement()
        let naive = apply(roundRobin.decide(mixed, hostCPUs: [0, 1]), to: mixed)
        #expect(loads(naive) == [160, 40]) // counts equal, load not: the baseline fails
    }

    @Test func prefersOneMoveAndUsesSwapsOnlyWhenNeeded() {
        var policy = LoadAwarePlacement(threshold: 10)
        // 0: 60 + 60, 1: 30 + 10: moving a 60 overshoots; swapping 60 for 10 evens it out.
        let samples = vcpus([60, 60, 30, 10], pinned: [0, 0, 1, 1])
        let after = apply(policy.decide(samples, hostCPUs: [0, 1]), to: samples)
        #expect(loads(after) == [70, 90] || loads(after) == [90, 70])
    }

    @Test func ignoresCPUsOutsideTheHostSet() {
        var policy = LoadAwarePlacement()
        let samples = vcpus([100, 100], pinned: [5, 5])
        let after = apply(policy.decide(samples, hostCPUs: [0, 1]), to: samples)
        #expect(Set(after.compactMap(\.pinnedCPU)) == [0, 1])
    }
}

@Suite struct RoundRobinTests {
    @Test func assignsInTurnAndMovesOnlyWhatDiffers() {
        var policy = RoundRobinPlacement()
        let samples = vcpus([1, 1, 1, 1], pinned: [0, 0, 0, 1])
        let pinning = policy.decide(samples, hostCPUs: [0, 1])
        #expect(pinning == [1: 1, 2: 0].filter { samples[$0.key].pinnedCPU != $0.value })
    }
}

@Suite struct ReportTests {
    @Test func linesInTheScenarioFormat() {
        let samples = [VCPUSample(name: "vm1", usage: 30.04, demand: 30, affinity: [0]),
                       VCPUSample(name: "vm5", usage: 20, demand: 20, affinity: [0]),
                       VCPUSample(name: "vm2", usage: 12.25, demand: 12, affinity: [1])]
        let report = PCPUReport.build(samples, hostCPUs: [0, 1])
        #expect(report[0].line == "0 - usage: 50.0 | mapping ['vm1', 'vm5']")
        #expect(report[1].line == "1 - usage: 12.3 | mapping ['vm2']")
    }

    @Test func parsesSchedstatAndStat() {
        let stat = "1234 (vcpu0 x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 1 0 0"
        let parsed = ThreadSchedStat.parse(schedstat: "5000000000 1000000000 42\n", stat: stat)
        #expect(parsed == ThreadSchedStat(runNanoseconds: 5_000_000_000, waitNanoseconds: 1_000_000_000, lastCPU: 1))
        let later = ThreadSchedStat(runNanoseconds: 5_500_000_000, waitNanoseconds: 1_300_000_000, lastCPU: 0)
        let (usage, demand) = later.usageAndDemand(since: parsed!, wallNanoseconds: 1_000_000_000)
        #expect(usage == 50 && demand == 80)
        #expect(parseCPUList("0-3,6\n") == [0, 1, 2, 3, 6])
    }
}

@Suite struct SmoothingTests {
    @Test func periodToPeriodNoiseDoesNotMoveAnything() {
        var policy = LoadAwarePlacement()
        let pins: [Int?] = [0, 0, 0, 0, 1, 1, 1, 1]
        // Heavy and light mixed 2 + 2 per pCPU; one period's noise gives pCPU 0 a 24-point lead.
        _ = policy.decide(vcpus([38, 9, 38, 8, 38, 9, 38, 8], pinned: pins), hostCPUs: [0, 1])
        let noisy = vcpus([44, 12, 42, 10, 34, 6, 36, 8], pinned: pins)
        #expect(loads(noisy)[0] - loads(noisy)[1] > 20)
        #expect(policy.decide(noisy, hostCPUs: [0, 1]).isEmpty)
    }
}

@Suite struct HostCPUTimesTests {
    @Test func busyShareFromProcStat() {
        let before = HostCPUTimes.parse(stat: "cpu  10 0 10 80\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\n")
        let after = HostCPUTimes.parse(stat: "cpu  90 0 10 100\ncpu0 80 0 5 40 0 0 0 0 0 0\ncpu1 10 0 5 55 5 0 0 0 0 0\n")
        let busy = after.busyPercent(since: before)
        #expect(busy[0] == 100) // 75 jiffies of user, no idle
        #expect(busy[1] == 20) // 5 busy of 25
        #expect(HostCPUTimes.read() != nil)
        // Steal (the eighth field) as a share of the period.
        let calm = HostCPUTimes.parse(stat: "cpu0 10 0 10 80 0 0 0 0 0 0\n")
        let robbed = HostCPUTimes.parse(stat: "cpu0 40 0 10 120 0 0 0 30 0 0\n")
        #expect(robbed.stealPercent(since: calm)[0] == 30)
    }
}
