import ArgumentParser
import Debugging
import Glibc
import Host
import Control
import Debugger
import HostMode
import Logging
import Sandbox
import Synchronization
import VMM

struct HostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host",
        abstract: "Run the VMs of a JSON config in this process, placing vCPUs and moving memory between them.",
        discussion: """
        Every period the controller prints each pCPU's usage and VMs, then each VM's memory \
        (docs/host.md describes the config). Exit status: 0 when no VM failed, 74 when one did; 64, 66, \
        68, 70 as for run.
        """
    )

    @Argument(help: "The host config (JSON).")
    var config: String

    @Option(name: .customLong("duration"), help: "Stop every VM after this many seconds (default: run until they end or a signal).")
    var duration: Double?

    @Option(name: .customLong("log-file"), help: "Write one JSON line per period to this file.")
    var logFile: String?

    @Option(name: .customLong("plot"), help: "Render per-pCPU usage and per-VM memory over time to this PNG (needs gnuplot).")
    var plot: String?

    @Flag(name: .customLong("quiet"), help: "Do not print the per-period report.")
    var quiet = false

    @Flag(name: .customLong("no-seccomp"), help: "Run every thread without its seccomp filter (for debugging the VMM; docs/security.md).")
    var noSeccomp = false

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = Logger.Level.warning

    func validate() throws {
        if let duration, !(duration > 0 && duration <= 31_536_000) { throw ValidationError("--duration must be a number of seconds from above 0 to 31536000 (a year)") }
    }

    func run() throws {
        bootstrapLogging(level: logLevel)
        startSandbox(disabled: noSeccomp)
        let runner: HostRunner
        var log: FileDescriptorOutput?
        do {
            let hostConfig = try HostConfig.load(path: config)
            runner = try HostRunner(config: hostConfig, logger: Logger(label: "swiftvmm"))
            if let logFile { log = try FileDescriptorOutput(path: logFile) }
        } catch {
            fail(error.description, code: error.exitCode)
        }
        let quiet = self.quiet
        var logWriter: (@Sendable (String) -> Void)?
        if let output = log {
            logWriter = { line in output.write(text: line + "\n") }
        }
        let outcome = runner.run(duration: duration, keepRecords: plot != nil, report: { lines in if !quiet { print(lines) } }, log: logWriter)
        if let plot {
            do { try HostPlot.render(outcome.records, to: plot) } catch { writeStandardError("swiftvmm: \(error)\n") }
        }
        for name in outcome.failedVMs {
            writeStandardError("swiftvmm: VM \(name) failed: \(outcome.outcomes[name].map { "\($0)" } ?? "?")\n")
        }
        throw ArgumentParser.ExitCode(outcome.failedVMs.isEmpty ? 0 : VMM.ExitCode.vmFailed)
    }
}
