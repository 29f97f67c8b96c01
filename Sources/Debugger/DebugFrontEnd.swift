import VMM
import Host
import Glibc
import Loaders
import Sandbox

/// Process-level set-up shared by the debugger prompt and the gdb stub: symbols from the image,
/// the session, and signals (SIGINT interrupts the guest instead of ending it; SIGTERM and SIGHUP
/// stop the VM).
public enum DebugFrontEnd {
    /// Runs the prompt over `readLine` until quit or end of input; returns how the VM ended.
    public static func run(machine: Machine, imagePath: String, interactive: Bool,
                           readLine: () -> String?) throws(VMMError) -> RunOutcome {
        let session = try start(machine: machine, imagePath: imagePath)
        let debugger = DebugPrompt(session: session) { writeAll($0, to: .standardOutput) }
        return debugger.run(prompt: "(swiftvmm) ", echo: !interactive, readLine: readLine)
    }

    /// Loads the image's symbols, takes over the termination signals and starts the VM (parked).
    static func start(machine: Machine, imagePath: String) throws(VMMError) -> DebugSession {
        let session = try DebugSession(machine: machine)
        try VMMError.host { () throws(HostError) in
            try SignalWaiter { [session] received in
                guard received != SIGINT else { session.interrupt(); return .keepWaiting }
                session.kill()
                return .stop
            }.detach() // ends with the first SIGTERM or SIGHUP, or with the process
        }
        try session.start()
        // The VM's threads have started: this thread now only serves the user or gdb.
        do { try Seccomp.enter(.api) } catch { session.kill(); _ = session.finish(); throw .debugger(error.description) }
        return session
    }
}
