import API
import CommandLineParsing
import Glibc
import Debugger
import Host
import VMM

/// `swiftvmm run`: boots a VM and streams its serial output, optionally serving gdb or the API.
struct Run {
    static let spec = CommandSpec(
        name: "run",
        abstract: "Boot IMAGE (a flat binary, an ELF64 executable or a multiboot kernel) and stream its serial output.",
        discussion: """
        The exit status tells how the guest ended: 0 all vCPUs halted; odd values come from the \
        debug-exit port 0xf4 ((V << 1) | 1); 64 bad flags; 66 bad image; 68 KVM unavailable; \
        70 VMM failure; 72 stopped (gdb kill); 80 triple fault; 82 KVM internal error; 84 failed VM entry; \
        86 unhandled exit; 128+N stopped by signal N (Ctrl-A x in a terminal counts as SIGINT).
        """,
        options: VMOptions.options + [
            OptionSpec("gdb", valueName: "endpoint", help: "Wait for gdb before the first instruction: HOST:PORT (host defaults to 127.0.0.1), :PORT, or unix:PATH."),
            apiSocketOption,
            OptionSpec("id", help: "The instance id the API's GET / reports (default: swiftvmm-PID)."),
            OptionSpec("restore", valueName: "state-file", help: "Restore the snapshot with this state file instead of booting IMAGE (with --memory-file; docs/snapshot.md)."),
            OptionSpec("memory-file", valueName: "path", help: "The snapshot's memory file (with --restore), mapped copy-on-write and read as the guest touches it."),
            .flag("memory-eager", help: "With --restore: read all of the memory file into RAM before the guest runs."),
            .flag("paused", help: "With --restore: start paused (resume through the API: PATCH /vm)."),
            OptionSpec("incoming", valueName: "endpoint", help: "Receive a live migration instead of booting: unix:PATH, tcp:HOST:PORT or :PORT (one migration; docs/migration.md)."),
            .flag("deterministic", help: "One vCPU, interrupts from a Swift 8259 pair injected at exits, PIT, RTC and balloon on a virtual clock that moves with the exit count; no kvmclock or steal time (docs/replay.md)."),
            OptionSpec("record", valueName: "log", help: "Record the run (implies --deterministic): every exit and every input from outside, for swiftvmm replay LOG."),
            OptionSpec("exit-nanoseconds", valueName: "ns", help: "With --deterministic: how far the virtual clock moves per exit (1-1000000, default 1000)."),
            OptionSpec("ft-primary", valueName: "endpoint", help: "Fault tolerance (implies --deterministic): wait for a backup on unix:PATH or HOST:PORT, stream it the log, and release serial output only once the backup has the log up to it."),
            OptionSpec("ft-backup", valueName: "endpoint", help: "Fault tolerance: connect to the primary at unix:PATH or HOST:PORT, replay its stream, and take over (output, input) when it dies."),
        ],
        positionals: [VMOptions.image],
        terminated: VMOptions.kernelArguments
    )

    let vm: VMOptions
    let gdb: SocketEndpoint?
    let apiSocket: String?
    let id: String
    let restore: SnapshotSource?
    let incoming: SocketEndpoint?
    let startPaused: Bool

    /// What a snapshot decides; the restoring command line may not say otherwise.
    static let shapeOptions = ["kernel", "initrd", "memory", "cpus", "entry", "format", "load-address", "cmdline", "module",
                               "test-devices", "irqchip", "pit", "balloon", "balloon-target", "balloon-stats-interval", "gdb", "on-reboot", "acpi", "cpuid-vendor"]

    init(_ arguments: ParsedArguments) throws(UsageError) {
        if let text = arguments.value("incoming") {
            guard arguments.value("restore") == nil else { throw arguments.error("--incoming and --restore exclude each other") }
            do { incoming = try SocketEndpoint(parsing: text.hasPrefix("tcp:") ? String(text.dropFirst(4)) : text) } catch {
                throw arguments.error("--incoming: \(error)")
            }
            if let given = Self.shapeOptions.first(where: { arguments.flag($0) || arguments.value($0) != nil }) {
                throw arguments.error("--\(given) cannot be given with --incoming: the source's machine decides it")
            }
            guard arguments.positionals.isEmpty, arguments.terminated.isEmpty else { throw arguments.error("--incoming boots no IMAGE and takes no kernel arguments") }
        } else {
            incoming = nil
        }
        if let state = arguments.value("restore") {
            guard let memory = arguments.value("memory-file") else { throw arguments.error("--restore needs --memory-file PATH") }
            if let given = Self.shapeOptions.first(where: { arguments.flag($0) || arguments.value($0) != nil }) {
                throw arguments.error("--\(given) cannot be given with --restore: the snapshot decides it")
            }
            guard arguments.positionals.isEmpty, arguments.terminated.isEmpty else { throw arguments.error("--restore boots no IMAGE and takes no kernel arguments") }
            restore = SnapshotSource(statePath: state, memoryPath: memory, eager: arguments.flag("memory-eager"))
        } else {
            guard arguments.value("memory-file") == nil, !arguments.flag("memory-eager"), !arguments.flag("paused") else {
                throw arguments.error("--memory-file, --memory-eager and --paused go with --restore")
            }
            restore = nil
        }
        startPaused = arguments.flag("paused")
        var vm = try VMOptions(arguments, imageRequired: restore == nil && incoming == nil)
        let record = arguments.value("record")
        let ftPrimary = try arguments.endpoint("ft-primary"), ftBackup = try arguments.endpoint("ft-backup")
        if arguments.flag("deterministic") || record != nil || arguments.value("exit-nanoseconds") != nil || ftPrimary != nil || ftBackup != nil {
            guard restore == nil, incoming == nil, arguments.value("gdb") == nil else {
                throw arguments.error("--deterministic, --record and fault tolerance boot IMAGE themselves: not with --restore, --incoming or --gdb")
            }
            vm.config.ftPrimary = ftPrimary
            vm.config.ftBackup = ftBackup
            if let record, record.isEmpty { throw arguments.error("--record needs a file name") }
            guard vm.onReboot != .restart else { throw arguments.error("--on-reboot restart would boot a second machine into the same log: not in deterministic mode") }
            vm.config.deterministic = true
            vm.config.recordPath = record
            if let nanoseconds = try arguments.value("exit-nanoseconds", expecting: "a number of nanoseconds", { UInt64($0) }) {
                vm.config.nanosecondsPerExit = nanoseconds
            }
        }
        self.vm = vm
        gdb = try arguments.endpoint("gdb")
        apiSocket = arguments.value("api-sock")
        id = arguments.value("id") ?? "swiftvmm-\(getpid())"
    }

    func run() -> Never {
        let machine = incoming.map { vm.receiveMigration(on: $0) } ?? restore.map { vm.restoreMachine($0, paused: startPaused) }
            ?? vm.config.ftBackup.map { vm.buildBackup(of: $0) } ?? vm.buildMachine(debug: gdb != nil)
        var session: VMSession?
        var api: APIServer?
        if let apiSocket {
            let running = VMSession(instanceID: id, running: machine, config: machine.config)
            do { api = try APIServer(path: apiSocket, router: APIRouter(session: running)) } catch { fail(error.description, code: error.exitCode) }
            session = running
        }
        if let gdb {
            let outcome: RunOutcome
            do {
                outcome = try GDBServer.serve(machine: machine, endpoint: gdb, imagePath: vm.image)
            } catch {
                api?.shutdown()
                fail(error.description, code: error.exitCode)
            }
            api?.shutdown()
            finish(outcome)
        }
        var outcome = machine.run()
        // A guest reset boots the same configuration again when asked to.
        while outcome == .reboot && vm.onReboot == .restart {
            // A signal that arrived while the reset was ending the run still ends the process.
            let signal = Machine.terminationSignal.load(ordering: .acquiring)
            if signal != 0 { outcome = .signal(signal); break }
            let next = vm.buildMachine(debug: false)
            session?.replaceRunning(next)
            outcome = next.run()
        }
        // The client that asked for the migration learns that it completed before the API goes.
        if outcome == .migrated, api != nil { machine.awaitMigrationReport(seconds: 5) }
        api?.shutdown()
        if let verdict = machine.replayVerdict {
            if vm.config.ftBackup != nil {
                // A backup whose primary ran to the end ends with it; one that took over reports nothing more.
                if case .diverged(let line) = verdict { fail(line, code: ExitCode.replayDiverged) }
                if case .badLog(let line) = verdict { fail(line, code: ExitCode.badReplayLog) }
                if case .identical(let end) = verdict {
                    writeStandardError("swiftvmm: ft: the primary's guest ended (\(end.outcome)); the backup ends with it\n")
                    exit(end.status)
                }
            } else {
                ReplayCommand.report(verdict, log: vm.config.recordPath ?? vm.config.ftPrimary.map { "the backup at \($0)" })
            }
        }
        finish(outcome)
    }
}

extension ParsedArguments {
    /// `--NAME HOST:PORT | :PORT | tcp:HOST:PORT | unix:PATH`, checked while parsing.
    func endpoint(_ name: String) throws(UsageError) -> SocketEndpoint? {
        guard let text = value(name) else { return nil }
        do { return try SocketEndpoint(parsing: text.hasPrefix("tcp:") ? String(text.dropFirst(4)) : text) } catch { throw self.error("--\(name): \(error)") }
    }
}
