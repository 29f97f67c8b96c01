@testable import Boot
import Host
import Foundation
import Glibc
import Synchronization
import Testing
import VMM

/// Runs a machine on a background thread and lets the test watch its serial output (a file).
final class RunningMachine: Sendable {
    let machine: Machine
    let serialPath: String
    let outcome = Mutex<RunOutcome?>(nil)

    init(_ config: VMConfig) throws {
        var config = config
        serialPath = Harness.temporaryPath("serial.log")
        config.serial = .file(serialPath)
        machine = try Machine(config: config)
        Thread { [self] in
            let result = self.machine.run()
            self.outcome.withLock { $0 = result }
        }.start()
    }

    /// The serial output so far, up to its last complete line (the guest may be mid-line).
    var output: String {
        let text = (try? String(contentsOfFile: serialPath, encoding: .utf8)) ?? ""
        return text.lastIndex(of: "\n").map { String(text[...$0]) } ?? ""
    }

    /// Polls `condition` every 20 ms for up to `timeout` seconds.
    func wait(_ what: String, timeout: Double = 60, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            if outcome.withLock({ $0 }) != nil { break }
            usleep(20_000)
        }
        if condition() { return true }
        Issue.record("timed out waiting for \(what); serial output:\n\(output)")
        return false
    }

    func stop() -> RunOutcome? {
        machine.stop()
        for _ in 0..<200 where outcome.withLock({ $0 }) == nil { usleep(20_000) }
        try? FileManager.default.removeItem(atPath: serialPath)
        return outcome.withLock { $0 }
    }
}

@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct BalloonIntegrationTests {
    static let mib: UInt64 = 1 << 20

    @Test func inflatingReturnsMemoryToTheHostAndDeflatingGivesItBackZeroed() throws {
        requireGuests("memhog.elf")
        var config = VMConfig(imagePath: Harness.guest("memhog.elf"))
        config.memorySize = 256 * Self.mib
        config.balloon = true
        config.balloonStatsInterval = 0.2
        config.commandLine = "phases=touch:200M,free:150M,serve reuse=1"
        let vm = try RunningMachine(config)
        let balloon = try #require(vm.machine.balloon)
        guard vm.wait("the guest to touch 200 MiB and free 150 MiB", { vm.output.contains("memhog: serving") }) else { return }

        let touched = vm.machine.memory.residentBytes()
        #expect(touched >= 200 * Int(Self.mib), "guest RAM resident after touching: \(touched)")
        guard vm.wait("statistics from the guest", { (balloon.status().statistics?[.freeMemory] ?? 0) > 150 * Self.mib }) else { return }
        let reportedFree = balloon.status().statistics?[.freeMemory] ?? 0
        #expect(reportedFree > 180 * Self.mib && reportedFree < 210 * Self.mib, "guest reports \(reportedFree >> 20) MiB free")

        let anonymousBefore = ProcessMemory.current()?.anonymous ?? 0
        balloon.setTarget(bytes: 128 * Self.mib)
        guard vm.wait("the balloon to reach 128 MiB", { balloon.status().actualBytes == 128 * Self.mib }) else { return }
        let inflated = vm.machine.memory.residentBytes()
        let dropped = touched - inflated
        #expect(Double(dropped) >= 0.99 * Double(128 * Self.mib), "RSS of guest RAM dropped by \(dropped >> 10) KiB")
        // RssAnon is guest RAM plus the VMM's own memory, which may grow meanwhile (a busy machine,
        // a thread's first stack pages): the drop must be the released guest pages less what the
        // VMM itself grew by in the same window, measured as RssAnon beside the guest's mincore view.
        let anonymousAfter = ProcessMemory.current()?.anonymous ?? 0
        let anonymousDrop = anonymousBefore - anonymousAfter
        let ownGrowth = max(0, (anonymousAfter - inflated / 1024) - (anonymousBefore - touched / 1024))
        #expect(ownGrowth < 16 * 1024, "the VMM's own anonymous memory grew by \(ownGrowth) KiB while inflating")
        #expect(Double(anonymousDrop + ownGrowth) >= 0.99 * Double(128 * 1024),
                "process RssAnon dropped by \(anonymousDrop) KiB, the VMM grew by \(ownGrowth) KiB")
        let counters = balloon.status().counters
        #expect(counters.inflated == 32768 && counters.released == 32768 && counters.rejectedPFNs == 0)

        balloon.setTarget(bytes: 0)
        func reusedLines() -> [Substring] { vm.output.split(separator: "\n").filter { $0.hasPrefix("memhog: reused ") } }
        func reused() -> Int { reusedLines().compactMap { Int($0.split(separator: " ")[2]) }.reduce(0, +) }
        guard vm.wait("the guest to reuse all 32768 deflated pages", { reused() == 32768 }) else { return }
        #expect(balloon.status().actualPages == 0)
        #expect(reusedLines().allSatisfy { $0.hasSuffix(", 0 read non-zero before use") }, "\(reusedLines())")
        let regrown = vm.machine.memory.residentBytes() - inflated
        #expect(Double(regrown) >= 0.99 * Double(128 * Self.mib), "guest used the memory again: +\(regrown >> 10) KiB")
        #expect(balloon.status().counters.deflated == 32768)
        #expect(vm.stop() == .stopped)
    }

    @Test func guestUnderMemoryPressureDeflatesOnItsOwn() throws {
        requireGuests("memhog.elf")
        let result = try swiftvmm(["run", Harness.guest("memhog.elf"), "--memory", "256M", "--balloon", "--balloon-target", "160M",
                                   "--stats", "--cmdline", "phases=touch:150M,end"])
        #expect(result.status == 1, "\(result)")
        // Free is the guest's page pool (its RAM less its own image) less the 160 MiB balloon.
        let pool = result.stdout.split(separator: " ").firstIndex(of: "pool").flatMap { index in
            Int(result.stdout.split(separator: " ")[index + 1]) }
        #expect(pool != nil && result.stdout.contains("memhog: balloon inflated: held 0 MiB, free \((pool ?? 0) - 160) MiB, balloon 160 MiB"),
                "\(result)")
        #expect(result.stdout.contains("from the balloon under memory pressure (deflate on OOM)"), "\(result)")
        #expect(result.stdout.contains("memhog: touch 150 MiB done: held 150 MiB"), "\(result)")
        let deflated = result.stderr.split(separator: " ").first { $0.hasPrefix("deflated=") }.flatMap { Int($0.dropFirst(9)) }
        #expect((deflated ?? 0) > 0, "\(result)")
    }

    @Test func hostileDriverCannotHurtTheVMM() throws {
        requireGuests("badballoon.elf")
        let result = try swiftvmm(["run", Harness.guest("badballoon.elf"), "--balloon", "--stats", "--memory", "256M",
                                   "--balloon-stats-interval", "0.1"])
        #expect(result.status == 1, "\(result)")
        for check in ["out-of-range-pfns", "descriptor-loop", "chain-longer-than-queue", "buffer-outside-ram",
                      "avail-index-jump", "wrong-length-stats", "ram-sized-stats-chain", "million-pfn-inflate",
                      "stats-queue-size-zero", "valid-inflate-after-abuse"] {
            #expect(result.stdout.contains("ok   \(check)"), "\(check): \(result)")
        }
        #expect(result.stderr.contains("inflated=18 deflated=0 released=18"), "\(result)")
        #expect(result.stderr.contains("rejected_pfns=2"), "\(result)")
        #expect(result.stderr.contains("stats_rejected=2 queue_errors=4"), "\(result)")
        // The RAM-sized statistics chain was refused unread: the VMM's own memory stayed far
        // below the 4 GiB it would have copied (16 buffers of ~254 MiB).
        let anonymous = result.stderr.split(separator: " ").first { $0.hasPrefix("anon_overhead_kib=") }
            .flatMap { Int($0.dropFirst(18).prefix { $0.isNumber }) }
        #expect((anonymous ?? .max) < 64 * 1024, "\(result)")
        #expect(result.stderr.contains("virtio-balloon: queue 0: descriptor chain from 0 is longer than 64"), "\(result)")
        #expect(result.stderr.contains("is outside guest RAM; the device needs a reset"), "\(result)")
    }

    @Test func balloonOptionsAreChecked() throws {
        var result = try swiftvmm(["run", "x.elf", "--balloon-target", "64M"])
        #expect(result.status == 64 && result.stderr.contains("need --balloon"), "\(result)")
        result = try swiftvmm(["run", "x.elf", "--balloon", "--balloon-target", "1G", "--memory", "256M"])
        #expect(result.status == 64 && result.stderr.contains("larger than guest memory"), "\(result)")
    }
}
