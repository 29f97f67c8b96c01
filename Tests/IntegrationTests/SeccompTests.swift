@testable import Boot
import Foundation
import Glibc
import Testing

/// Every thread of a running VMM is under a seccomp filter (docs/security.md), and
/// `--no-seccomp` runs them all without one.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct SeccompTests {
    /// Starts the echo guest (it waits for input) with the API and 2 vCPUs, and returns
    /// each thread's name and seccomp mode once the guest is ready.
    func threadModes(_ extra: [String]) throws -> [(name: String, mode: String)] {
        let apiSocket = Harness.temporaryPath("seccomp-api.sock")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["run", Harness.guest("echo.elf"), "--cpus", "2", "--balloon", "--api-sock", apiSocket] + extra
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        var seen = Data()
        let deadline = Date().addingTimeInterval(30)
        while !String(decoding: seen, as: UTF8.self).contains("echo: ready") && Date() < deadline && process.isRunning {
            seen += output.fileHandleForReading.availableData
        }
        #expect(String(decoding: seen, as: UTF8.self).contains("echo: ready"), "\(String(decoding: seen, as: UTF8.self))")
        // API requests have the event loop and the worker serve them (every endpoint `swiftvmm
        // control memory` and `stats` call).
        let control = try swiftvmm(["control", apiSocket, "stats"])
        #expect(control.status == 0 && control.stdout.contains("memory: peak_rss_kib="), "\(control)")
        #expect(RawHTTPClient(path: apiSocket).request("GET", "/")?.status == 200)
        let tasks = "/proc/\(process.processIdentifier)/task"
        return try FileManager.default.contentsOfDirectory(atPath: tasks).compactMap { tid in
            guard let comm = try? String(contentsOfFile: "\(tasks)/\(tid)/comm", encoding: .utf8),
                  let status = try? String(contentsOfFile: "\(tasks)/\(tid)/status", encoding: .utf8) else { return nil }
            let mode = status.split(separator: "\n").first { $0.hasPrefix("Seccomp:") }?.split(separator: "\t").last ?? "?"
            return (comm.trimmingCharacters(in: .whitespacesAndNewlines), String(mode))
        }
    }

    @Test func everyThreadRunsUnderItsFilter() throws {
        requireGuests("echo.elf")
        let threads = try threadModes([])
        let names = Set(threads.map(\.name))
        for expected in ["vcpu0", "vcpu1", "timers", "serial-out", "console-in", "signals", "api-worker"] {
            #expect(names.contains(expected), "no \(expected) thread among \(names.sorted())")
        }
        #expect(names.contains { $0.hasPrefix("NIO-ELT-") }, "no API event loop thread among \(names.sorted())")
        for thread in threads {
            #expect(thread.mode == "2", "\(thread.name) runs with seccomp mode \(thread.mode), not 2 (filter)")
        }
    }

    @Test func noSeccompRunsEveryThreadUnfiltered() throws {
        requireGuests("echo.elf")
        let threads = try threadModes(["--no-seccomp"])
        #expect(threads.count >= 6)
        for thread in threads { #expect(thread.mode == "0", "\(thread.name): seccomp mode \(thread.mode)") }
    }
}
