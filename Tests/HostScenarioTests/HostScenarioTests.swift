import Foundation
import Testing

/// The placement and memory scenarios of shared/scenarios.md, run for real: `swiftvmm host` with
/// N = 4 x P single-vCPU VMs (P = 2 here), asserting the expected outcome from the per-period JSON
/// log. They measure CPU time, so `make test` runs them on their own, after the other tests.
enum Scenario {
    static let environment = ProcessInfo.processInfo.environment
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let binary = environment["SWIFTVMM_BIN"] ?? root + "/.build/debug/swiftvmm"
    static let guests = environment["SWIFTVMM_GUESTS"] ?? root + "/out/guests"
    static let enabled = access("/dev/kvm", R_OK | W_OK) == 0 || environment["CI"] == "true"
    static let hostCPUs = [0, 1]
    static let vmCount = 4 * hostCPUs.count

    struct Record {
        var period: Int
        var moves: Int
        var rss: Double
        var pcpus: [(cpu: Int, usage: Double, vms: [String])]
        /// Each pCPU's steal share (this machine is itself a VM): usage its hypervisor took.
        var steal: [Double] = []
        /// Each pCPU's busy share as /proc/stat counts it (steal, other processes and the VMM's
        /// own threads included), beside `usage`, which is the vCPUs' alone.
        var busy: [Double] = []
        var vms: [String: (actual: Double, unused: Double?, cpus: [Int], balloon: Double)]
    }

    /// Runs `swiftvmm host` on `vms` for `duration` seconds and returns the parsed period log.
    static func run(placement: String, vms: [[String: Any]], duration: Double, period: Double = 1,
                    sourceLocation: SourceLocation = #_sourceLocation) throws -> [Record] {
        for name in ["cpuburn.elf", "memhog.elf"] where !FileManager.default.fileExists(atPath: guests + "/" + name) {
            Issue.record("guest \(name) is missing: run `make guests`", sourceLocation: sourceLocation)
        }
        #expect(access("/dev/kvm", R_OK | W_OK) == 0, "/dev/kvm is not usable", sourceLocation: sourceLocation)
        let directory = NSTemporaryDirectory() + "swiftvmm-scenario-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config: [String: Any] = ["period": period, "placement": placement, "hostCPUs": hostCPUs,
                                     "hostReserve": "1G", "vms": vms]
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: directory + "/host.json"))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["host", directory + "/host.json", "--duration", "\(duration)", "--log-file", directory + "/log.jsonl", "--quiet"]
        process.standardOutput = FileHandle.nullDevice
        let stderr = Pipe()
        process.standardError = stderr
        try process.run()
        process.waitUntilExit()
        let errors = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "swiftvmm host ended with \(process.terminationStatus): \(errors)", sourceLocation: sourceLocation)
        let text = (try? String(contentsOfFile: directory + "/log.jsonl", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            let pcpus = (object["pcpus"] as? [[String: Any]] ?? []).map {
                (cpu: $0["cpu"] as? Int ?? -1, usage: $0["usage"] as? Double ?? 0, vms: $0["vms"] as? [String] ?? [])
            }
            var vms: [String: (Double, Double?, [Int], Double)] = [:]
            for vm in object["vms"] as? [[String: Any]] ?? [] {
                vms[vm["name"] as? String ?? ""] = (vm["actualMiB"] as? Double ?? 0, vm["unusedMiB"] as? Double, vm["cpus"] as? [Int] ?? [],
                                                    vm["balloonMiB"] as? Double ?? 0)
            }
            let steal = (object["pcpus"] as? [[String: Any]] ?? []).map { $0["hostSteal"] as? Double ?? 0 }
            let busy = (object["pcpus"] as? [[String: Any]] ?? []).map { $0["hostBusy"] as? Double ?? 0 }
            return Record(period: object["period"] as? Int ?? 0, moves: object["moves"] as? Int ?? 0,
                          rss: object["rssAnonMiB"] as? Double ?? 0, pcpus: pcpus, steal: steal, busy: busy, vms: vms)
        }
    }

    static func burners(duty: (Int) -> Int, affinity: (Int) -> [Int]?) -> [[String: Any]] {
        (0..<vmCount).map { index in
            var vm: [String: Any] = ["name": "vm\(index + 1)", "image": guests + "/cpuburn.elf", "memory": "32M",
                                     "cmdline": "duty=\(duty(index)) report=1000"]
            if let cpus = affinity(index) { vm["affinity"] = [cpus] }
            return vm
        }
    }

    static func counts(_ record: Record) -> [Int] { record.pcpus.map(\.vms.count) }
    static func usages(_ record: Record) -> [Double] { record.pcpus.map(\.usage) }
    static func spread(_ record: Record) -> Double { (usages(record).max() ?? 0) - (usages(record).min() ?? 0) }

    /// Measured pCPU usage moves by 10 points and more from period to period on this host (a
    /// single period can read 40 apart on a balanced host): balance is judged on the mean spread
    /// over the last three periods, within `tolerance` points.
    static let tolerance = 20.0
    static func settledSpread(_ log: [Record]) -> Double {
        log.suffix(3).reduce(0) { $0 + spread($1) } / 3
    }

    /// `tolerance` plus what the most disturbed pCPU lost to anything but its vCPUs in those
    /// periods: the steal this machine's own hypervisor took, or more generally its busy time
    /// (/proc/stat) beyond what its vCPUs used (other processes, the VMM's other threads), as the
    /// run measured it. Usage those took is not the placement's doing (seen here: a balanced
    /// placement read 37 points apart in a period with heavy steal, and 25 apart with 4 + 4
    /// identical burners while another process ran).
    static func settledTolerance(_ log: [Record]) -> Double {
        tolerance + log.suffix(3).reduce(0) { $0 + interference($1) } / 3
    }

    /// The largest share of one pCPU that went to something other than its vCPUs in `record`.
    static func interference(_ record: Record) -> Double {
        record.pcpus.indices.map { index in
            let steal = index < record.steal.count ? record.steal[index] : 0
            let busy = index < record.busy.count ? record.busy[index] : 0
            return max(steal, busy - record.pcpus[index].usage)
        }.max() ?? 0
    }
}

/// One serialized parent: the placement and memory suites must not run at the same time either,
/// or one's load distorts the other's measurements.
@Suite(.serialized, .enabled(if: Scenario.enabled, "needs a usable /dev/kvm (always runs, and fails, when CI=true)"))
struct HostScenarios {}

extension HostScenarios {
@Suite struct PlacementScenarioTests {
    let balanced = Array(repeating: Scenario.vmCount / Scenario.hostCPUs.count, count: Scenario.hostCPUs.count)

    @Test func scenario1AllStartOnTheFirstCPU() throws {
        let log = try Scenario.run(placement: "load-aware", vms: Scenario.burners(duty: { _ in 100 }, affinity: { _ in [0] }), duration: 8.5)
        try #require(log.count >= 7, "\(log.count) periods")
        #expect(Scenario.counts(log[0]) != balanced || log[0].moves > 0, "started unbalanced")
        let converged = try #require(log.firstIndex { Scenario.counts($0) == balanced }, "never balanced: \(log.map(Scenario.counts))")
        #expect(converged <= 3, "converged in period \(log[converged].period)")
        #expect(log[(converged + 1)...].allSatisfy { $0.moves == 0 && Scenario.counts($0) == balanced }, "no churn after: \(log.map(\.moves))")
        #expect(Scenario.settledSpread(log) < Scenario.settledTolerance(log), "usage per period: \(log.map(Scenario.usages)), steal \(log.map(\.steal))")
    }

    @Test func scenario2HalfOnTheFirstHalfOnTheLast() throws {
        let last = Scenario.hostCPUs.last!
        let log = try Scenario.run(placement: "load-aware", vms: Scenario.burners(duty: { _ in 100 }, affinity: { $0 < Scenario.vmCount / 2 ? [0] : [last] }), duration: 6.5)
        try #require(log.count >= 5)
        #expect(log.suffix(3).allSatisfy { Scenario.counts($0) == balanced }, "\(log.map(Scenario.counts))")
        #expect(Scenario.settledSpread(log) < Scenario.settledTolerance(log), "usage per period: \(log.map(Scenario.usages)), steal \(log.map(\.steal))")
    }

    @Test func scenario3AlreadyBalancedMeansNoChanges() throws {
        let log = try Scenario.run(placement: "load-aware", vms: Scenario.burners(duty: { _ in 100 }, affinity: { [$0 % 2] }), duration: 6.5)
        try #require(log.count >= 5)
        #expect(log.allSatisfy { $0.moves == 0 }, "moves per period: \(log.map(\.moves))")
        #expect(log.allSatisfy { Scenario.counts($0) == balanced })
    }

    @Test func scenario4FloatingVCPUsGetBalancedPins() throws {
        let log = try Scenario.run(placement: "load-aware", vms: Scenario.burners(duty: { _ in 100 }, affinity: { _ in nil }), duration: 6.5)
        try #require(log.count >= 5)
        let last = log.last!
        #expect(last.vms.values.allSatisfy { $0.cpus.count == 1 }, "every vCPU pinned: \(last.vms.mapValues(\.cpus))")
        #expect(Scenario.counts(last) == balanced, "\(Scenario.counts(last))")
        #expect(log.dropFirst(2).allSatisfy { $0.moves == 0 }, "settled: \(log.map(\.moves))")
    }

    /// Heavy (odd-numbered) and light VMs alternate, so placing by count puts every heavy VM on one pCPU.
    /// Round-robin must miss the tolerance by half again. Heavy = 35% duty, light = 5%: 80% of a
    /// pCPU each when mixed two and two; 140% against 20%
    /// when heavy ones share a pCPU.
    static var heavyLight: [[String: Any]] { Scenario.burners(duty: { $0 % 2 == 0 ? 35 : 5 }, affinity: { _ in nil }) }

    @Test func scenario5LoadAwareBalancesUsage() throws {
        let log = try Scenario.run(placement: "load-aware", vms: Self.heavyLight, duration: 8.5)
        try #require(log.count >= 7)
        #expect(Scenario.settledSpread(log) < Scenario.settledTolerance(log), "usage per period: \(log.map(Scenario.usages)), steal \(log.map(\.steal))")
        #expect(log.suffix(3).allSatisfy { $0.moves == 0 }, "moves: \(log.map(\.moves))")
    }

    @Test func scenario5RoundRobinFails() throws {
        let log = try Scenario.run(placement: "round-robin", vms: Self.heavyLight, duration: 6.5)
        try #require(log.count >= 5)
        let last = log.last!
        #expect(Scenario.counts(last) == balanced, "round-robin balances counts")
        #expect(Scenario.settledSpread(log) > 1.5 * Scenario.tolerance, "but not usage: \(log.map(Scenario.usages))")
    }
}

}

extension HostScenarios {
/// Each VM has 1 GiB of RAM and starts with 512 MiB usable (a 512 MiB balloon), as the scenarios'
/// "each VM starts with 512 MiB" under a 1 GiB maximum; memhog waits for the coordinator when it
/// runs short (oom=wait).
@Suite struct MemoryScenarioTests {
    /// Every guest first holds for 3 s, so the balloons reach their initial size before anyone
    /// consumes (otherwise start-up races the coordinator), then runs `phases`.
    static func hogs(_ phases: (Int) -> String) -> [[String: Any]] {
        (0..<Scenario.vmCount).map { index in
            ["name": "vm\(index + 1)", "image": Scenario.guests + "/memhog.elf", "memory": "1G", "balloon": true,
             "balloonTarget": "512M", "cmdline": "phases=hold:3,\(phases(index)) oom=wait"]
        }
    }

    func actual(_ record: Scenario.Record, _ vm: String) -> Double { record.vms[vm]?.actual ?? 0 }

    /// The log from the period by which every guest had once inflated its initial 512 MiB balloon:
    /// before that "Actual" still counts memory the guest is about to give up.
    func afterStartup(_ log: [Scenario.Record]) -> [Scenario.Record] {
        let names = Set(log.flatMap { $0.vms.keys })
        let start = names.map { name in log.firstIndex { ($0.vms[name]?.balloon ?? 0) >= 512 } ?? log.count }.max() ?? 0
        return Array(log[start...])
    }

    @Test func scenario1OneConsumerThenItFrees() throws {
        let full = try Scenario.run(placement: "none", vms: Self.hogs { $0 == 0 ? "touch:600M@60M,hold:3,free:600M@150M,serve" : "serve" },
                                    duration: 33)
        try #require(full.count >= 25, "\(full.count) periods")
        let log = afterStartup(full)
        try #require(log.count >= 20, "balloons inflated by period \(full.count - log.count + 1)")
        let peak = log.indices.max { actual(log[$0], "vm1") < actual(log[$1], "vm1") }!
        #expect(actual(log[peak], "vm1") > 660, "vm1 gained memory: \(log.map { actual($0, "vm1") })")
        let idle = (2...Scenario.vmCount).map { "vm\($0)" }
        #expect(idle.allSatisfy { actual(log[peak], $0) < 420 }, "idle VMs gave some up: \(idle.map { actual(log[peak], $0) })")
        #expect(idle.allSatisfy { vm in log.allSatisfy { actual($0, vm) >= 128 } }, "nobody squeezed below the floor")
        #expect(actual(log.last!, "vm1") < actual(log[peak], "vm1") - 250, "vm1 gave memory back: \(log.map { actual($0, "vm1") })")
        let peakRSS = log.map(\.rss).max() ?? 0
        #expect(log.last!.rss < peakRSS - 300, "host RSS dropped: \(log.map { Int($0.rss) })")
    }

    @Test func scenario2AllConsumeThenAllFree() throws {
        // Eight VMs first-touching memory at once run at about 20 MiB/s each on this 2-CPU PVM host
        // (shadow paging in the host kernel), hence the long stage 1.
        let full = try Scenario.run(placement: "none", vms: Self.hogs { _ in "touch:500M@50M,hold:4,free:500M@200M,serve" }, duration: 60)
        try #require(full.count >= 50, "\(full.count) periods")
        let log = afterStartup(full)
        try #require(log.count >= 45, "balloons inflated by period \(full.count - log.count + 1)")
        let names = (1...Scenario.vmCount).map { "vm\($0)" }
        // Each VM's size where its own stage 1 ended. Eight VMs first-touching memory at once stall
        // and resume unevenly on this host, so one may still be growing while the others already
        // hold: sizes are compared at each VM's own end of stage 1, not at one instant. That end
        // is the plateau of its hold phase (4 s, so at least three periods), read as the median of
        // its three largest sizes: the coordinator works from statistics one period old, so a
        // grant can overshoot for one period and be taken back in the next (seen: 821 MiB for one
        // period, then 701 for the rest of the hold), and that one period is not the VM's size.
        let stage1End = names.map { vm in log.map { actual($0, vm) }.sorted().suffix(3).first! }
        #expect(stage1End.allSatisfy { $0 > 512 }, "all gained beyond their 512 MiB start: \(stage1End)")
        // The coordinator grows a VM in grants of up to one step (128 MiB); which VM's last grant
        // lands before its stage 1 ends depends on when the host let it run, so sizes may differ
        // by one grant, measured here as the largest the coordinator made in this run, plus a
        // quarter for the pages a guest holds outside its touch target.
        let grants = names.flatMap { vm in zip(log, log.dropFirst()).map { ($0.vms[vm]?.balloon ?? 0) - ($1.vms[vm]?.balloon ?? 0) } }
        let largestGrant = grants.max() ?? 0
        #expect(largestGrant > 0 && largestGrant <= 128, "the coordinator granted memory in steps: \(largestGrant) MiB")
        #expect(stage1End.max()! - stage1End.min()! < 1.25 * largestGrant,
                "similar sizes at the end of stage 1: \(stage1End), largest grant \(largestGrant) MiB")
        let atEnd = names.map { actual(log.last!, $0) }
        #expect(zip(stage1End, atEnd).allSatisfy { $1 < $0 - 250 }, "all gave memory back: \(stage1End) -> \(atEnd)")
        #expect(log.last!.rss < (log.map(\.rss).max() ?? 0) - 1500, "host RSS dropped: \(log.map { Int($0.rss) })")
    }

    @Test func scenario3MemoryMovesFromFreeingToConsumingVMs() throws {
        let half = Scenario.vmCount / 2
        let full = try Scenario.run(placement: "none", vms: Self.hogs { index in
            index < half ? "touch:300M@40M,hold:2,free:300M@150M,serve" : "touch:300M@40M,hold:2,touch:300M@40M,serve"
        }, duration: 60)
        try #require(full.count >= 50, "\(full.count) periods")
        let log = afterStartup(full)
        try #require(log.count >= 45, "balloons inflated by period \(full.count - log.count + 1)")
        let freeing = (1...half).map { "vm\($0)" }, consuming = ((half + 1)...Scenario.vmCount).map { "vm\($0)" }
        // Stage 1 ends where the freeing VMs (A, B) were largest.
        let totals = log.map { record in freeing.reduce(0) { $0 + actual(record, $1) } }
        let stage1 = log[totals.indices.max { totals[$0] < totals[$1] }!]
        let last = log.last!
        // Each freeing VM is judged from its own largest size: one the coordinator grew late
        // (its grants waited for the host's spare memory) peaks after the group does.
        let peaks = freeing.map { vm in log.map { actual($0, vm) }.max() ?? 0 }
        #expect(zip(freeing, peaks).allSatisfy { actual(last, $0) < $1 - 150 },
                "A and B gave memory: \(freeing.map { (actual(stage1, $0), actual(last, $0)) }), peaks \(peaks)")
        // The consumers run their second touch at their own pace, some already at stage 1's end, so
        // the move is judged on the groups from that moment; each consumer ends holding its 600 MiB.
        func total(_ group: [String], _ record: Scenario.Record) -> Double { group.reduce(0) { $0 + actual(record, $1) } }
        #expect(total(freeing, stage1) - total(freeing, last) > 300, "A and B together gave memory")
        #expect(total(consuming, last) - total(consuming, stage1) > 300,
                "C and D together gained memory: \(consuming.map { (actual(stage1, $0), actual(last, $0)) })")
        #expect(consuming.allSatisfy { actual(last, $0) > 650 }, "\(consuming.map { actual(last, $0) })")
    }
}
}
