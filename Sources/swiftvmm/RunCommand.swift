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

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot IMAGE (a flat binary, an ELF64 executable or a multiboot kernel) and stream its serial output.",
        discussion: """
        The exit status tells how the guest ended: 0 all vCPUs halted; odd values come from the \
        debug-exit port 0xf4 ((V << 1) | 1); 64 bad flags; 66 bad image; 68 KVM unavailable; \
        70 VMM failure; 72 stopped (gdb kill); 80 triple fault; 82 KVM internal error; 84 failed VM entry; \
        86 unhandled exit; 128+N stopped by signal N (Ctrl-A x in a terminal counts as SIGINT).
        """
    )

    @OptionGroup var vm: VMOptions

    @Option(name: .customLong("gdb"), help: "Wait for gdb before the first instruction: HOST:PORT (host defaults to 127.0.0.1), :PORT, or unix:PATH.")
    var gdb: String?

    @Option(name: .customLong("control"), help: "Serve the control socket (balloon, memory, stats, pause, resume, stop) on unix:PATH, HOST:PORT or :PORT; 'swiftvmm control' talks to it.")
    var control: String?

    func validate() throws {
        if let gdb {
            do { _ = try SocketEndpoint(parsing: gdb) } catch { throw ValidationError("--gdb: \(error)") }
        }
        if let control {
            do { _ = try SocketEndpoint(parsing: control) } catch { throw ValidationError("--control: \(error)") }
        }
    }

    func run() throws {
        let machine = vm.buildMachine(debug: gdb != nil)
        var server: ControlServer?
        if let control, let endpoint = try? SocketEndpoint(parsing: control) {
            do { server = try ControlServer(endpoint: endpoint) } catch { fail(error.description, code: error.exitCode) }
            server?.serve(machine)
        }
        defer { server?.shutdown() }
        if let gdb, let endpoint = try? SocketEndpoint(parsing: gdb) {
            let outcome: RunOutcome
            do {
                outcome = try GDBServer.serve(machine: machine, endpoint: endpoint, imagePath: vm.image)
            } catch {
                fail(error.description, code: error.exitCode)
            }
            try finish(outcome)
        }
        var outcome = machine.run()
        // A guest reset boots the same configuration again when asked to.
        while outcome == .reboot && vm.onReboot == .restart {
            // A signal that arrived while the reset was ending the run still ends the process.
            let signal = Machine.terminationSignal.load(ordering: .acquiring)
            if signal != 0 { outcome = .signal(signal); break }
            let next = vm.buildMachine(debug: false)
            server?.serve(next)
            outcome = next.run()
        }
        server?.shutdown()
        try finish(outcome)
    }
}
