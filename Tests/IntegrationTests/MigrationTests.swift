import Foundation
import Testing

/// Live migration end to end: a `dirty` guest streaming sequence numbers and checksums moves from
/// one VMM process to another (`swiftvmm migrate` to `run --incoming`) while it runs; the source's
/// output and the destination's, joined, must be exactly an uninterrupted run's. Failures leave
/// one side running and the other gone, never both stuck.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct MigrationTests {
    /// A VMM waiting for a migration, its serial output in a file of its own.
    final class Incoming {
        let process = Process()
        let outPath = Harness.temporaryPath("incoming.out"), errPath = Harness.temporaryPath("incoming.err")
        let endpoint: String

        init(_ endpoint: String) throws {
            self.endpoint = endpoint
            for path in [outPath, errPath] { FileManager.default.createFile(atPath: path, contents: nil) }
            process.executableURL = URL(fileURLWithPath: Harness.binary)
            process.arguments = ["run", "--incoming", endpoint]
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
            process.standardInput = FileHandle.nullDevice
            try process.run()
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, !((try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "").contains("waiting for an incoming migration") {
                usleep(10_000)
            }
        }

        var output: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
        var errors: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

        func exitStatus(within seconds: Double = 30) -> Int32? {
            let deadline = Date().addingTimeInterval(seconds)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            return process.isRunning ? nil : process.terminationStatus
        }

        deinit {
            if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
            for path in [outPath, errPath] { try? FileManager.default.removeItem(atPath: path) }
        }
    }

    static func freePort() -> Int { 40_000 + Int(getpid() % 5000) + Int.random(in: 0..<5000) }

    struct Variant: CustomTestStringConvertible, Sendable {
        let name: String
        let tcp: Bool
        let options: [String]
        let guestArguments: [String]
        var testDescription: String { name }
    }

    static let rates = [
        Variant(name: "unix, 4 MiB/s dirtied", tcp: false, options: ["--memory", "256M"], guestArguments: ["steps=3072", "rate=4M"]),
        Variant(name: "tcp, 16 MiB/s dirtied", tcp: true, options: ["--memory", "256M"], guestArguments: ["steps=8192", "rate=16M"]),
        Variant(name: "tcp, 2 vCPUs, 32 MiB/s dirtied, a balloon", tcp: true,
                options: ["--memory", "256M", "--cpus", "2", "--balloon", "--balloon-target", "64M"],
                guestArguments: ["steps=16384", "rate=32M", "wss=24M", "balloon=1"]),
    ]

    @Test(arguments: rates)
    func aMigratedGuestContinuesExactlyWhereItWas(_ variant: Variant) throws {
        requireGuests("dirty.elf")
        let reference = try swiftvmm(["run", Harness.guest("dirty.elf")] + variant.options + ["--"] + variant.guestArguments)
        #expect(reference.status == 1 && reference.stdout.contains("done "), "\(reference)")
        let endpoint = variant.tcp ? "tcp:127.0.0.1:\(Self.freePort())" : "unix:" + Harness.temporaryPath("migration.sock")
        let destination = try Incoming(endpoint)
        let source = try APIProcess(["run", Harness.guest("dirty.elf")] + variant.options + ["--"] + variant.guestArguments)
        guard source.wait("two sequence lines", { source.output.components(separatedBy: "seq=").count > 2 }) else { return }
        // Generous: a debug build on a busy machine copies slower than the guest dirties at times.
        let migrated = try swiftvmm(["migrate", source.socket, endpoint, "--downtime-ms", "300", "--timeout", "30"], timeout: 60)
        #expect(migrated.status == 0 && migrated.stdout.contains("state=completed"), "\(migrated)")
        #expect(migrated.stderr.contains("migrate: state=completed"), "progress is reported on stderr: \(migrated.stderr)")
        #expect(source.exitStatus() == 78, "the source ends as migrated")
        #expect(destination.exitStatus() == 1, "\(destination.errors)")
        #expect(!source.output.contains("done"), "the migration came before the guest finished")
        #expect(source.output + destination.output == reference.stdout,
                "source then destination:\n\(source.output)|\n\(destination.output)\nuninterrupted:\n\(reference.stdout)")
    }

    /// A guest that dirties faster than the link copies never fits the downtime: the source gives
    /// up at the timeout and keeps running, and the destination discards what it got.
    @Test func aMigrationThatCannotConvergeIsAbandonedAndTheSourceRunsOn() throws {
        requireGuests("dirty.elf")
        // Dirtying as fast as it can for far longer than the test: it never stops writing.
        let arguments = ["steps=4000000000", "rate=0", "wss=64M", "every=100000000"]
        let endpoint = "unix:" + Harness.temporaryPath("migration.sock")
        let destination = try Incoming(endpoint)
        let source = try APIProcess(["run", Harness.guest("dirty.elf"), "--memory", "256M", "--"] + arguments)
        guard source.wait("the guest's start", { source.output.contains("stream(s)") }) else { return }
        let migrated = try swiftvmm(["migrate", source.socket, endpoint, "--downtime-ms", "1", "--timeout", "2"], timeout: 60)
        #expect(migrated.status == 1 && migrated.stderr.contains("abandoned"), "\(migrated)")
        #expect(destination.exitStatus() == 76 && destination.errors.contains("gave up"), "\(destination.errors)")
        let info = try swiftvmm(["control", source.socket, "info"])
        #expect(info.stdout.contains("state=Running"), "the source runs on: \(info)")
        let status = try swiftvmm(["control", "--json", source.socket, "info"])
        #expect(status.status == 0)
        _ = try swiftvmm(["control", source.socket, "stop"])
        #expect(source.exitStatus() == 72)
    }

    /// kill -9 one side at a random point: nothing hangs; a source that lost its destination runs
    /// on, a destination that lost its source exits 76 with the reason. Six trials in make test;
    /// MIGRATION_KILL_TRIALS=20 for a longer campaign.
    @Test func killingEitherSideMidCopyLeavesTheOtherSane() throws {
        requireGuests("dirty.elf")
        let arguments = ["steps=4000000000", "rate=0", "wss=48M", "every=100000000"]
        let trials = Int(Harness.environment["MIGRATION_KILL_TRIALS"] ?? "") ?? 6
        for trial in 0..<trials {
            let killSource = trial % 2 == 1
            let endpoint = "unix:" + Harness.temporaryPath("migration.sock")
            let destination = try Incoming(endpoint)
            let source = try APIProcess(["run", Harness.guest("dirty.elf"), "--memory", "256M", "--"] + arguments)
            guard source.wait("the guest's start", { source.output.contains("stream(s)") }) else { return }
            let migrate = Process()
            migrate.executableURL = URL(fileURLWithPath: Harness.binary)
            // A downtime no round reaches: the copy keeps iterating until a side is killed.
            migrate.arguments = ["migrate", source.socket, endpoint, "--downtime-ms", "1", "--timeout", "60"]
            migrate.standardOutput = FileHandle.nullDevice
            migrate.standardError = FileHandle.nullDevice
            try migrate.run()
            usleep(UInt32.random(in: 50_000...600_000))
            kill((killSource ? source.process : destination.process).processIdentifier, SIGKILL)
            if killSource {
                #expect(destination.exitStatus(within: 40) == 76, "trial \(trial): \(destination.errors)")
                #expect(destination.errors.contains("closed the connection") || destination.errors.contains("sent nothing"), "trial \(trial): \(destination.errors)")
            } else {
                migrate.waitUntilExit()
                #expect(migrate.terminationStatus == 1, "trial \(trial): the migration failed")
                let info = try swiftvmm(["control", source.socket, "info"])
                #expect(info.stdout.contains("state=Running"), "trial \(trial): the source runs on: \(info)")
                _ = try swiftvmm(["control", source.socket, "stop"])
                #expect(source.exitStatus() == 72)
            }
            if migrate.isRunning { migrate.terminate() }
            migrate.waitUntilExit()
            if killSource { continue }
        }
    }

    /// The destination treats the stream as hostile: garbage, a lie about the protocol, pages
    /// outside RAM are each refused with one line and status 76; a source is refused by a
    /// destination that says no before anything stops.
    @Test func aHostileStreamIsRefusedAndARefusalStopsNothing() throws {
        requireGuests("dirty.elf")
        let cases: [(String, String)] = [
            ("s.sendall(b'\\x01' + (12).to_bytes(4, 'little') + b'NOTSVMM!\\x01\\x00\\x00\\x00')", "bad magic"),
            ("s.sendall(b'\\x01' + (0xFFFFFFFF).to_bytes(4, 'little'))", "at most"),
            ("s.sendall(b'\\x04' + (16).to_bytes(4, 'little') + bytes(16))", "must begin"),
            ("s.sendall(b'\\x42' + bytes(4))", "unknown message kind"),
        ]
        for (send, expected) in cases {
            let path = Harness.temporaryPath("hostile.sock")
            let destination = try Incoming("unix:" + path)
            let script = "import socket; s = socket.socket(socket.AF_UNIX); s.connect('\(path)'); \(send); s.settimeout(10); s.recv(100)"
            _ = try runProgram("/usr/bin/env", ["python3", "-c", script], timeout: 30)
            #expect(destination.exitStatus() == 76 && destination.errors.contains(expected), "\(expected): \(destination.errors)")
            #expect(destination.output.isEmpty)
        }
        // A destination that refuses: the source is told why and never paused.
        let path = Harness.temporaryPath("refusing.sock")
        let refusing = "import socket, os; l = socket.socket(socket.AF_UNIX); l.bind('\(path)'); l.listen(1); c, _ = l.accept(); c.recv(1 << 20); r = b'not today'; c.sendall(b'\\x03' + len(r).to_bytes(4, 'little') + r); c.recv(1)"
        let peer = Process()
        peer.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        peer.arguments = ["python3", "-c", refusing]
        try peer.run()
        defer { if peer.isRunning { peer.terminate() } }
        let source = try APIProcess(["run", Harness.guest("dirty.elf"), "--", "steps=2048"])
        guard source.wait("the guest's start", { source.output.contains("stream(s)") }) else { return }
        while !FileManager.default.fileExists(atPath: path) { usleep(10_000) }
        let migrated = try swiftvmm(["migrate", source.socket, "unix:" + path])
        #expect(migrated.status == 1 && migrated.stderr.contains("not today"), "\(migrated)")
        #expect(source.exitStatus() == 1 && source.output.contains("done seq=8 "), "the source ran on to its end")
    }
}
