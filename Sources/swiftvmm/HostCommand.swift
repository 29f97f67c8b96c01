import API
import CommandLineParsing
import Glibc
import Host
import HostMode
import Logging
import VMM

/// `swiftvmm host`: the VMs of a host config in one process, with placement and memory moves.
struct HostCommand {
    static let spec = CommandSpec(
        name: "host",
        abstract: "Run the VMs of a JSON config in this process, placing vCPUs and moving memory between them.",
        discussion: """
        Every period the controller prints each pCPU's usage and VMs, then each VM's memory \
        (docs/host.md describes the config). Exit status: 0 when no VM failed, 74 when one did; 64, 66, \
        68, 70 as for run.
        """,
        options: [
            OptionSpec("duration", valueName: "seconds", help: "Stop every VM after this many seconds (default: run until they end or a signal)."),
            OptionSpec("log-file", valueName: "path", help: "Write one JSON line per period to this file."),
            OptionSpec("plot", valueName: "path", help: "Render per-pCPU usage and per-VM memory over time to this PNG (needs gnuplot)."),
            .flag("quiet", help: "Do not print the per-period report."),
            OptionSpec("api-sock", valueName: "path", help: "Serve the host's VMs, placement and memory over HTTP on this Unix socket (docs/api.md)."),
            noSeccompOption,
            logLevelOption,
        ],
        positionals: [PositionalSpec("config", help: "The host config (JSON).")]
    )

    let config: String
    let duration: Double?
    let logFile: String?
    let plot: String?
    let quiet: Bool
    let noSeccomp: Bool
    let logLevel: Logger.Level
    let apiSocket: String?

    init(_ arguments: ParsedArguments) throws(UsageError) {
        config = arguments.positionals[0]
        duration = try arguments.value("duration", expecting: "a number of seconds", { Double($0) })
        if let duration, !(duration > 0 && duration <= 31_536_000) {
            throw arguments.error("--duration must be a number of seconds from above 0 to 31536000 (a year)")
        }
        logFile = arguments.value("log-file")
        plot = arguments.value("plot")
        quiet = arguments.flag("quiet")
        noSeccomp = arguments.flag("no-seccomp")
        logLevel = try arguments.logLevel
        apiSocket = arguments.value("api-sock")
    }

    func run() -> Never {
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
        var api: APIServer?
        if let apiSocket {
            do { api = try APIServer(path: apiSocket, router: HostAPIRouter(runner: runner, instanceID: "swiftvmm-host-\(getpid())")) } catch {
                fail(error.description, code: error.exitCode)
            }
        }
        let quiet = self.quiet
        var logWriter: (@Sendable (String) -> Void)?
        if let output = log {
            logWriter = { line in output.write(text: line + "\n") }
        }
        let outcome = runner.run(duration: duration, keepRecords: plot != nil, report: { lines in if !quiet { print(lines) } }, log: logWriter)
        api?.shutdown()
        if let plot {
            do { try HostPlot.render(outcome.records, to: plot) } catch { writeStandardError("swiftvmm: \(error)\n") }
        }
        for name in outcome.failedVMs {
            writeStandardError("swiftvmm: VM \(name) failed: \(outcome.outcomes[name].map { "\($0)" } ?? "?")\n")
        }
        exit(outcome.failedVMs.isEmpty ? 0 : VMM.ExitCode.vmFailed)
    }
}
