import Boot
import ArgumentParser
import Debugging
import Glibc
import Host
import Logging
import Sandbox
import Synchronization
import VMM

/// Entry point. Errors become one line on stderr and a documented exit status (README: exit codes).
@main
struct SwiftVMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftvmm",
        abstract: "A small KVM hypervisor: boots test kernels and shows what they do.",
        version: VMM.version,
        subcommands: [Run.self, Debug.self, Host.self, Control.self],
        defaultSubcommand: nil
    )

    /// Parses and runs; a bad command line is one line on stderr and status 64, not a usage dump.
    static func main() {
        // A reader or client that goes away (a closed pipe, a gdb or control client) is an error
        // on that write, never the end of the VMM.
        signal(SIGPIPE, SIG_IGN)
        let command: any ParsableCommand
        do {
            // `--trace-exits` may stand alone (trace everything): give it its default value.
            let arguments = CommandLine.arguments.dropFirst().map { $0 == "--trace-exits" ? "--trace-exits=all" : $0 }
            command = try parseAsRoot(Array(arguments))
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) } // --help prints and exits 0
            let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            fail(message + " (see '\(helpCommand(for: Array(CommandLine.arguments.dropFirst())))')", code: VMM.ExitCode.usage)
        }
        do {
            var runnable = command
            try runnable.run()
        } catch {
            exit(withError: error) // help and exit statuses from run()
        }
    }
}

/// The help that fits a command line that did not parse: its subcommand's, or the top level's.
func helpCommand(for arguments: [String]) -> String {
    let names = SwiftVMM.configuration.subcommands.map { $0._commandName }
    guard let first = arguments.first, names.contains(first) else { return "swiftvmm --help" }
    return "swiftvmm \(first) --help"
}

extension ByteSize: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
    public static var defaultCompletionKind: CompletionKind { .default }
}

extension EntryMode: ExpressibleByArgument {}
extension ImageFormat: ExpressibleByArgument {}
extension PITMode: ExpressibleByArgument {}

/// `--on-reboot exit|restart`.
enum RebootAction: String, ExpressibleByArgument, CaseIterable {
    case exit, restart
}

/// `--irqchip kernel|none`.
enum IRQChipMode: String, ExpressibleByArgument, CaseIterable {
    case kernel, none
}

extension SerialTarget: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}

/// A guest-physical address written in decimal or 0x-hex.
struct Address: ExpressibleByArgument {
    let value: UInt64
    init?(argument: String) {
        let text = argument.lowercased()
        guard let value = text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text) else { return nil }
        self.value = value
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// The options that describe one VM, shared by `run` and `debug`.
struct VMOptions: ParsableArguments {
    @Argument(help: "The guest image: a flat binary, an ELF64 executable, a multiboot kernel or a bzImage.")
    var imageArgument: String?

    @Option(name: .customLong("kernel"), help: "A Linux kernel (bzImage or uncompressed vmlinux) booted through the x86 boot protocol; instead of IMAGE.")
    var kernel: String?

    @Option(name: .customLong("initrd"), help: "An initrd for the Linux kernel, loaded high in RAM below the kernel's initrd_addr_max.")
    var initrd: String?

    @Option(name: .customLong("on-reboot"), help: "What a guest reset (i8042 0xfe, port 0xcf9) does: exit (status 0) or restart (boot the VM again).")
    var onReboot = RebootAction.exit

    /// The image to boot (IMAGE or --kernel).
    var image: String { imageArgument ?? kernel ?? "" }

    @Option(name: .customLong("memory"), help: "Guest RAM, with K/M/G suffixes (2M to 64G).")
    var memory = ByteSize(bytes: 128 << 20)

    @Option(name: .customLong("cpus"), help: "Number of vCPUs (1 to 32).")
    var cpus = 1

    @Option(name: .customLong("entry"), help: "How flat binaries start: long (64-bit, paged) or real (16-bit).")
    var entry = EntryMode.long

    @Option(name: .customLong("format"), help: "Image format: auto (multiboot by header, ELF by magic or .elf name), elf, flat or multiboot.")
    var format = ImageFormat.auto

    @Option(name: .customLong("load-address"), help: "Where a flat binary is loaded (default 0x100000 long, 0x1000 real).")
    var loadAddress: Address?

    @Option(name: .customLong("cmdline"), help: "Command line handed to the guest (boot-info block, or multiboot cmdline after the kernel's path).")
    var commandLine = ""

    @Argument(parsing: .postTerminator, help: "Arguments after -- are appended to the command line (QEMU's -append).")
    var kernelArguments: [String] = []

    @Option(name: .customLong("module"), help: "A multiboot module, loaded page-aligned after the kernel (repeatable).")
    var modules: [String] = []

    @Flag(name: .customLong("test-devices"), help: "Add QEMU's pc-testdev ports (0xe0-0xeb, 0x2000-0x2017) and its 64 KiB MMIO window at 0xff000000.")
    var testDevices = false

    @Option(name: .customLong("serial"), help: "Where COM1 output goes: stdio, file:PATH or none.")
    var serial = SerialTarget.stdio

    @Option(name: .customLong("irqchip"), help: "kernel: in-kernel PIC, IOAPIC and LAPICs (HLT then waits for interrupts); none: no interrupts, HLT ends a vCPU, one vCPU. Default: kernel, or none with --entry real.")
    var irqchip: IRQChipMode?

    @Option(name: .customLong("pit"), help: "emulated: swiftvmm's i8254 through port exits; kernel: KVM's in-kernel PIT.")
    var pit = PITMode.emulated

    @Flag(name: .customLong("balloon"), help: "Add a virtio-balloon device (virtio-mmio at 0xc0000000, IRQ 5).")
    var balloon = false

    @Option(name: .customLong("balloon-target"), help: "Memory the balloon should take from the guest from the start (K/M/G).")
    var balloonTarget: ByteSize?

    @Option(name: .customLong("balloon-stats-interval"), help: "Seconds between balloon statistics requests (0: never; default 1).")
    var balloonStatsInterval: Double?

    @Flag(name: .customLong("stats"), help: "Print exit counts per vCPU, by reason and top ports/addresses, at the end.")
    var stats = false

    @Flag(name: .customLong("hugepages"), help: "Back guest RAM with transparent huge pages.")
    var hugePages = false

    @Flag(name: .customLong("prefault"), help: "Make all guest RAM resident before the guest starts (what the balloon then returns leaves RSS).")
    var prefault = false

    @Option(name: .customLong("trace-exits"), help: ArgumentHelp(
        "Print one line per VM exit (time, vCPU, reason, port/address, size, direction, data, rip). FILTER: comma-separated io[:PORT[-PORT]], mmio[:ADDR[-ADDR]], hlt, shutdown, debug, ... or all (the default when the flag has no value).",
        valueName: "filter"))
    var traceExits: String?

    @Option(name: .customLong("trace-file"), help: "Write the exit trace to this file instead of stderr.")
    var traceFile: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = Logger.Level.warning

    @Option(name: .customLong("kvm-device"), help: "The KVM device to open.")
    var kvmDevice = "/dev/kvm"

    @Flag(name: .customLong("no-seccomp"), help: "Run every thread without its seccomp filter (for debugging the VMM; docs/security.md).")
    var noSeccomp = false

    func validate() throws {
        guard (imageArgument == nil) != (kernel == nil) else {
            throw ValidationError(kernel == nil ? "missing the image to boot (IMAGE or --kernel KERNEL)" : "give IMAGE or --kernel, not both")
        }
        guard cpus >= 1 else { throw ValidationError("--cpus must be at least 1") }
        guard memory.bytes > 0 else { throw ValidationError("--memory must be larger than 0") }
        if let traceExits {
            do { _ = try ExitFilter.parse(traceExits) } catch { throw ValidationError("--trace-exits: \(error)") }
        }
        if traceFile != nil && traceExits == nil { throw ValidationError("--trace-file needs --trace-exits") }
    }

    var config: VMConfig {
        var config = VMConfig(imagePath: image)
        config.memorySize = memory.bytes
        config.cpus = cpus
        config.entry = entry
        config.format = format
        config.loadAddress = loadAddress?.value
        config.commandLine = ([commandLine].filter { !$0.isEmpty } + kernelArguments).joined(separator: " ")
        config.modules = modules
        config.testDevices = testDevices
        config.initrd = initrd
        if kernel != nil { config.format = .linux }
        config.serial = serial
        config.printStats = stats
        config.hugePages = hugePages
        config.prefault = prefault
        // A real-mode flat binary has no interrupt set-up of its own, and its final HLT would
        // wait forever for an interrupt under the in-kernel LAPIC: it runs without one unless asked.
        config.interruptControllers = (irqchip ?? (entry == .real ? .none : .kernel)) == .kernel
        config.pit = pit
        config.balloon = balloon
        config.balloonTarget = balloonTarget?.bytes ?? 0
        config.balloonStatsInterval = balloonStatsInterval ?? 1
        config.kvmDevice = kvmDevice
        config.traceExits = traceExits.map { (try? ExitFilter.parse($0)) ?? .all }
        config.traceFile = traceFile
        return config
    }

    /// Builds the machine or exits with the error's line and status.
    func buildMachine(debug: Bool) -> Machine {
        bootstrapLogging(level: logLevel)
        startSandbox(disabled: noSeccomp)
        var config = self.config
        config.debug = debug
        do {
            return try Machine(config: config, logger: Logger(label: "swiftvmm"))
        } catch {
            fail(error.description, code: error.exitCode)
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
func finish(_ outcome: RunOutcome) throws -> Never {
    switch outcome {
    case .guestFailure(let kind, let vcpu, let detail, let registers):
        writeStandardError("swiftvmm: guest stopped: \(kind.rawValue) on vcpu\(vcpu): \(detail)\n\(registers)\n")
    case .vmmFailure(let message):
        writeStandardError("swiftvmm: \(message)\n")
    case .signal(let number):
        // Statuses above 128 can also come from the guest's debug-exit port (V = 0x47 gives 143,
        // like SIGTERM): a signal always says so on stderr, the debug-exit port never does.
        writeStandardError("swiftvmm: stopped by signal \(number) (\(String(cString: strsignal(number))))\n")
    case .halted, .poweredOff, .reboot, .debugExit, .stopped:
        break
    }
    throw ArgumentParser.ExitCode(outcome.exitCode)
}

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

struct Control: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control",
        abstract: "Send one request to a running VM's control socket (run --control) and print the reply.",
        discussion: "Requests: balloon [SIZE], memory, stats, pause, resume, stop, help. The status is 0 for 'ok', 1 for an error reply, 70 when the socket cannot be reached."
    )

    @Argument(help: "The control socket: unix:PATH, HOST:PORT or :PORT.")
    var endpoint: String

    @Argument(parsing: .captureForPassthrough, help: "The request, e.g. 'balloon 128M'.")
    var request: [String] = []

    func run() throws {
        let target: SocketEndpoint
        do { target = try SocketEndpoint(parsing: endpoint) } catch { fail("control: \(error)", code: VMM.ExitCode.usage) }
        guard !request.isEmpty else { fail("control: no request given (try 'help')", code: VMM.ExitCode.usage) }
        let reply: ControlClient.Reply
        do { reply = try ControlClient.send(request.joined(separator: " "), to: target) } catch { fail(error.description, code: error.exitCode) }
        if !reply.text.isEmpty { print(reply.text) }
        if let error = reply.error { fail("control: \(error)", code: 1) }
    }
}

struct Debug: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot IMAGE stopped before its first instruction and debug it from a prompt (see docs/debugging.md).",
        discussion: """
        Commands come from the terminal, a pipe, or --script; 'help' lists them. The guest's serial \
        output goes to stdout, interleaved with the debugger's. The exit status is the guest's, as for \
        run (72 when quit stopped it first).
        """
    )

    @OptionGroup var vm: VMOptions

    @Option(name: .customLong("script"), help: "Read debugger commands from this file instead of stdin.")
    var script: String?

    func run() throws {
        nonisolated(unsafe) var input: UnsafeMutablePointer<FILE>? = fdopen(STDIN_FILENO, "r")
        if let script {
            guard let file = fopen(script, "r") else {
                fail("cannot read script \(script): \(String(cString: strerror(errno)))", code: VMM.ExitCode.usage)
            }
            input = file
        }
        let machine = vm.buildMachine(debug: true)
        let interactive = script == nil && isatty(STDIN_FILENO) == 1
        let outcome: RunOutcome
        do {
            outcome = try DebugFrontEnd.run(machine: machine, imagePath: vm.image, interactive: interactive) {
                readLine(from: input)
            }
        } catch {
            fail(error.description, code: error.exitCode)
        }
        try finish(outcome)
    }
}

/// One line from `file` without its newline; nil at end of input.
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
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}

/// Set by the main thread before any other thread exists.
nonisolated(unsafe) var loggingBootstrapped = false

/// Prints "swiftvmm: MESSAGE" and exits with `code`.
func fail(_ message: String, code: Int32) -> Never {
    writeStandardError("swiftvmm: \(message)\n")
    exit(code)
}

struct Host: ParsableCommand {
    static let configuration = CommandConfiguration(
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
