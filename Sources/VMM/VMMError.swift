import Host
import Host
import KVM
import Loaders
import VMMCore

/// Everything that can stop a VM from being built, each case carrying what failed.
public enum VMMError: Error, CustomStringConvertible {
    case invalidConfig(String)
    case imageUnreadable(path: String, reason: String)
    case image(path: String, LoaderError)
    /// A disk image (`--disk`) cannot be opened or is not usable as a disk.
    case disk(String)
    case kvmUnavailable(KVMOpenError)
    case kvm(KVMError)
    case memory(GuestMemoryError)
    case bus(BusError)
    case serialOutput(path: String, reason: String)
    case traceOutput(path: String, reason: String)
    /// Another file the VMM writes (a log) cannot be opened.
    case outputPath(path: String, reason: String)
    case debugger(String)
    /// A listening or connecting socket (gdb stub, API socket) failed.
    case socket(String)
    /// A host call (a thread, a signal handler, an affinity) failed, or a host resource the user
    /// named is unusable.
    case host(HostError)
    /// A snapshot could not be read or restored.
    case snapshot(SnapshotError)
    /// An incoming migration failed (nothing was started).
    case migration(MigrationError)
    /// A record/replay log cannot be read, or does not fit this host's files (status 88).
    case replayLog(String)
    /// Host mode: what went wrong building the VM of this name.
    indirect case inVM(name: String, VMMError)

    public var description: String {
        switch self {
        case .invalidConfig(let why): return why
        case .imageUnreadable(let path, let reason): return "cannot read image \(path): \(reason)"
        case .image(let path, let error): return "\(path): \(error)"
        case .disk(let why): return why
        case .kvmUnavailable(let error): return error.description
        case .kvm(let error): return error.description
        case .memory(let error): return error.description
        case .bus(let error): return error.description
        case .serialOutput(let path, let reason): return "cannot open serial output \(path): \(reason)"
        case .traceOutput(let path, let reason): return "cannot open trace file \(path): \(reason)"
        case .outputPath(let path, let reason): return "cannot open \(path) for writing: \(reason)"
        case .debugger(let why): return why
        case .socket(let why): return why
        case .host(let error): return error.description
        case .snapshot(let error): return error.description
        case .migration(let error): return error.description
        case .replayLog(let why): return why
        case .inVM(let name, let error): return "VM \(name): \(error.description)"
        }
    }

    /// The process exit status for this error (see README: exit codes).
    public var exitCode: Int32 {
        switch self {
        // An output path the user named that cannot be written is the user's input, not a VMM fault.
        case .invalidConfig, .serialOutput, .traceOutput, .outputPath: return ExitCode.usage
        case .imageUnreadable, .image, .disk: return ExitCode.badImage
        case .kvmUnavailable: return ExitCode.kvmUnavailable
        case .kvm, .memory, .bus, .debugger, .socket: return ExitCode.vmmFailure
        case .host(.invalid): return ExitCode.usage
        case .host: return ExitCode.vmmFailure
        case .snapshot(let error): return error.exitCode
        case .migration: return ExitCode.snapshotFailed
        case .replayLog: return ExitCode.badReplayLog
        case .inVM(_, let error): return error.exitCode
        }
    }
}

/// Process exit statuses. The guest's debug-exit port yields odd values, so the VMM's own are even.
public enum ExitCode {
    /// Every vCPU halted with interrupts disabled.
    public static let halted: Int32 = 0
    /// Bad flags or settings.
    public static let usage: Int32 = 64
    /// Missing, unreadable, malformed or oversized image.
    public static let badImage: Int32 = 66
    /// No KVM device, no permission, or a required capability missing.
    public static let kvmUnavailable: Int32 = 68
    /// A host-side failure while building or running the VM.
    public static let vmmFailure: Int32 = 70
    /// Host mode: at least one VM failed.
    public static let vmFailed: Int32 = 74
    /// The host stopped the VM through the control API.
    public static let stopped: Int32 = 72
    /// A snapshot could not be written or restored (a bad state file, an incompatible host), or
    /// a migration failed.
    public static let snapshotFailed: Int32 = 76
    /// The VM moved to another VMM (a live migration completed); the destination runs it now.
    public static let migrated: Int32 = 78
    /// A record/replay log is unreadable, truncated, corrupt, of another version, or recorded
    /// from files that differ from the ones here.
    public static let badReplayLog: Int32 = 88
    /// A replay went another way than its recording (the line names the exit).
    public static let replayDiverged: Int32 = 90
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    public static let tripleFault: Int32 = 80
    /// KVM could not emulate or handle something (KVM_EXIT_INTERNAL_ERROR).
    public static let internalError: Int32 = 82
    /// Hardware refused to enter the guest (KVM_EXIT_FAIL_ENTRY).
    public static let failedEntry: Int32 = 84
    /// An exit the VMM does not handle.
    public static let unhandledExit: Int32 = 86
    /// A thread made a system call its seccomp allow-list forbids (128 + SIGSYS; the line on
    /// stderr names the thread's kind and the call). Set by the SIGSYS reporter in CHost.
    public static let seccompViolation: Int32 = 159
    /// Stopped by SIGINT/SIGTERM/SIGHUP or the Ctrl-A x escape: 128 + signal number.
    public static func signal(_ number: Int32) -> Int32 { 128 + number }
}

extension VMMError {
    /// Runs a host call, its failure becoming a VMMError (a socket's as `.socket`, as before).
    public static func host<Result>(_ body: () throws(HostError) -> Result) throws(VMMError) -> Result {
        do { return try body() } catch {
            if case .socket(let why) = error { throw .socket(why) }
            if case .invalid(let why) = error { throw .invalidConfig(why) }
            throw .host(error)
        }
    }
}
