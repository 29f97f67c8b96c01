@testable import Control
@testable import Boot
import Host
import Foundation
import Testing
import VMM

/// `run --control`: a client drives a running guest's balloon, reads its counters, pauses and
/// stops it, through `swiftvmm control` (the CLI client) and ControlClient.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct ControlSocketTests {
    @Test func aClientSetsTheBalloonReadsCountersAndStopsTheVM() throws {
        requireGuests("memhog.elf")
        let socket = Harness.temporaryPath("control.sock")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["run", Harness.guest("memhog.elf"), "--memory", "128M", "--balloon", "--balloon-stats-interval", "0.2",
                             "--control", "unix:" + socket, "--cmdline", "phases=touch:64M,free:64M,serve"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        let endpoint = SocketEndpoint.unix(path: socket)
        func ask(_ request: String) -> ControlClient.Reply? { try? ControlClient.send(request, to: endpoint) }
        func waitFor(_ what: String, _ condition: () -> Bool) -> Bool {
            for _ in 0..<1500 { if condition() { return true }; usleep(20_000) }
            Issue.record("timed out waiting for \(what)")
            return false
        }
        guard waitFor("the driver", { ask("balloon")?.text.contains("driver_ready=1") == true }) else { return }

        // The CLI client: one request, the reply on stdout, status 0; an error reply is status 1.
        let stats = try swiftvmm(["control", "unix:" + socket, "stats"])
        #expect(stats.status == 0 && stats.stdout.contains("vcpu0: exits=") && stats.stdout.contains("memory: peak_rss_kib="), "\(stats)")
        let bad = try swiftvmm(["control", "unix:" + socket, "balloon", "lots"])
        #expect(bad.status == 1 && bad.stderr == "swiftvmm: control: 'lots' is not a size (bytes, K, M or G)\n", "\(bad)")
        let unknown = try swiftvmm(["control", "unix:" + socket, "reboot", "now"])
        #expect(unknown.status == 1 && unknown.stderr.contains("unknown command 'reboot'"), "\(unknown)")
        #expect(ask("balloon 1G")?.error?.contains("more than the guest's") == true)

        // The balloon follows the target set through the socket; pause and resume answer ok.
        let set = try swiftvmm(["control", "unix:" + socket, "balloon", "32M"])
        #expect(set.status == 0 && set.stdout == "balloon: target_kib=32768\n", "\(set)")
        #expect(waitFor("inflation", { ask("balloon")?.text.contains("actual_kib=32768 ") == true }))
        #expect(ask("pause")?.error == nil && ask("resume")?.error == nil)
        #expect(ask("memory")?.text.hasPrefix("memory: peak_rss_kib=") == true)

        // A request longer than the limit is refused and the connection closed; the VMM lives on.
        let flood = try? ControlClient.send(String(repeating: "x", count: 5000), to: endpoint)
        #expect(flood?.error?.contains("longer than") == true)
        #expect(ask("help")?.text.contains("balloon SIZE") == true)

        // stop ends the run with status 72 and removes the socket.
        #expect(ask("stop")?.error == nil)
        for _ in 0..<500 where process.isRunning { usleep(20_000) }
        #expect(!process.isRunning && process.terminationStatus == 72)
        #expect(!FileManager.default.fileExists(atPath: socket))
    }

    @Test func aClientWithoutAServerGetsOneLine() throws {
        let result = try swiftvmm(["control", "unix:/nonexistent/swiftvmm.sock", "stats"])
        #expect(result.status == 70 && result.stderr.hasPrefix("swiftvmm: control: cannot connect to unix:/nonexistent/swiftvmm.sock: connect:")
                && result.stderr.split(separator: "\n").count == 1, "\(result)")
        let usage = try swiftvmm(["run", "x.elf", "--control", "nowhere"])
        #expect(usage.status == 64 && usage.stderr.contains("--control"), "\(usage)")
    }
}
