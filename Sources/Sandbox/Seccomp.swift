import CHost
import Glibc
import Synchronization

/// Installs the per-thread seccomp filters. The command line turns filtering on (unless
/// `--no-seccomp`) before it starts any thread; each thread then enters its kind's filter as it
/// starts, and the thread that runs a VM enters `vmm` once its set-up is done.
public enum Seccomp {
    private static let state = Atomic<Bool>(false)

    /// Whether threads that start from now on filter their calls.
    public static var isEnabled: Bool { state.load(ordering: .acquiring) }

    /// Turns filtering on for the threads that start or enter a kind from now on, and installs
    /// the reporter that turns a trapped call into one line and status 159.
    public static func enable() throws(SandboxError) {
        guard chost_install_violation_reporter() == 0 else { throw .install("sigaction(SIGSYS)", errno) }
        state.store(true, ordering: .releasing)
    }

    /// Each kind's program, built once for the process (every thread of a kind installs the same
    /// one; building it per thread cost start-up time).
    private static let programs: [ThreadKind: Result<SeccompProgram, SeccompProgram.BuildError>] =
        Dictionary(uniqueKeysWithValues: ThreadKind.allCases.map { kind in
            (kind, Result { () throws(SeccompProgram.BuildError) in try SeccompProgram(rules: AllowLists.rules(for: kind)) })
        })

    /// The calling thread's kind once it entered one, nil while it runs unfiltered.
    public static var currentKind: ThreadKind? { ThreadKind(rawValue: String(cString: chost_thread_kind())) }

    /// Puts the calling thread under `kind`'s allow-list, when filtering is on and the thread has
    /// no filter yet (a VM thread that builds its next machine on a reboot keeps the one it has).
    public static func enter(_ kind: ThreadKind) throws(SandboxError) {
        guard isEnabled, currentKind == nil else { return }
        let program: SeccompProgram
        do { program = try programs[kind]!.get() } catch { throw .program(kind, error) }
        // Until the filter is in, a violation is the inherited filter's, met while starting.
        chost_set_thread_kind("starting " + kind.rawValue)
        let result = program.instructions.withUnsafeBufferPointer { instructions in
            // The kernel copies the program during the call; the buffer outlives it.
            chost_install_seccomp(instructions.baseAddress, UInt16(instructions.count))
        }
        guard result == 0 else { throw .install("seccomp(\(kind.rawValue))", errno) }
        chost_set_thread_kind(kind.rawValue)
    }

    /// `enter`, for threads that cannot hand an error back: a failure ends the process with a
    /// VMM failure's status (70), since running a thread unfiltered that should not be would be
    /// a silent hole.
    public static func enterOrExit(_ kind: ThreadKind) {
        do { try enter(kind) } catch {
            let line = "swiftvmm: \(error); run with --no-seccomp on a kernel without seccomp\n"
            _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
            _exit(70)
        }
    }
}

public enum SandboxError: Error, CustomStringConvertible {
    case install(String, Int32)
    case program(ThreadKind, SeccompProgram.BuildError)

    public var description: String {
        switch self {
        case .install(let call, let errno): "cannot install the seccomp filter: \(call) failed: \(String(cString: strerror(errno)))"
        case .program(let kind, let error): "the \(kind.rawValue) allow-list is broken: \(error)"
        }
    }
}
