import Foundation
import Glibc
import Host
import Placement
import Testing

/// Page sharing (KSM) across host mode's VMs, and steal time seen from both sides. They run in
/// the timing-sensitive phase of `make test`, alone: ksmd scanning at full speed and vCPUs
/// pinned together would disturb the parallel tests, and theirs would blur these figures.
extension TimingSensitiveTests {
    /// The host's KSM settings, raised for a test and put back as they were.
    final class KSMSettings {
        let saved: (run: String, pagesToScan: String)?

        /// The settings as they are now; nil, recorded as a failure, on a kernel without KSM.
        static func take() -> KSMSettings? {
            guard KSMStatus.read() != nil else {
                Issue.record("\(KSMStatus.directory) is missing: this kernel has no KSM")
                return nil
            }
            return KSMSettings()
        }

        private init() {
            let directory = KSMStatus.directory
            let run = try? String(contentsOfFile: directory + "/run", encoding: .utf8)
            let pages = try? String(contentsOfFile: directory + "/pages_to_scan", encoding: .utf8)
            saved = run.flatMap { run in pages.map { (run.trimmingCharacters(in: .whitespacesAndNewlines), $0.trimmingCharacters(in: .whitespacesAndNewlines)) } }
        }

        /// Starts ksmd scanning 10000 pages a wake-up (0.5-0.7 s to merge 90% here, not 16-20 s).
        func start() throws {
            try "10000".write(toFile: KSMStatus.directory + "/pages_to_scan", atomically: false, encoding: .utf8)
            try "1".write(toFile: KSMStatus.directory + "/run", atomically: false, encoding: .utf8)
        }

        func restore() {
            guard let saved else { return }
            try? saved.run.write(toFile: KSMStatus.directory + "/run", atomically: false, encoding: .utf8)
            try? saved.pagesToScan.write(toFile: KSMStatus.directory + "/pages_to_scan", atomically: false, encoding: .utf8)
        }
    }

    /// Host mode's last period, parsed.
    func period(_ client: RawHTTPClient) -> [String: Any]? {
        guard let reply = client.request("GET", "/swiftvmm/host"), reply.status == 200 else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(reply.body.utf8)) as? [String: Any]
    }

    func sharedMiB(_ record: [String: Any]?) -> [String: Double] {
        let vms = record?["vms"] as? [[String: Any]] ?? []
        return Dictionary(uniqueKeysWithValues: vms.compactMap { vm in
            (vm["name"] as? String).map { ($0, vm["sharedMiB"] as? Double ?? -1) }
        })
    }

    /// Eight VMs fill 24 MiB with content identical across them, 4 MiB of zeros and 4 MiB of
    /// their own. With `pageSharing`, KSM merges the duplicates: the process's proportional
    /// memory (Pss_Anon; RssAnon counts a merged page in every mapping, measured) drops by at
    /// least 90% of the duplicate bytes and each VM's Shared figure matches what it filled. Then
    /// (asked through a balloon target) each rewrites 8 MiB with content of its own: the copies
    /// come back, and every guest finds every byte it wrote.
    @Test func identicalVMsShareTheirPagesAndGetThemBackOnWrite() throws {
        requireGuests("samepages.elf")
        guard let ksm = KSMSettings.take() else { return }
        defer { ksm.restore() }
        try "0".write(toFile: KSMStatus.directory + "/run", atomically: false, encoding: .utf8)
        let (same, zero, unique, rewrite, count) = (24.0, 4.0, 4.0, 8.0, 8)
        let config = Harness.temporaryPath("sharing.json"), serial = (0..<count).map { Harness.temporaryPath("sharing-\($0).out") }
        defer { for path in [config] + serial { try? FileManager.default.removeItem(atPath: path) } }
        let vms = (0..<count).map { index in
            #"{"name": "vm\#(index)", "image": "\#(Harness.guest("samepages.elf"))", "memory": "64M", "serial": "file:\#(serial[index])", "#
                + #""balloon": true, "cmdline": "same=24M zero=4M unique=4M seed=\#(index) hold=120 rewrite=8M after=3"}"#
        }
        try #"{"period": 0.5, "placement": "none", "memoryPolicy": "none", "pageSharing": true, "vms": [\#(vms.joined(separator: ", "))]}"#
            .write(toFile: config, atomically: true, encoding: .utf8)
        let host = try APIProcess(["host", config, "--duration", "240", "--quiet"])
        let client = host.client
        func serialText(_ index: Int) -> String { (try? String(contentsOfFile: serial[index], encoding: .utf8)) ?? "" }
        guard host.wait("every VM filled", { (0..<count).allSatisfy { serialText($0).contains("samepages: filled") } }) else { return }
        // Two periods after the fill: nothing merged yet (ksmd is off).
        let filled = period(client)?["period"] as? Int ?? 0
        guard host.wait("two periods", { (period(client)?["period"] as? Int ?? 0) >= filled + 2 }) else { return }
        let before = try #require(period(client))
        let pssBefore = try #require(before["pssAnonMiB"] as? Double)
        #expect(sharedMiB(before).values.allSatisfy { $0 >= 0 && $0 < 1 }, "merged before ksmd ran: \(sharedMiB(before))")

        try ksm.start()
        let expected = same + zero
        var merged: [String: Any]?
        let converged = host.wait("the merge", seconds: 90) {
            merged = period(client)
            return sharedMiB(merged).count == count && sharedMiB(merged).values.allSatisfy { $0 >= expected * 0.97 }
        }
        #expect(converged, "shared: \(sharedMiB(merged))")
        #expect((0..<count).allSatisfy { !serialText($0).contains("rewrote") }, "the guests rewrote before the merge was seen")
        // Duplicates: 7 of the 8 copies of the same pages, and every zero page but one.
        let duplicates = Double(count - 1) * same + Double(count) * zero
        let pssMerged = try #require(merged?["pssAnonMiB"] as? Double)
        #expect(pssBefore - pssMerged >= 0.9 * duplicates, "Pss_Anon \(pssBefore) -> \(pssMerged) MiB, \(duplicates) MiB duplicated")
        for (name, shared) in sharedMiB(merged) {
            // The runtime's own pages are identical across VMs too: a few hundred KiB more.
            #expect(shared >= expected * 0.97 && shared <= expected + 2, "\(name): Shared \(shared) MiB, filled \(expected)")
        }

        // Rewrites: each VM's 8 MiB become its own again, and Pss grows back by the 7 copies.
        for index in 0..<count { #expect(client.request("PATCH", "/swiftvmm/host/vms/vm\(index)/balloon", #"{"amount_mib": 1}"#)?.status == 204) }
        guard host.wait("the rewrites", seconds: 40, { (0..<count).allSatisfy { serialText($0).contains("samepages: rewrote") } }) else { return }
        let rewritten = period(client)?["period"] as? Int ?? 0
        guard host.wait("two periods", { (period(client)?["period"] as? Int ?? 0) >= rewritten + 2 }) else { return }
        let after = try #require(period(client))
        let pssAfter = try #require(after["pssAnonMiB"] as? Double)
        #expect(pssAfter - pssMerged >= 0.9 * Double(count - 1) * rewrite, "Pss_Anon \(pssMerged) -> \(pssAfter) MiB after rewriting")
        for (name, shared) in sharedMiB(after) {
            #expect(shared <= expected - rewrite * 0.97, "\(name): Shared \(shared) MiB after rewriting \(rewrite) MiB")
        }
        #expect(host.exitStatus(within: 60) == 0, "a guest found a page it did not write")
        #expect((0..<count).allSatisfy { serialText($0).contains("samepages: rewrote 8 MiB (the host asked) in ") })
        for index in 0..<count {
            #expect(serialText(index).contains("samepages: checked 32 MiB: ok (0 pages differ)"), "vm\(index): \(serialText(index))")
        }
    }

    /// Without `pageSharing`, ksmd running at full speed merges nothing of ours.
    @Test func withoutPageSharingNothingMerges() throws {
        requireGuests("samepages.elf")
        guard let ksm = KSMSettings.take() else { return }
        defer { ksm.restore() }
        try ksm.start()
        let config = Harness.temporaryPath("no-sharing.json")
        defer { try? FileManager.default.removeItem(atPath: config) }
        let vm = { (index: Int) in
            #"{"name": "vm\#(index)", "image": "\#(Harness.guest("samepages.elf"))", "memory": "64M", "cmdline": "same=24M zero=4M hold=8 after=0"}"#
        }
        try #"{"period": 0.5, "placement": "none", "memoryPolicy": "none", "vms": [\#(vm(0)), \#(vm(1))]}"#
            .write(toFile: config, atomically: true, encoding: .utf8)
        let host = try APIProcess(["host", config, "--duration", "60", "--quiet"])
        guard host.wait("a period", { period(host.client) != nil }) else { return }
        usleep(3_000_000) // ksmd scans 10000 pages every 20 ms: ours would have merged by now
        let merging = try String(contentsOfFile: "/proc/\(host.process.processIdentifier)/ksm_merging_pages", encoding: .utf8)
        #expect(merging.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "pages merged without pageSharing: \(merging)")
        #expect(sharedMiB(period(host.client)).values.allSatisfy { $0 == -1 }, "no Shared figure without page sharing")
        #expect(host.exitStatus(within: 60) == 0)
    }

    /// Two busy single-vCPU VMs pinned to one host CPU, then to two: each guest's steal time
    /// (its steal-time record, which the VMM reads too) equals its vCPU thread's run_delay on
    /// the host within 5%; together their steal makes up the CPU they had to share, apart it is
    /// no more than what other processes took from their CPUs.
    @Test func stealTimeAgreesFromBothSides() throws {
        requireGuests("stealtime.elf")
        let online = parseCPUList((try? String(contentsOfFile: "/sys/devices/system/cpu/online", encoding: .utf8)) ?? "0")
        try #require(online.count >= 2, "needs two host CPUs")
        func pair(_ cpus: [Int]) throws -> [(wall: Double, guestSteal: Double, hostSteal: Double, hostDelay: Double)] {
            let processes = try cpus.map { cpu in
                let process = Process()
                let output = Pipe(), errors = Pipe()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                process.arguments = ["taskset", "-c", "\(cpu)", Harness.binary, "run", Harness.guest("stealtime.elf"), "--stats", "--", "seconds=3"]
                process.standardOutput = output
                process.standardError = errors
                try process.run()
                return (process, output, errors)
            }
            return processes.map { process, output, errors in
                let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                let err = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
                #expect(process.terminationStatus == 1, "\(out)\n\(err)")
                func number(_ key: String, _ text: String) -> Double { Double(text.components(separatedBy: key + "=").dropFirst().first?.prefix { $0.isNumber } ?? "") ?? -1 }
                // kvmclock, which the runtime turns on with steal time, keeps the TSC's real time.
                let kvmclock = number("kvmclock_ms", out), real = number("real_ms", out)
                #expect(abs(kvmclock - real) <= 0.02 * real + 5, "kvmclock \(kvmclock) ms, TSC \(real) ms: \(out)")
                return (real, number("steal_ms", out), number("guest_reported_ms", err), number("host_run_delay_ms", err))
            }
        }
        let together = try pair([online[0], online[0]])
        let cpusBefore = HostCPUTimes.read(), started = Date()
        let apart = try pair([online[0], online[1]])
        let cpusAfter = HostCPUTimes.read(), window = Date().timeIntervalSince(started) * 1000
        for (label, runs) in [("together", together), ("apart", apart)] {
            for run in runs {
                #expect(run.hostSteal >= 0 && run.hostDelay >= 0 && abs(run.hostSteal - run.hostDelay) <= max(0.05 * run.hostDelay, 5),
                        "\(label): the guest's record says \(run.hostSteal) ms, run_delay \(run.hostDelay) ms")
                #expect(run.guestSteal >= 0 && run.guestSteal <= run.hostSteal + 1, "\(label): \(run)")
            }
        }
        // Together, the two burned the same seconds on one CPU: what they ran adds up to at most
        // that CPU's wall time, so their steal adds up to at least the rest (more when the
        // machine is busy: other load only adds steal).
        let wall = together.map(\.wall).max() ?? 0
        let ran = together.map { $0.wall - $0.guestSteal }.reduce(0, +)
        #expect(ran <= wall * 1.05 + 20, "pinned together they ran \(ran) ms in \(wall) ms: \(together)")
        for run in together { #expect(run.guestSteal >= 0.3 * run.wall, "pinned together: \(run)") }
        // Apart, each has its CPU to itself but for what else ran there: its steal is at most
        // the time others used that CPU (from /proc/stat over the same seconds, less its own).
        if let cpusBefore, let cpusAfter {
            let busy = cpusAfter.busyPercent(since: cpusBefore)
            for (run, cpu) in zip(apart, [online[0], online[1]]) {
                let others = max(0, (busy[cpu] ?? 100) / 100 * window - (run.wall - run.guestSteal))
                #expect(run.guestSteal <= others + 0.05 * run.wall + 20, "apart on CPU \(cpu): steal \(run.guestSteal) ms, others used \(others) ms")
            }
        }
    }
}
