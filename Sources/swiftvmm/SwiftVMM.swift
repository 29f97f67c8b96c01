import CommandLineParsing
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

/// Entry point. Errors become one line on stderr and a documented exit status (README: exit codes).
@main
struct SwiftVMM {
    static let spec = CommandSpec(
        name: "swiftvmm",
        abstract: "A small KVM hypervisor: boots test kernels and shows what they do.",
        subcommands: [Run.spec, Debug.spec, HostCommand.spec, ControlClientCommand.spec, Serve.spec, SnapshotCommand.spec, MigrateCommand.spec, ReplayCommand.spec],
        version: VMM.version
    )

    /// Parses and runs; a bad command line is one line on stderr and status 64, not a usage dump.
    static func main() {
        // A reader or client that goes away (a closed pipe, a gdb or control client) is an error
        // on that write, never the end of the VMM.
        signal(SIGPIPE, SIG_IGN)
        do {
            switch try ArgumentScanner.parse(Array(CommandLine.arguments.dropFirst()), root: spec) {
            case .help(_, let text):
                print(text, terminator: "")
                exit(0)
            case .version(let version):
                print(version)
                exit(0)
            case .command(let arguments):
                switch arguments.path.dropFirst().first {
                case Run.spec.name: try Run(arguments).run()
                case Debug.spec.name: try Debug(arguments).run()
                case HostCommand.spec.name: try HostCommand(arguments).run()
                case Serve.spec.name: try Serve(arguments).run()
                case SnapshotCommand.spec.name: try SnapshotCommand(arguments).run()
                case MigrateCommand.spec.name: try MigrateCommand(arguments).run()
                case ReplayCommand.spec.name: try ReplayCommand(arguments).run()
                default: try ControlClientCommand(arguments).run()
                }
            }
        } catch {
            fail(error.description, code: VMM.ExitCode.usage)
        }
    }
}

/// Turns the per-thread seccomp filters on (docs/security.md) before the first VMM thread starts,
/// unless `--no-seccomp` or SWIFTVMM_NO_SECCOMP is set. Loads the time zone first, and names it in TZ when unset: glibc
/// otherwise looks at /etc/localtime again (stat, open) for a log line's timestamp, from
/// threads whose filters allow neither.
func startSandbox(disabled: Bool) {
    if getenv("TZ") == nil { setenv("TZ", ":/etc/localtime", 0) }
    tzset()
    // Sanitizer runtimes (make sanitize) make calls of their own no allow-list has.
    guard !disabled, getenv("SWIFTVMM_NO_SECCOMP") == nil else { return }
    do { try Seccomp.enable() } catch { fail("\(error) (--no-seccomp runs without it)", code: VMM.ExitCode.vmmFailure) }
}

/// Prints what a guest failure or VMM failure was, then exits with the outcome's status.
func finish(_ outcome: RunOutcome) -> Never {
    switch outcome {
    case .guestFailure(let kind, let vcpu, let detail, let registers):
        writeStandardError("swiftvmm: guest stopped: \(kind.rawValue) on vcpu\(vcpu): \(detail)\n\(registers)\n")
    case .vmmFailure(let message):
        writeStandardError("swiftvmm: \(message)\n")
    case .signal(let number):
        // Statuses above 128 can also come from the guest's debug-exit port (V = 0x47 gives 143,
        // like SIGTERM): a signal always says so on stderr, the debug-exit port never does.
        writeStandardError("swiftvmm: stopped by signal \(number) (\(String(cString: strsignal(number))))\n")
    case .migrated:
        writeStandardError("swiftvmm: the VM migrated; it runs on at the destination\n")
    case .halted, .poweredOff, .reboot, .debugExit, .stopped:
        break
    }
    exit(outcome.exitCode)
}

/// One line from `file` without its newline; nil at end of input. getline allocates the buffer
/// (NUL-terminated, freed here); `file` is a stdio stream the caller opened and keeps open.
func readLine(from file: UnsafeMutablePointer<FILE>?) -> String? {
    var buffer: UnsafeMutablePointer<CChar>?
    var capacity = 0
    defer { free(buffer) }
    let length = getline(&buffer, &capacity, file)
    guard length >= 0, let buffer else { return nil }
    var line = String(cString: buffer)
    while line.hasSuffix("\n") || line.hasSuffix("\r") { line.removeLast() }
    return line
}

/// Sends swift-log output to stderr at `level` and above (the guest's serial output is not logging).
/// Only the first call counts: swift-log allows one bootstrap per process, and a restarted VM
/// (`--on-reboot restart`) builds its machine again.
func bootstrapLogging(level: Logger.Level) {
    guard !loggingBootstrapped else { return }
    loggingBootstrapped = true
    // Every logger reads its level and destination from LogControl (the API's PUT /logger changes them).
    LogControl.shared.setLevel(level)
    LoggingSystem.bootstrap { label in ControlledLogHandler(label: label) }
}

/// Set by the main thread before any other thread exists.
nonisolated(unsafe) var loggingBootstrapped = false

/// Prints "swiftvmm: MESSAGE" and exits with `code`.
func fail(_ message: String, code: Int32) -> Never {
    writeStandardError("swiftvmm: \(message)\n")
    exit(code)
}
