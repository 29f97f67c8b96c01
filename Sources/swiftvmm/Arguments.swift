import Boot
import CommandLineParsing
import Boot
import Debugging
import Glibc
import Host
import Logging
import VMM

/// `--on-reboot exit|restart`.
enum RebootAction: String, CaseIterable {
    case exit, restart
}

/// `--irqchip kernel|none`.
enum IRQChipMode: String, CaseIterable {
    case kernel, none
}

/// A guest-physical address written in decimal or 0x-hex.
func parseAddress(_ text: String) -> UInt64? {
    let lowered = text.lowercased()
    return lowered.hasPrefix("0x") ? UInt64(lowered.dropFirst(2), radix: 16) : UInt64(lowered)
}

/// `--log-level`, shared by every command that builds machines.
let logLevelOption = OptionSpec("log-level", valueName: "level", help: "trace, debug, info, notice, warning, error or critical (default: warning).")
/// `--no-seccomp`, shared likewise.
let noSeccompOption = OptionSpec.flag("no-seccomp", help: "Run every thread without its seccomp filter (for debugging the VMM; docs/security.md).")

extension ParsedArguments {
    /// The first positional as an API socket path: PATH or unix:PATH, never empty.
    func apiSocket(_ command: String) throws(UsageError) -> String {
        let path = positionals[0]
        let socket = path.hasPrefix("unix:") ? String(path.dropFirst(5)) : path
        guard !socket.isEmpty else { throw error("\(command): the socket path is empty") }
        return socket
    }

    /// `--timeout SECONDS` (1 to 3600) for the API's clients, or `fallback`.
    func clientTimeout(default fallback: Int64) throws(UsageError) -> Int64 {
        guard let text = value("timeout") else { return fallback }
        guard let seconds = Int64(text), (1...3600).contains(seconds) else { throw error("--timeout: '\(text.printableExcerpt())' is not 1 to 3600 seconds") }
        return seconds
    }

    var logLevel: Logger.Level {
        get throws(UsageError) { try choice("log-level", of: Logger.Level.self) ?? .warning }
    }
}

/// The options that describe one VM, shared by `run` and `debug`.
struct VMOptions {
    static let options: [OptionSpec] = [
        OptionSpec("kernel", help: "A Linux kernel (bzImage or uncompressed vmlinux) booted through the x86 boot protocol; instead of IMAGE."),
        OptionSpec("initrd", help: "An initrd for the Linux kernel, loaded high in RAM below the kernel's initrd_addr_max."),
        OptionSpec("on-reboot", valueName: "action", help: "What a guest reset (i8042 0xfe, port 0xcf9) does: exit (status 0) or restart (boot the VM again)."),
        OptionSpec("memory", valueName: "size", help: "Guest RAM, with K/M/G suffixes (2M to 64G; default 128M)."),
        OptionSpec("cpus", valueName: "count", help: "Number of vCPUs (1 to 64; default 1)."),
        OptionSpec("entry", valueName: "mode", help: "How flat binaries start: long (64-bit, paged; the default) or real (16-bit)."),
        OptionSpec("format", help: "Image format: auto (multiboot by header, ELF by magic or .elf name; the default), elf, flat or multiboot."),
        OptionSpec("load-address", valueName: "address", help: "Where a flat binary is loaded (default 0x100000 long, 0x1000 real)."),
        OptionSpec("cmdline", valueName: "text", help: "Command line handed to the guest (boot-info block, or multiboot cmdline after the kernel's path)."),
        OptionSpec("module", .repeated, valueName: "path", help: "A multiboot module, loaded page-aligned after the kernel (repeatable)."),
        .flag("test-devices", help: "Add QEMU's pc-testdev ports (0xe0-0xeb, 0x2000-0x2017) and its 64 KiB MMIO window at 0xff000000."),
        OptionSpec("serial", valueName: "target", help: "Where COM1 output goes: stdio (the default), file:PATH or none."),
        OptionSpec("irqchip", valueName: "mode", help: "kernel: in-kernel PIC, IOAPIC and LAPICs (HLT then waits for interrupts); none: no interrupts, HLT ends a vCPU, one vCPU. Default: kernel, or none with --entry real."),
        OptionSpec("pit", valueName: "mode", help: "emulated (the default): swiftvmm's i8254 through port exits; kernel: KVM's in-kernel PIT."),
        .flag("balloon", help: "Add a virtio-balloon device (virtio-mmio at 0xc0000000, IRQ 5)."),
        OptionSpec("balloon-target", valueName: "size", help: "Memory the balloon should take from the guest from the start (K/M/G)."),
        OptionSpec("balloon-stats-interval", valueName: "seconds", help: "Seconds between balloon statistics requests (0: never; default 1)."),
        OptionSpec("acpi", valueName: "mode", help: "Which FADT the guest gets: full (PM registers, PM timer, S3 and S5, FACS; the default except for Linux) or reduced (hardware-reduced; Linux's default)."),
        .flag("vmware-backdoor", help: "Answer the VMware backdoor on port 0x5658 (GETVERSION), as QEMU's PC does."),
        OptionSpec("cpuid-vendor", valueName: "vendor", help: "Whose leaves CPUID 0x40000000 shows: swiftvmm (the default; KVM's at 0x40000100) or kvm (swiftvmm's at 0x40000100)."),
        OptionSpec("disk", .repeated, valueName: "path[,ro][,id=name]", help: "A raw disk image as a virtio-blk disk (repeatable; slots after the balloon). ro: writes fail and the file is never changed; id: the drive's name and serial number (default disk0, disk1, ...)."),
        OptionSpec("net", .repeated, valueName: "tap=name[,mac=MAC][,id=name]", help: "A virtio-net interface on host tap NAME (repeatable; slots after the disks): attached when it exists, else created (needs CAP_NET_ADMIN), brought up, and removed at the end. MAC default 02:53:56:4d:00:N."),
        OptionSpec("share", valueName: "dir[:ro]", help: "Serve a host directory to the guest through file hypercalls (docs/guest-abi.md); :ro refuses every change."),
        .flag("stats", help: "Print exit counts per vCPU, by reason and top ports/addresses, at the end."),
        .flag("hugepages", help: "Back guest RAM with transparent huge pages."),
        .flag("prefault", help: "Make all guest RAM resident before the guest starts (what the balloon then returns leaves RSS)."),
.flag("track-dirty-pages", help: "Log which guest pages change from the start, so `swiftvmm snapshot --diff` writes only those (docs/snapshot.md)."),
        .flag("page-sharing", help: "Mark guest RAM mergeable: the kernel's KSM, when the administrator runs it, shares identical pages copy-on-write (docs/host.md)."),
        OptionSpec("trace-exits", .optionalValue(bare: "all"), valueName: "filter", help: "Print one line per VM exit (time, vCPU, reason, port/address, size, direction, data, rip). FILTER: comma-separated io[:PORT[-PORT]], mmio[:ADDR[-ADDR]], hlt, shutdown, debug, ... or all (the default when the option has no value)."),
        OptionSpec("trace-file", valueName: "path", help: "Write the exit trace to this file instead of stderr."),
        logLevelOption,
        OptionSpec("kvm-device", valueName: "path", help: "The KVM device to open (default /dev/kvm)."),
        noSeccompOption,
    ]
    static let image = PositionalSpec("image", optional: true, help: "The guest image: a flat binary, an ELF64 executable, a multiboot kernel or a bzImage.")
    static let kernelArguments = PositionalSpec("kernel-arguments", help: "Arguments after -- are appended to the command line (QEMU's -append).")

    let image: String
    let onReboot: RebootAction
    let logLevel: Logger.Level
    let noSeccomp: Bool
    var config: VMConfig

    /// `imageRequired` false: the image comes later (`serve`, through the API's boot source).
    init(_ arguments: ParsedArguments, imageRequired: Bool = true) throws(UsageError) {
        let imageArgument = arguments.positionals.first, kernel = arguments.value("kernel")
        if imageRequired || imageArgument != nil || kernel != nil {
            guard (imageArgument == nil) != (kernel == nil) else {
                throw arguments.error(kernel == nil ? "missing the image to boot (IMAGE or --kernel KERNEL)" : "give IMAGE or --kernel, not both")
            }
        }
        image = imageArgument ?? kernel ?? ""
        onReboot = try arguments.choice("on-reboot") ?? .exit
        logLevel = try arguments.logLevel
        noSeccomp = arguments.flag("no-seccomp")

        var config = VMConfig(imagePath: image)
        let memory = try arguments.value("memory", expecting: "a size such as 512M", ByteSize.init(parsing:))
        if let memory {
            guard memory.bytes > 0 else { throw arguments.error("--memory must be larger than 0") }
            config.memorySize = memory.bytes
        }
        if let cpus = try arguments.value("cpus", expecting: "a number", { Int($0) }) {
            guard cpus >= 1 else { throw arguments.error("--cpus must be at least 1") }
            config.cpus = cpus
        }
        let entry = try arguments.choice("entry", of: EntryMode.self) ?? .long
        config.entry = entry
        config.format = try arguments.choice("format") ?? .auto
        config.loadAddress = try arguments.value("load-address", expecting: "a number, decimal or 0x-hex", parseAddress)
        let commandLine = arguments.value("cmdline") ?? ""
        config.commandLine = ([commandLine].filter { !$0.isEmpty } + arguments.terminated).joined(separator: " ")
        config.modules = arguments.values("module")
        config.testDevices = arguments.flag("test-devices")
        config.initrd = arguments.value("initrd")
        if kernel != nil { config.format = .linux }
        config.serial = try arguments.value("serial", expecting: "stdio, file:PATH or none", SerialTarget.init(parsing:)) ?? .stdio
        config.printStats = arguments.flag("stats")
        config.hugePages = arguments.flag("hugepages")
        config.prefault = arguments.flag("prefault")
        config.pageSharing = arguments.flag("page-sharing")
        config.trackDirtyPages = arguments.flag("track-dirty-pages")
        // A real-mode flat binary has no interrupt set-up of its own, and its final HLT would
        // wait forever for an interrupt under the in-kernel LAPIC: it runs without one unless asked.
        let irqchip = try arguments.choice("irqchip", of: IRQChipMode.self)
        config.interruptControllers = (irqchip ?? (entry == .real ? .none : .kernel)) == .kernel
        config.pit = try arguments.choice("pit") ?? .emulated
        config.balloon = arguments.flag("balloon")
        config.balloonTarget = try arguments.value("balloon-target", expecting: "a size such as 64M", ByteSize.init(parsing:))?.bytes ?? 0
        config.balloonStatsInterval = try arguments.value("balloon-stats-interval", expecting: "a number of seconds", { Double($0) }) ?? 1
        config.acpi = try arguments.choice("acpi", of: ACPITables.Mode.self)
        config.vmwareBackdoor = arguments.flag("vmware-backdoor")
        config.cpuidVendor = try arguments.choice("cpuid-vendor", of: CPUIDTable.Vendor.self) ?? .swiftvmm
        config.share = try arguments.value("share", expecting: "a directory, optionally with :ro", ShareConfig.init(parsing:))
        for text in arguments.values("disk") {
            guard let disk = DiskConfig(parsing: text) else {
                throw arguments.error("--disk: \(text.printableExcerpt()) is not PATH[,ro][,id=NAME] (NAME: 1-20 letters, digits, -, _ or .)")
            }
            config.disks.append(disk)
        }
        for text in arguments.values("net") {
            guard let net = NetConfig(parsing: text) else {
                throw arguments.error("--net: \(text.printableExcerpt()) is not tap=NAME[,mac=aa:bb:cc:dd:ee:ff][,id=NAME] (a unicast MAC; NAME up to 15 bytes)")
            }
            config.nets.append(net)
        }
        config.kvmDevice = arguments.value("kvm-device") ?? "/dev/kvm"
        if let filter = arguments.value("trace-exits") {
            do { config.traceExits = try ExitFilter.parse(filter) } catch { throw arguments.error("--trace-exits: \(error)") }
        }
        config.traceFile = arguments.value("trace-file")
        if config.traceFile != nil && config.traceExits == nil { throw arguments.error("--trace-file needs --trace-exits") }
        self.config = config
    }

    /// Builds the machine or exits with the error's line and status.
    func buildMachine(debug: Bool) -> Machine {
        bootstrapLogging(level: logLevel)
        startSandbox(disabled: noSeccomp)
        var config = self.config
        config.debug = debug
        return buildMachine(config: config)
    }

    /// Restores a snapshot with this command line's own settings, or exits with the error's line
    /// and status.
    func restoreMachine(_ source: SnapshotSource, paused: Bool) -> Machine {
        bootstrapLogging(level: logLevel)
        startSandbox(disabled: noSeccomp)
        do {
            let machine = try Machine(restoring: source, runtime: config, logger: Logger(label: "swiftvmm"))
            if paused { machine.startPaused() }
            return machine
        } catch {
            fail(error.description, code: error.exitCode)
        }
    }

    /// Waits for one incoming migration and returns the machine it brought, or exits with the
    /// error's line and status (76).
    func receiveMigration(on endpoint: SocketEndpoint) -> Machine {
        bootstrapLogging(level: logLevel)
        startSandbox(disabled: noSeccomp)
        do { return try MigrationDestination.receive(on: endpoint, runtime: config, logger: Logger(label: "swiftvmm")) } catch {
            fail(error.description, code: error.exitCode)
        }
    }

    /// Connects to a fault-tolerant primary and builds its backup, or exits with the error's line
    /// and status.
    func buildBackup(of endpoint: SocketEndpoint) -> Machine {
        bootstrapLogging(level: logLevel)
        startSandbox(disabled: noSeccomp)
        do { return try Machine(backupOf: endpoint, runtime: config, logger: Logger(label: "swiftvmm")) } catch {
            fail(error.description, code: error.exitCode)
        }
    }

    /// Builds a machine of `config` (the logging and sandbox already set up), or exits.
    func buildMachine(config: VMConfig) -> Machine {
        do {
            return try Machine(config: config, logger: Logger(label: "swiftvmm"))
        } catch {
            fail(error.description, code: error.exitCode)
        }
    }
}
