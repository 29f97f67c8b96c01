import Boot
import ArgumentParser
import Debugging
import Glibc
import Control
import Debugger
import HostMode
import Logging
import Sandbox
import Synchronization
import VMM

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
