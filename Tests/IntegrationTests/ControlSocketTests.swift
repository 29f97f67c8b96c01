@testable import Control
import Foundation
import Host
import Testing

/// `swiftvmm control`: the CLI client of the HTTP API drives a running guest's balloon, reads its
/// counters, pins, pauses and stops it, as key=value lines or the API's JSON.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct ControlSocketTests {
    @Test func aClientSetsTheBalloonReadsCountersAndStopsTheVM() throws {
        requireGuests("memhog.elf")
        let socket = Harness.temporaryPath("control.sock")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["run", Harness.guest("memhog.elf"), "--memory", "128M", "--balloon", "--balloon-stats-interval", "0.2",
                             "--api-sock", socket, "--cmdline", "phases=touch:64M,free:64M,serve"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        func ask(_ request: String) -> ControlClient.Reply? { try? ControlClient.send(request, to: socket) }
        func waitFor(_ what: String, _ condition: () -> Bool) -> Bool {
            for _ in 0..<1500 { if condition() { return true }; usleep(20_000) }
            Issue.record("timed out waiting for \(what)")
            return false
        }
        // The driver is bound and the guest's statistics (Firecracker's names) arrive.
        guard waitFor("the driver", { ask("balloon")?.text.contains("driver_ready=1") == true }) else { return }
        #expect(waitFor("statistics", { ask("balloon")?.text.contains("balloon stats: ") == true }))
        #expect(ask("balloon")?.text.contains("stats_polling_interval_s=1") == true, "a sub-second interval is 1 s, not 0 (off)")

        // The CLI client: one request, the reply on stdout, status 0; a refused one is status 1.
        let stats = try swiftvmm(["control", socket, "stats"])
        #expect(stats.status == 0 && stats.stdout.contains("vcpu0: exits=") && stats.stdout.contains("memory: peak_rss_kib=")
                && stats.stdout.contains("balloon: target_kib=0 "), "\(stats)")
        let bad = try swiftvmm(["control", "unix:" + socket, "balloon", "lots"])
        #expect(bad.status == 1 && bad.stderr == "swiftvmm: control: 'lots' is not a size (bytes, K, M or G)\n", "\(bad)")
        let unknown = try swiftvmm(["control", socket, "reboot", "now"])
        #expect(unknown.status == 1 && unknown.stderr.contains("unknown request 'reboot'"), "\(unknown)")
        // The API's own refusal comes through as the reason.
        #expect(ask("balloon 1G")?.error == "amount_mib must be 0 to the guest's 128 MiB")
        #expect(ask("balloon 1536K")?.error?.contains("whole number of MiB") == true)

        // The balloon follows the target set through the API; pause and resume say the new state.
        let set = try swiftvmm(["control", socket, "balloon", "32M"])
        #expect(set.status == 0 && set.stdout == "balloon: target_kib=32768\n", "\(set)")
        #expect(waitFor("inflation", { ask("balloon")?.text.contains("actual_kib=32768 ") == true }))
        #expect(ask("pause")?.text == "state=Paused" && ask("info")?.text.contains("state=Paused") == true)
        #expect(ask("resume")?.text == "state=Running")
        #expect(ask("memory")?.text.hasPrefix("memory: peak_rss_kib=") == true)

        // --json prints the API's replies; options may follow the socket.
        let json = try swiftvmm(["control", socket, "--json", "memory"])
        let memory = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(json.status == 0 && memory?["guest_memory_mib"] as? Int == 128, "\(json)")
        let whole = try swiftvmm(["control", "--json", socket, "stats"])
        let parsed = try JSONSerialization.jsonObject(with: Data(whole.stdout.utf8)) as? [String: Any]
        #expect(Set(parsed?.keys.map { $0 } ?? []) == ["vcpus", "memory", "balloon"], "\(whole)")

        // vCPU 0 moves to the host CPU it is pinned to.
        let pinned = try swiftvmm(["control", socket, "pin", "0", "0"])
        #expect(pinned.status == 0 && pinned.stdout == "vcpu0: affinity=0\n", "\(pinned)")
        #expect(ask("vcpus")?.text.contains("affinity=0 ") == true)
        #expect(ask("pin 0 0-100000")?.error?.contains("not a list of host CPUs") == true)
        #expect(ask("pin 9 0")?.error?.contains("no vCPU 9") == true)
        #expect(ask("help")?.text.contains("balloon SIZE") == true)

        // stop ends the run with status 72 and removes the socket.
        #expect(ask("stop")?.error == nil)
        for _ in 0..<500 where process.isRunning { usleep(20_000) }
        #expect(!process.isRunning && process.terminationStatus == 72)
        #expect(!FileManager.default.fileExists(atPath: socket))
    }

    @Test func aClientWithoutAServerGetsOneLine() throws {
        let result = try swiftvmm(["control", "/nonexistent/swiftvmm.sock", "stats"])
        #expect(result.status == 70 && result.stderr == "swiftvmm: control: cannot connect to /nonexistent/swiftvmm.sock: connect: No such file or directory\n",
                "\(result)")
        let usage = try swiftvmm(["run", "x.elf", "--control", "nowhere"])
        #expect(usage.status == 64 && usage.stderr.contains("unknown option '--control'"), "\(usage)")
        let timeout = try swiftvmm(["control", "--timeout", "0", "/tmp/x.sock", "stats"])
        #expect(timeout.status == 64 && timeout.stderr.contains("--timeout"), "\(timeout)")
    }

    /// A socket whose server accepts and never answers: the client gives up after its timeout.
    @Test func aSilentServerIsATimeoutNotAHang() throws {
        let path = Harness.temporaryPath("silent.sock")
        let listener = try SocketEndpoint.unix(path: path).listen(for: "a silent server")
        defer { close(listener); unlink(path) }
        let result = try swiftvmm(["control", "--timeout", "1", path, "stats"])
        #expect(result.status == 70 && result.stderr.contains("no reply from \(path) within 1 s"), "\(result)")
    }
}
