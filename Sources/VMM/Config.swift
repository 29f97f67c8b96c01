import Boot
import Host
import Debugging
import VMMCore
/// Which i8254 PIT the guest gets.
public enum PITMode: String, Sendable, CaseIterable {
    /// swiftvmm's own PIT, emulated in Swift through port exits.
    case emulated
    /// KVM's in-kernel PIT.
    case kernel
}

/// Where the UART's output goes.
public enum SerialTarget: Sendable, Equatable {
    case stdio
    case file(String)
    case none

    /// Parses "stdio", "none" or "file:PATH".
    public init?(parsing text: String) {
        switch text {
        case "stdio": self = .stdio
        case "none": self = .none
        default:
            guard text.hasPrefix("file:"), text.count > 5 else { return nil }
            self = .file(String(text.dropFirst(5)))
        }
    }
}

/// Every setting of one VM run, independent of how it was given (CLI, tests, host mode).
public struct VMConfig: Sendable {
    public var imagePath: String
    public var memorySize: UInt64 = 128 * Layout.mib
    public var cpus = 1
    public var entry: EntryMode = .long
    public var format: ImageFormat = .auto
    /// nil: the entry mode's default (Layout.defaultLongLoadAddress / defaultRealLoadAddress).
    public var loadAddress: UInt64?
    public var commandLine = ""
    public var serial: SerialTarget = .stdio
    public var printStats = false
    public var hugePages = false
    /// Make all guest RAM resident before the guest starts (`--prefault`).
    public var prefault = false
    /// Mark guest RAM mergeable, so the kernel's KSM may share identical pages (`--page-sharing`).
    public var pageSharing = false
    /// Log which pages change from the start (`--track-dirty-pages`, the API's
    /// `track_dirty_pages`), so a Diff snapshot writes only those.
    public var trackDirtyPages = false
    /// Log at start whether KSM will merge (host mode says it once for all its VMs instead).
    public var announcePageSharing = true
    /// In-kernel PIC, IOAPIC and local APICs. Without them HLT ends a vCPU, there are no interrupts
    /// and only one vCPU.
    public var interruptControllers = true
    public var pit: PITMode = .emulated
    /// A virtio-balloon device (virtio-mmio at Layout.virtioMMIOBase, IRQ 5).
    public var balloon = false
    /// Bytes the balloon should hold from the start.
    public var balloonTarget: UInt64 = 0
    /// How often the balloon asks the guest for statistics, in seconds (0 = never).
    public var balloonStatsInterval: Double = 1
    /// Offer DEFLATE_ON_OOM: the guest may take pages back when it runs out of memory.
    public var balloonDeflateOnOOM = true
    /// `--acpi full|reduced`: which FADT the guest gets (nil: full, reduced for Linux).
    public var acpi: ACPITables.Mode?
    /// `--vmware-backdoor`: port 0x5658 answers the VMware backdoor's GETVERSION.
    public var vmwareBackdoor = false
    /// `--cpuid-vendor`: whose signature CPUID 0x40000000 carries (KVM's leaves then sit there).
    public var cpuidVendor: CPUIDTable.Vendor = .swiftvmm
    /// `--share HOSTDIR[:ro]`: the file hypercall device serving HOSTDIR (nil: no device).
    public var share: ShareConfig?
    /// `--disk PATH[,ro][,id=NAME]`: virtio-blk disks, in order after the balloon.
    public var disks: [DiskConfig] = []
    /// `--net tap=NAME[,mac=MAC][,id=NAME]`: virtio-net interfaces, in order after the disks.
    public var nets: [NetConfig] = []
    public var kvmDevice = "/dev/kvm"
    /// `--trace-exits`: the exits to report, one line each (nil: no tracing).
    public var traceExits: ExitFilter?
    /// Where trace lines go (nil: stderr).
    public var traceFile: String?
    /// Build the VM for a debugger (the debug command, `--gdb`): vCPUs park before their first
    /// instruction and at every debug event.
    public var debug = false
    /// Multiboot modules (`--module`), loaded page-aligned after the kernel.
    public var modules: [String] = []
    /// QEMU's pc-testdev ports and memory window (`--test-devices`).
    public var testDevices = false
    /// The initrd handed to a Linux kernel (`--initrd`).
    public var initrd: String?
    /// `--deterministic` (and `--record`, `swiftvmm replay`): one vCPU whose interrupts come from
    /// the Swift 8259 pair at exits, devices on a virtual clock that moves with the exit count,
    /// no paravirtual clocks (docs/replay.md).
    public var deterministic = false
    /// `--record LOG`: where the record/replay log goes.
    public var recordPath: String?
    /// Virtual nanoseconds per counted exit (deterministic mode).
    public var nanosecondsPerExit: UInt64 = 1000
    /// `--ft-primary ENDPOINT`: stream the log to a backup that connects there (fault tolerance).
    public var ftPrimary: SocketEndpoint?
    /// `--ft-backup ENDPOINT`: replay a primary's stream from there and take over when it dies.
    public var ftBackup: SocketEndpoint?
    /// The RTC's wall-clock start in deterministic mode (nil: the host's clock at start).
    public var rtcStart: (seconds: Int64, nanoseconds: Int64)?

    public init(imagePath: String) {
        self.imagePath = imagePath
    }

    /// The name and serial number of disk `index`.
    public func diskID(_ index: Int) -> String { disks[index].id ?? "disk\(index)" }

    /// The name of network interface `index`, and its MAC.
    public func netID(_ index: Int) -> String { nets[index].id ?? "net\(index)" }
    public func netMAC(_ index: Int) -> [UInt8] { nets[index].mac ?? [0x02, 0x53, 0x56, 0x4D, 0x00, UInt8(truncatingIfNeeded: index)] }

    /// virtio-mmio devices in slot order: the balloon, then the disks, then the networks.
    public var virtioDeviceCount: Int { (balloon ? 1 : 0) + disks.count + nets.count }

    /// The address a flat binary is loaded at.
    public var effectiveLoadAddress: UInt64 {
        loadAddress ?? (entry == .long ? Layout.defaultLongLoadAddress : Layout.defaultRealLoadAddress)
    }

    /// Checks values that do not depend on the image or the host.
    public func validate() throws(VMMError) {
        guard memorySize >= Layout.minimumRAM, memorySize <= Layout.maximumRAM else {
            throw .invalidConfig("memory size \(ByteSize(bytes: memorySize)) is out of range (\(ByteSize(bytes: Layout.minimumRAM)) to \(ByteSize(bytes: Layout.maximumRAM)))")
        }
        guard memorySize % (4 * Layout.kib) == 0 else {
            throw .invalidConfig("memory size \(memorySize) is not a multiple of 4 KiB")
        }
        guard cpus >= 1, cpus <= Layout.maximumVCPUs else {
            throw .invalidConfig("cpu count \(cpus) is out of range (1 to \(Layout.maximumVCPUs))")
        }
        guard commandLine.utf8.count < Layout.commandLineMax, !commandLine.utf8.contains(0) else {
            throw .invalidConfig("command line is longer than \(Layout.commandLineMax - 1) bytes or contains NUL")
        }
        if entry == .real {
            let address = effectiveLoadAddress
            guard address < Layout.realModeIPLimit else {
                throw .invalidConfig("real-mode load address 0x\(String(address, radix: 16)) must be below 0x10000")
            }
            guard cpus == 1 else { throw .invalidConfig("real-mode entry supports one vCPU") }
        }
        guard interruptControllers || cpus == 1 else {
            throw .invalidConfig("more than one vCPU needs the interrupt controllers (drop --irqchip none)")
        }
        guard balloonTarget <= memorySize else {
            throw .invalidConfig("balloon target \(ByteSize(bytes: balloonTarget)) is larger than guest memory")
        }
        guard !(balloonTarget > 0 || balloonStatsInterval != 1) || balloon else {
            throw .invalidConfig("--balloon-target and --balloon-stats-interval need --balloon")
        }
        guard balloonStatsInterval >= 0, balloonStatsInterval <= 3600 else {
            throw .invalidConfig("balloon statistics interval \(balloonStatsInterval) s is out of range (0 to 3600)")
        }
        guard interruptControllers || acpi == nil else {
            throw .invalidConfig("--acpi needs the interrupt controllers, which the MADT describes (drop --irqchip none)")
        }
        guard virtioDeviceCount <= Platform.virtioMaximum else {
            throw .invalidConfig("\(disks.count) disks, \(nets.count) network interfaces\(balloon ? " and the balloon" : "") need more than the \(Platform.virtioMaximum) virtio-mmio slots")
        }
        var netIDs = Set<String>(), taps = Set<String>(), macs = Set<[UInt8]>()
        for index in nets.indices {
            guard netIDs.insert(netID(index)).inserted else { throw .invalidConfig("two network interfaces are named \(netID(index))") }
            guard taps.insert(nets[index].tap).inserted else { throw .invalidConfig("two network interfaces use tap \(nets[index].tap)") }
            guard macs.insert(netMAC(index)).inserted else { throw .invalidConfig("two network interfaces have MAC \(NetConfig.macText(netMAC(index)))") }
        }
        var ids = Set<String>()
        for (index, disk) in disks.enumerated() {
            guard ids.insert(diskID(index)).inserted else { throw .invalidConfig("two disks are named \(diskID(index))") }
            if let id = disk.id, !DiskConfig.validID(id) { throw .invalidConfig("disk id \(id.printableExcerpt()) is not 1-20 letters, digits, -, _ or .") }
        }
        guard interruptControllers || pit == .emulated else {
            throw .invalidConfig("--pit kernel needs the interrupt controllers (drop --irqchip none)")
        }
        if deterministic { try validateDeterministic() }
    }

    /// What deterministic mode cannot make deterministic is refused, one line each.
    private func validateDeterministic() throws(VMMError) {
        let refused: [(Bool, String)] = [
            (cpus > 1, "one vCPU (multiprocessor interleaving is not recorded)"),
            (pit == .kernel, "the emulated PIT (KVM's in-kernel PIT runs on the host's clock)"),
            (!disks.isEmpty, "no --disk (its I/O completes on a thread of its own)"),
            (!nets.isEmpty, "no --net (frames arrive at any moment)"),
            (share != nil, "no --share (host files change under it)"),
            (debug, "no debugger"),
        ]
        if let (_, need) = refused.first(where: { $0.0 }) { throw .invalidConfig("deterministic mode needs \(need)") }
        guard ftPrimary == nil || ftBackup == nil else { throw .invalidConfig("--ft-primary and --ft-backup exclude each other") }
        guard (ftPrimary == nil && ftBackup == nil) || recordPath == nil else { throw .invalidConfig("--record and fault tolerance exclude each other") }
        guard (1...1_000_000).contains(nanosecondsPerExit) else {
            throw .invalidConfig("--exit-nanoseconds \(nanosecondsPerExit) is out of range (1 to 1000000)")
        }
    }
}

/// A host directory the guest reaches through file hypercalls (`--share HOSTDIR[:ro]`).
public struct ShareConfig: Sendable, Equatable {
    public var path: String
    public var readOnly: Bool

    public init(path: String, readOnly: Bool) { (self.path, self.readOnly) = (path, readOnly) }

    /// `HOSTDIR`, `HOSTDIR:ro` or `HOSTDIR:rw`.
    public init?(parsing text: String) {
        var path = Substring(text), readOnly = false
        if path.hasSuffix(":ro") { readOnly = true; path = path.dropLast(3) } else if path.hasSuffix(":rw") { path = path.dropLast(3) }
        guard !path.isEmpty else { return nil }
        (self.path, self.readOnly) = (String(path), readOnly)
    }
}
