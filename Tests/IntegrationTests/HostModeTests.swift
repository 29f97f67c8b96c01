@testable import Boot
import Foundation
import Glibc
import Testing

@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct HostModeTests {
    func writeConfig(_ object: Any) throws -> String {
        let path = Harness.temporaryPath("host.json")
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        return path
    }

    func twoVMs(_ extra: [String: Any] = [:]) -> [String: Any] {
        var config: [String: Any] = ["period": 0.5, "placement": "load-aware", "vms": [
            ["name": "burn", "image": Harness.guest("cpuburn.elf"), "memory": "32M", "cmdline": "duty=50 report=1000"],
            ["name": "hog", "image": Harness.guest("memhog.elf"), "memory": "256M", "balloon": true, "balloonTarget": "64M",
             "cmdline": "phases=serve"],
        ]]
        config.merge(extra) { $1 }
        return config
    }

    @Test func reportsLogsAndPlotsEachPeriod() throws {
        requireGuests("cpuburn.elf", "memhog.elf")
        let gnuplot = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":")
            .contains { FileManager.default.isExecutableFile(atPath: "\($0)/gnuplot") }
        try #require(gnuplot, "gnuplot is missing: the plot test needs it (tools/setup.sh test installs gnuplot-nox)")
        let config = try writeConfig(twoVMs())
        let log = Harness.temporaryPath("host.jsonl"), plot = Harness.temporaryPath("host.png")
        defer { for path in [config, log, plot, String(plot.dropLast(4)) + ".dat", String(plot.dropLast(4)) + ".gp"] { try? FileManager.default.removeItem(atPath: path) } }
        let result = try swiftvmm(["host", config, "--duration", "3", "--log-file", log, "--plot", plot])
        #expect(result.status == 0, "\(result)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.contains { $0.range(of: #"^0 - usage: \d+\.\d \| mapping \['(burn|hog)'"#, options: .regularExpression) != nil }, "\(result)")
        #expect(lines.contains { $0.range(of: #"^Memory \(VM: hog\) Actual \[\d+\.\d\], Unused: \[\d+\.\d\]$"#, options: .regularExpression) != nil }, "\(result)")
        let records = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(records.count >= 4, "\(records.count) periods logged")
        let first = try #require(try JSONSerialization.jsonObject(with: Data(records[0].utf8)) as? [String: Any])
        #expect(first["pcpus"] != nil && first["vms"] != nil && first["controllerCPUMilliseconds"] != nil)
        let png = try Data(contentsOf: URL(fileURLWithPath: plot))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]), "a PNG was written")
        #expect(png.count > 10_000)
    }

    /// With page sharing, the report line ends in Shared, the log carries the split and Pss, and
    /// the plot gains a third panel.
    @Test func pageSharingShowsInTheReportLogAndPlot() throws {
        requireGuests("cpuburn.elf", "memhog.elf")
        let config = try writeConfig(twoVMs(["pageSharing": true]))
        let log = Harness.temporaryPath("sharing.jsonl"), plot = Harness.temporaryPath("sharing.png")
        let script = String(plot.dropLast(4)) + ".gp"
        defer { for path in [config, log, plot, String(plot.dropLast(4)) + ".dat", script] { try? FileManager.default.removeItem(atPath: path) } }
        let result = try swiftvmm(["host", config, "--duration", "2", "--log-file", log, "--plot", plot])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.split(separator: "\n").contains { $0.range(of: #"^Memory \(VM: hog\) Actual \[\d+\.\d\], Unused: \[\d+\.\d\], Shared: \[\d+\.\d\]$"#, options: .regularExpression) != nil },
                "\(result)")
        #expect(result.stderr.contains("page sharing: guest RAM is mergeable"), "said once at start: \(result.stderr)")
        #expect(result.stderr.components(separatedBy: "page sharing:").count == 2, "once, not per VM: \(result.stderr)")
        let last = try #require(try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").last)
        let record = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        let vms = record["vms"] as? [[String: Any]] ?? []
        #expect(vms.allSatisfy { ($0["sharedMiB"] as? Double ?? -1) >= 0 && ($0["privateMiB"] as? Double ?? 0) > 0 }, "\(vms)")
        #expect(record["pssAnonMiB"] as? Double ?? 0 > 0)
        let gp = try String(contentsOfFile: script, encoding: .utf8)
        #expect(gp.contains("set multiplot layout 3,1") && gp.contains("VM memory: Shared (MiB)"), "\(gp)")
    }

    @Test func sigtermStopsEveryVMCleanly() throws {
        requireGuests("cpuburn.elf", "memhog.elf")
        let config = try writeConfig(twoVMs())
        defer { try? FileManager.default.removeItem(atPath: config) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["host", config, "--quiet"]
        try process.run()
        usleep(1_500_000)
        let sent = Date()
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "status \(process.terminationStatus)")
        #expect(Date().timeIntervalSince(sent) < 5)
    }

    @Test func aFailingVMIsReported() throws {
        requireGuests("triplefault.elf", "cpuburn.elf")
        let config = try writeConfig(["vms": [["name": "bad", "image": Harness.guest("triplefault.elf"), "memory": "16M"],
                                              ["name": "ok", "image": Harness.guest("cpuburn.elf"), "memory": "16M", "cmdline": "seconds=1"]]])
        defer { try? FileManager.default.removeItem(atPath: config) }
        let result = try swiftvmm(["host", config, "--quiet", "--duration", "10"])
        #expect(result.status == 74, "\(result)")
        #expect(result.stderr.contains("VM bad failed: guestFailure(VMM.RunOutcome.GuestFailure.tripleFault"), "\(result)")
    }

    @Test(arguments: [
        ("{", "host config"),
        (#"{"vms": []}"#, "host config lists no VMs"),
        (#"{"vms": [{"name": "a", "image": "x"}]}"#, "missing \"memory\" at vms.[0]"),
        (#"{"placement": "random", "vms": [{"name": "a", "image": "x", "memory": "16M"}]}"#,
         "bad.json: placement 'random' is not none, round-robin or load-aware"),
        (#"{"memoryPolicy": "balloons", "vms": [{"name": "a", "image": "x", "memory": "16M"}]}"#, "memoryPolicy 'balloons' is not none or coordinator"),
        (#"{"placement": 3, "vms": [{"name": "a", "image": "x", "memory": "16M"}]}"#, "at placement"),
        (#"{"vms": [{"name": "a", "image": "x", "memory": "16Q"}]}"#, "'16Q' is not a size"),
        (#"{"vms": [{"name": "a", "image": "x", "memory": "16M"}, {"name": "a", "image": "x", "memory": "16M"}]}"#, "repeated"),
        (#"{"vms": [{"name": "a", "image": "x", "memory": "16M", "affinity": [[7]]}]}"#, "affinity names CPU 7"),
        (#"{"placment": "none", "vms": [{"name": "a", "image": "x", "memory": "16M"}]}"#, "unknown key \"placment\""),
        (#"{"vms": [{"name": "a", "image": "x", "memroy": "16M", "memory": "16M"}]}"#, "unknown key \"memroy\" at vms.[0]"),
        (#"{"coordinator": {"step": "1M", "lowWater": "1M"}, "vms": [{"name": "a", "image": "x", "memory": "16M"}]}"#,
         "unknown key \"lowWater\" at coordinator"),
        (#"{"vms": [{"name": "a'; system('touch /tmp/x'); '", "image": "x", "memory": "16M"}]}"#, "must be 1 to 64 of"),
        (#"{"coordinator": {"lowWatermark": "512M", "highWatermark": "64M"}, "vms": [{"name": "a", "image": "x", "memory": "16M"}]}"#,
         "lowWatermark 512M is above highWatermark 64M"),
        (#"{"statsInterval": -1, "vms": [{"name": "a", "image": "x", "memory": "16M"}]}"#, "statsInterval must be"),
        (#"{"pageSharing": "yes", "vms": [{"name": "a", "image": "x", "memory": "16M"}]}"#, "at pageSharing"),
        (#"{"vms": [{"name": "a", "image": "x", "memory": "16M", "pageShare": true}]}"#, "unknown key \"pageShare\" at vms.[0]"),
    ])
    func badConfigsGetOneLine(json: String, message: String) throws {
        let path = Harness.temporaryPath("bad.json")
        FileManager.default.createFile(atPath: path, contents: Data(json.utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try swiftvmm(["host", path])
        #expect(result.status == 64, "\(result)")
        #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains(message), "\(result)")
    }

    @Test func memoryTheHostDoesNotHaveIsRefused() throws {
        // 200 VMs of 64 GiB each used to be admitted and drove the host out of memory.
        let vms = (0..<200).map { ["name": "vm\($0)", "image": Harness.guest("cpuburn.elf"), "memory": "64G"] }
        let config = try writeConfig(["vms": vms])
        defer { try? FileManager.default.removeItem(atPath: config) }
        let result = try swiftvmm(["host", config, "--duration", "1"])
        #expect(result.status == 64 && result.stderr.contains("the VMs need 12800G of RAM"), "\(result)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result)")
        // With overcommit, RAM less the initial balloons is what must fit.
        let balloons = (0..<2).map { ["name": "vm\($0)", "image": Harness.guest("cpuburn.elf"), "memory": "64G",
                                      "balloon": true, "balloonTarget": "63G", "cmdline": "seconds=1"] as [String: Any] }
        let over = try writeConfig(["vms": balloons, "overcommit": true])
        defer { try? FileManager.default.removeItem(atPath: over) }
        let admitted = try swiftvmm(["host", over, "--quiet", "--duration", "20"])
        #expect(!admitted.stderr.contains("the VMs need"), "\(admitted)")
    }

    @Test func imagePathsAreRelativeToTheConfigFile() throws {
        requireGuests("cpuburn.elf")
        let directory = Harness.temporaryPath("config-dir")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(atPath: Harness.guest("cpuburn.elf"), toPath: directory + "/burn.elf")
        let config = directory + "/host.json"
        try JSONSerialization.data(withJSONObject: ["vms": [["name": "rel", "image": "burn.elf", "memory": "16M",
                                                             "cmdline": "seconds=1", "serial": "file:rel.out"]]])
            .write(to: URL(fileURLWithPath: config))
        let result = try swiftvmm(["host", config, "--quiet", "--duration", "20"]) // run from another directory
        #expect(result.status == 0, "\(result)")
        #expect(FileManager.default.fileExists(atPath: directory + "/rel.out"), "serial file beside the config")
    }

    @Test func aMissingImageNamesTheVM() throws {
        let config = try writeConfig(["vms": [["name": "ghost", "image": "/nonexistent.elf", "memory": "16M"]]])
        defer { try? FileManager.default.removeItem(atPath: config) }
        let result = try swiftvmm(["host", config])
        #expect(result.status == 66 && result.stderr == "swiftvmm: VM ghost: cannot read image /nonexistent.elf: No such file or directory\n",
                "\(result)")
    }
}
