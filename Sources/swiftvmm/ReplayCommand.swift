import CommandLineParsing
import Glibc
import Host
import Logging
import Replay
import VMM

/// `swiftvmm replay LOG`: rebuilds the machine a `run --record` log describes and runs it
/// again, checking every exit against the log (docs/replay.md).
struct ReplayCommand {
    static let spec = CommandSpec(
        name: "replay",
        abstract: "Replay a log written by run --record: the same serial output, status and final digest, or the exit where it diverged.",
        discussion: """
        The status is the recorded run's when the replay matched it to the end; 88 when the log \
        cannot be read (truncated, corrupt, another version, recorded from another image); 90 when \
        the replay diverged (the line names the exit, what the log expected and what happened).
        """,
        options: [
            OptionSpec("serial", valueName: "target", help: "Where COM1 output goes: stdio (the default), file:PATH or none."),
            .flag("stats", help: "Print exit statistics to stderr at the end."),
            logLevelOption,
            OptionSpec("kvm-device", valueName: "path", help: "The KVM device to open (default /dev/kvm)."),
            noSeccompOption,
        ],
        positionals: [PositionalSpec("log", help: "The log run --record wrote.")]
    )

    let log: String
    let runtime: VMConfig
    let logLevel: Logger.Level
    let noSeccomp: Bool

    init(_ arguments: ParsedArguments) throws(UsageError) {
        guard let log = arguments.positionals.first, !log.isEmpty, arguments.positionals.count == 1 else {
            throw arguments.error("replay: give one LOG")
        }
        self.log = log
        var runtime = VMConfig(imagePath: "")
        runtime.serial = try arguments.value("serial", expecting: "stdio, file:PATH or none", SerialTarget.init(parsing:)) ?? .stdio
        runtime.printStats = arguments.flag("stats")
        runtime.kvmDevice = arguments.value("kvm-device") ?? "/dev/kvm"
        self.runtime = runtime
        logLevel = try arguments.logLevel
        noSeccomp = arguments.flag("no-seccomp")
    }

    func run() -> Never {
        bootstrapLogging(level: logLevel)
        startSandbox(disabled: noSeccomp)
        let machine: Machine
        do { machine = try Machine(replaying: log, runtime: runtime) } catch { fail(error.description, code: error.exitCode) }
        let outcome = machine.run()
        guard let verdict = machine.replayVerdict else { finish(outcome) }
        Self.report(verdict, log: log)
        switch verdict {
        case .identical(let end): exit(end.status)
        case .diverged: exit(ExitCode.replayDiverged)
        case .badLog: exit(ExitCode.badReplayLog)
        case .recorded, .unrecorded: finish(outcome)
        }
    }

    /// One line on stderr: what was recorded, what the replay found.
    static func report(_ verdict: ReplayVerdict, log: String?) {
        func digest(_ end: ReplayEnd) -> String { "digest 0x\(String(end.memoryDigest, radix: 16))/0x\(String(end.registerDigest, radix: 16))" }
        switch verdict {
        case .recorded(let end, let bytes):
            let tenths = end.exits > 0 ? bytes * 10 / end.exits : 0
            let perExit = "\(tenths / 10).\(tenths % 10)"
            let compared = end.atExit ? "" : " (stopped from outside: the replay stops after the same exit; digests not compared)"
            writeStandardError("swiftvmm: recorded \(end.exits) exits to \(log ?? "the log") (\(bytes) bytes, \(perExit) bytes per exit), status \(end.status), \(digest(end))\(compared)\n")
        case .identical(let end):
            let how = end.atExit ? digest(end) : "stopped where the recording was stopped from outside"
            writeStandardError("swiftvmm: replay identical: \(end.exits) exits, status \(end.status), \(how)\n")
        case .diverged(let line), .badLog(let line):
            writeStandardError("swiftvmm: \(line)\n")
        case .unrecorded:
            break
        }
    }
}
