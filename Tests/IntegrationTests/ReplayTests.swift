import Foundation
import Glibc
import Testing

/// Deterministic mode, `run --record` and `swiftvmm replay` (docs/replay.md): recordings of
/// interrupt-driven guests replay to the same serial output, status and digests every time; a
/// guest that reads the TSC is caught at the exit where it went another way; bad logs are one
/// line and status 88.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct ReplayTests {
    static let replays = 10

    /// The digest the recording's line reports ("digest 0x.../0x...").
    static func digest(_ stderr: String) -> String? {
        guard let range = stderr.range(of: #"digest 0x[0-9a-f]+/0x[0-9a-f]+"#, options: .regularExpression) else { return nil }
        return String(stderr[range])
    }

    /// Records `arguments`, then replays the log `replays` times: every replay must print what
    /// the recording printed, end with its status and report its digest.
    static func recordAndReplay(_ arguments: [String], input: String? = nil, waitFor: String? = nil) throws -> RunResult {
        let log = Harness.temporaryPath("replay.log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let recorded = try swiftvmm(["run"] + arguments + ["--record", log], input: input, waitFor: waitFor, timeout: 120)
        #expect(recorded.stderr.contains("swiftvmm: recorded "), "\(recorded)")
        let digest = Self.digest(recorded.stderr)
        #expect(digest != nil, "\(recorded)")
        for round in 1...replays {
            let replayed = try swiftvmm(["replay", log], timeout: 120)
            #expect(replayed.stdout == recorded.stdout, "replay \(round): the serial output differs\n\(replayed)")
            #expect(replayed.status == recorded.status, "replay \(round): \(replayed)")
            #expect(replayed.stderr.contains("swiftvmm: replay identical: "), "replay \(round): \(replayed)")
            #expect(Self.digest(replayed.stderr) == digest, "replay \(round): \(replayed)")
        }
        return recorded
    }

    @Test func theInterruptDrivenEchoGuestReplaysItsPipedInput() throws {
        requireGuests("echo.elf")
        let recorded = try Self.recordAndReplay([Harness.guest("echo.elf"), "--cmdline", "irq=1 lines=3"],
                                                input: "first line\nsecond\nthird and last\n", waitFor: "echo: ready")
        #expect(recorded.status == 1, "\(recorded)")
        for line in ["echo: FIRST LINE (irq4 count", "echo: SECOND (irq4", "echo: THIRD AND LAST (irq4"] {
            #expect(recorded.stdout.contains(line), "\(recorded)")
        }
    }

    /// The ticks a PIT programmed for `hz` can give in one RTC second of virtual time: the guest
    /// rounds the reload (1193182 / hz), so the rate is a little off hz (250 Hz is 249.986 Hz) and
    /// a second holds the floor or the ceiling of it, depending on where the first tick fell
    /// (the recording's start phase, taken from the real clock).
    static func ticksPerSecond(hz: Int) -> ClosedRange<Int> {
        let reload = (1_193_182 + hz / 2) / hz
        let rate = 1_193_182.0 / Double(reload)
        return Int(rate.rounded(.down))...Int(rate.rounded(.up))
    }

    /// Each "second N: C ticks" line of the ticks guest, N from 1 to `seconds`.
    static func ticks(_ stdout: String, seconds: Int) -> [Int?] {
        (1...seconds).map { second in
            guard let line = stdout.split(separator: "\n").first(where: { $0.hasPrefix("second \(second): ") }) else { return nil }
            return Int(line.dropFirst("second \(second): ".count).prefix { $0.isNumber })
        }
    }

    @Test func timerInterruptsLandAtTheSameExitsInEveryRun() throws {
        requireGuests("ticks.elf")
        let recorded = try Self.recordAndReplay([Harness.guest("ticks.elf"), "--cmdline", "hz=250 seconds=3 strict=1"])
        #expect(recorded.status == 1, "the virtual clock gives the PIT's rate in every RTC second\n\(recorded)")
        let allowed = Self.ticksPerSecond(hz: 250)
        #expect(allowed == 249...250)
        #expect(Self.ticks(recorded.stdout, seconds: 3).allSatisfy { $0.map(allowed.contains) ?? false }, "\(allowed) per second\n\(recorded)")
    }

    @Test func aGuestServingTheBalloonReplays() throws {
        requireGuests("ticks.elf")
        let recorded = try Self.recordAndReplay([Harness.guest("ticks.elf"), "--balloon", "--balloon-target", "24M",
                                                 "--balloon-stats-interval", "0.5", "--cmdline", "balloon=1 seconds=2 strict=1"])
        #expect(recorded.status == 1, "\(recorded)")
        #expect(Self.ticks(recorded.stdout, seconds: 2).allSatisfy { $0.map(Self.ticksPerSecond(hz: 100).contains) ?? false }, "\(recorded)")
        #expect(recorded.stdout.contains("balloon 6144 pages"), "\(recorded)")
    }

    @Test func aGuestThatReadsTheTSCDivergesAtTheExitThatShowsIt() throws {
        requireGuests("ticks.elf")
        let log = Harness.temporaryPath("tsc.log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let recorded = try swiftvmm(["run", Harness.guest("ticks.elf"), "--cmdline", "tsc=1 seconds=1", "--record", log])
        #expect(recorded.status == 1 && recorded.stdout.contains("ticks: read the TSC"), "\(recorded)")
        let replayed = try swiftvmm(["replay", log])
        #expect(replayed.status == 90, "\(replayed)")
        let line = replayed.stderr.split(separator: "\n").first { $0.contains("replay diverged at exit ") }
        #expect(line?.contains("expected io-out port 0x80 size 1 value 0x") == true && line?.contains(", got io-out port 0x80") == true, "\(replayed)")
        #expect(!replayed.stdout.contains("ticks: 100 Hz"), "the replay stops where it diverged\n\(replayed)")
    }

    @Test func badLogsAreOneLineAndStatus88() throws {
        requireGuests("ticks.elf")
        // A copy of the image, so that changing it afterwards is a log "from another image".
        let image = Harness.temporaryPath("ticks.elf"), log = Harness.temporaryPath("good.log")
        try FileManager.default.copyItem(atPath: Harness.guest("ticks.elf"), toPath: image)
        defer { for path in [image, log] { try? FileManager.default.removeItem(atPath: path) } }
        let recorded = try swiftvmm(["run", image, "--cmdline", "seconds=1", "--record", log])
        #expect(recorded.status == 1, "\(recorded)")
        let good = [UInt8](FileManager.default.contents(atPath: log) ?? Data())
        #expect(good.count > 200)
        func replay(_ bytes: [UInt8], _ name: String) throws -> RunResult {
            let path = Harness.temporaryPath(name)
            defer { try? FileManager.default.removeItem(atPath: path) }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            return try swiftvmm(["replay", path])
        }
        var corrupted = good
        corrupted[good.count - 30] ^= 0x20
        var otherVersion = good
        otherVersion[8] = 2
        let cases: [(String, [UInt8], String)] = [
            ("truncated", Array(good.prefix(good.count - 12)), "truncated"),
            ("corrupted", corrupted, "does not match its checksum"),
            ("version", otherVersion, "log format version 2, this swiftvmm reads version 1"),
            ("not-a-log", Array("SVMM? no, a shell script\n".utf8), "not a swiftvmm replay log"),
            ("empty", [], "not a swiftvmm replay log"),
        ]
        for (name, bytes, words) in cases {
            let result = try replay(bytes, name + ".log")
            #expect(result.status == 88, "\(name): \(result)")
            #expect(result.stderr.hasPrefix("swiftvmm: replay log ") && result.stderr.contains(words), "\(name): \(result)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(name): one line\n\(result)")
        }
        // The same log against a changed image.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
        try handle.seekToEnd()
        handle.write(Data([0x90]))
        try handle.close()
        let other = try swiftvmm(["replay", log])
        #expect(other.status == 88 && other.stderr.contains("recorded from another image"), "\(other)")
        #expect(other.stdout.isEmpty, "nothing runs\n\(other)")
    }

    @Test func whatDeterministicModeCannotRecordIsRefused() throws {
        requireGuests("ticks.elf")
        for (options, words) in [(["--cpus", "2"], "one vCPU"), (["--pit", "kernel"], "the emulated PIT"),
                                 (["--disk", "/dev/null"], "no --disk"), (["--exit-nanoseconds", "0"], "out of range")] {
            let result = try swiftvmm(["run", Harness.guest("ticks.elf"), "--deterministic"] + options)
            #expect(result.status == 64 && result.stderr.contains(words), "\(options): \(result)")
        }
    }
}
