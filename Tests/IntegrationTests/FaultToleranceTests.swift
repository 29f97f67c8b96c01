import Foundation
import Glibc
import Testing

/// Fault tolerance (docs/replay.md): a primary streams its log to a backup; killed with SIGKILL
/// at random points, the primary's work is carried on by the backup with every sequence number
/// of the `seq` guest once, in order; a killed backup leaves the primary running alone.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct FaultToleranceTests {
    static let count = 400

    /// What an uninterrupted run of `seq count=400` prints.
    static var expected: String {
        (["seq: \(count) lines at 200 Hz"] + (1...count).map { "seq \($0)" } + ["seq: done"]).joined(separator: "\n") + "\n"
    }

    /// Starts swiftvmm with stdout appended to `output` (both members of the pair share it) and
    /// stderr to a file of its own.
    static func start(_ arguments: [String], output: Int32, errors: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = arguments
        process.standardOutput = FileHandle(fileDescriptor: output, closeOnDealloc: false)
        FileManager.default.createFile(atPath: errors, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errors))
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Waits for `process` at most `seconds`, then kills it; its status (nil when it had to be killed).
    static func wait(_ process: Process, seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(5000) }
        guard !process.isRunning else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    struct Pair {
        let primary: Process, backup: Process
        let output: String, primaryErrors: String, backupErrors: String, socket: String
        let fd: Int32

        func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        var printed: String { text(output) }
        func cleanUp() {
            close(fd)
            for path in [output, primaryErrors, backupErrors, socket] { try? FileManager.default.removeItem(atPath: path) }
        }
    }

    /// A primary and its backup on a fresh Unix socket, both appending to one output file.
    static func startPair() throws -> Pair {
        let output = Harness.temporaryPath("ft.out"), socket = Harness.temporaryPath("ft.sock")
        let fd = open(output, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        #expect(fd >= 0)
        let primaryErrors = Harness.temporaryPath("primary.err"), backupErrors = Harness.temporaryPath("backup.err")
        let guest = Harness.guest("seq.elf")
        let primary = try start(["run", guest, "--ft-primary", "unix:" + socket, "--cmdline", "count=\(count)"], output: fd, errors: primaryErrors)
        let backup = try start(["run", guest, "--ft-backup", "unix:" + socket], output: fd, errors: backupErrors)
        return Pair(primary: primary, backup: backup, output: output, primaryErrors: primaryErrors, backupErrors: backupErrors, socket: socket, fd: fd)
    }

    @Test func theBackupTakesOverAtTwentyRandomPointsWithNoLineLostOrRepeated() throws {
        requireGuests("seq.elf")
        var generator = SystemRandomNumberGenerator()
        var tookOver = 0
        for round in 1...20 {
            let pair = try Self.startPair()
            defer { pair.cleanUp() }
            // The primary dies somewhere in its guest's run (400 lines at 200 Hz: about two
            // seconds of guest time), counted from its first line: by then the backup is connected.
            let started = Date().addingTimeInterval(30)
            while !pair.printed.hasPrefix("seq: ") && Date() < started { usleep(2000) }
            let delay = Double.random(in: 0...2.2, using: &generator)
            usleep(UInt32(delay * 1e6))
            kill(pair.primary.processIdentifier, SIGKILL)
            pair.primary.waitUntilExit()
            let status = Self.wait(pair.backup, seconds: 60)
            let context = "round \(round), primary killed \(String(format: "%.3f", delay)) s after its first line\n--- backup stderr\n\(pair.text(pair.backupErrors))\n--- primary stderr\n\(pair.text(pair.primaryErrors))"
            #expect(status == 1, "\(context)")
            #expect(pair.printed == Self.expected, "\(context)\n--- output\n\(pair.printed)")
            if pair.text(pair.backupErrors).contains("the backup takes over") { tookOver += 1 }
        }
        #expect(tookOver >= 10, "most kills land while the primary runs (\(tookOver) of 20 took over)")
    }

    @Test func whenTheBackupDiesThePrimaryGoesOnAlone() throws {
        requireGuests("seq.elf")
        let pair = try Self.startPair()
        defer { pair.cleanUp() }
        let started = Date().addingTimeInterval(30)
        while !pair.printed.hasPrefix("seq: ") && Date() < started { usleep(2000) }
        usleep(500_000)
        kill(pair.backup.processIdentifier, SIGKILL)
        pair.backup.waitUntilExit()
        let status = Self.wait(pair.primary, seconds: 60)
        #expect(status == 1, "\(pair.text(pair.primaryErrors))")
        #expect(pair.text(pair.primaryErrors).contains("swiftvmm: ft: the backup went away after exit "), "\(pair.text(pair.primaryErrors))")
        #expect(pair.text(pair.primaryErrors).contains("the primary goes on alone"))
        #expect(pair.printed == Self.expected, "\(pair.printed)")
    }

    @Test func aPairThatRunsThroughPrintsOnceAndEndsTogether() throws {
        requireGuests("seq.elf")
        let pair = try Self.startPair()
        defer { pair.cleanUp() }
        let primary = Self.wait(pair.primary, seconds: 60), backup = Self.wait(pair.backup, seconds: 60)
        #expect(primary == 1 && backup == 1, "\(pair.text(pair.primaryErrors))\n\(pair.text(pair.backupErrors))")
        #expect(pair.printed == Self.expected)
        #expect(pair.text(pair.backupErrors).contains("the primary's guest ended"), "\(pair.text(pair.backupErrors))")
    }

    @Test func aBackupOfAnotherImageIsRefused() throws {
        requireGuests("seq.elf", "ticks.elf")
        let socket = Harness.temporaryPath("ft.sock")
        defer { try? FileManager.default.removeItem(atPath: socket) }
        let fd = open("/dev/null", O_WRONLY)
        defer { close(fd) }
        let errors = Harness.temporaryPath("primary.err")
        defer { try? FileManager.default.removeItem(atPath: errors) }
        let primary = try Self.start(["run", Harness.guest("seq.elf"), "--ft-primary", "unix:" + socket], output: fd, errors: errors)
        let backup = try swiftvmm(["run", Harness.guest("ticks.elf"), "--ft-backup", "unix:" + socket], timeout: 60)
        #expect(backup.status == 88 && backup.stderr.contains("is not the image the primary runs"), "\(backup)")
        // The primary lost its backup at once and runs on alone.
        let primaryErrors = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
        #expect(Self.wait(primary, seconds: 60) == 1, "\(primaryErrors)")
        let both = try swiftvmm(["run", Harness.guest("seq.elf"), "--ft-primary", "unix:" + socket, "--record", "/dev/null"])
        #expect(both.status == 64 && both.stderr.contains("exclude each other"), "\(both)")
    }
}
