import KVM
import Loaders
import VMMCore

/// How a flat binary is entered.
public enum EntryMode: String, Sendable, CaseIterable {
    /// 64-bit long mode with identity-mapped page tables, a GDT and a stack.
    case long
    /// 16-bit real mode, CS = 0, IP = the load address.
    case real
}

/// How the image file is interpreted.
public enum ImageFormat: String, Sendable, CaseIterable {
    /// ELF when the file starts with the ELF magic or is named *.elf, else a flat binary.
    case auto
    case elf
    case flat
    /// A multiboot (v1) kernel: ELF32, ELF64 or a.out-kludge, entered in 32-bit protected mode.
    /// `auto` picks it when the first 8 KiB hold a valid multiboot header.
    case multiboot
    /// A Linux kernel (bzImage, or an uncompressed vmlinux ELF) through the x86 boot protocol's
    /// 64-bit entry. `auto` picks it for a bzImage, and for a vmlinux (an x86-64 ELF with a "Linux" note); `--kernel` selects it for either.
    case linux
}
/// A file handed to the guest besides the kernel (an initrd, a multiboot module).
public struct BootFile: Sendable {
    public let path: String
    public let bytes: [UInt8]
    public init(path: String, bytes: [UInt8]) { (self.path, self.bytes) = (path, bytes) }
}

/// What a boot needs to know of the VM: the image's settings, the machine's size and devices.
public struct BootOptions: Sendable {
    public var imagePath: String
    public var format: ImageFormat = .auto
    public var entry: EntryMode = .long
    /// Where a flat binary goes (nil: the entry mode's default).
    public var loadAddress: UInt64?
    public var ramSize: UInt64
    public var cpus = 1
    public var interruptControllers = true
    public var commandLine = ""
    /// virtio-mmio devices the guest is told about (Platform.virtio(0) onwards).
    public var virtioDevices = 0
    /// Which FADT the guest gets (nil: the boot path's choice, full except for Linux).
    public var acpi: ACPITables.Mode?
    public var initrd: BootFile?
    public var modules: [BootFile] = []

    public init(imagePath: String, ramSize: UInt64) { (self.imagePath, self.ramSize) = (imagePath, ramSize) }

    /// The address a flat binary is loaded at.
    public var effectiveLoadAddress: UInt64 {
        loadAddress ?? (entry == .long ? Layout.defaultLongLoadAddress : Layout.defaultRealLoadAddress)
    }

    /// True when [address, address + size) lies inside one RAM range.
    func isRAM(_ address: UInt64, _ size: UInt64) -> Bool {
        Layout.ramRanges(size: ramSize).contains { address >= $0.start && address - $0.start <= $0.size && size <= $0.size - (address - $0.start) }
    }
}

/// A vCPU's registers at the kernel's entry.
public struct EntryState: Sendable {
    public var special: SpecialRegisters
    public var registers: Registers
}

/// One way of entering a kernel: swiftvmm's native protocol (flat binaries and ELF64, docs/guest-abi.md),
/// multiboot v1, or Linux's 64-bit boot protocol. The machine builder picks one (`BootProtocols.select`),
/// loads its image, lets it write its structures, then asks it for each vCPU's entry state.
public protocol BootProtocol: Sendable {
    /// The kernel as loaded: segments and entry point, checked against RAM and the areas the boot writes.
    var image: LoadedImage { get }
    /// Writes the protocol's structures (page tables, info blocks, ACPI, modules) into guest memory,
    /// after the image's segments.
    mutating func writeStructures(to memory: GuestMemory) throws(BootError)
    /// vCPU `index`'s state at entry, from its reset state; nil: it stays in reset until INIT/SIPI.
    func entryState(vcpu index: Int, reset: SpecialRegisters) -> EntryState?
}

extension BootProtocol {
    /// Copies the image's segments into guest memory. Fresh guest memory reads as zero, so a
    /// segment's zero tail (.bss) is written only where an earlier segment put bytes: writing all
    /// of it would make every page of a large .bss resident before the guest runs.
    public func loadSegments(into memory: GuestMemory) throws(BootError) {
        do {
            var written: [Range<UInt64>] = []
            for segment in image.segments {
                try memory.write(segment.bytes, at: segment.address)
                let start = segment.address + UInt64(segment.bytes.count)
                let tail = start..<(segment.address + segment.memorySize)
                for earlier in written where earlier.overlaps(tail) {
                    let overlap = tail.clamped(to: earlier)
                    try memory.fill(overlap.lowerBound, length: Int(overlap.upperBound - overlap.lowerBound))
                }
                written.append(segment.address..<start)
            }
        } catch { throw .memory(error) }
    }
}

/// Choosing the protocol for an image.
public enum BootProtocols {
    /// The protocol for `bytes` (the kernel file): Linux for a bzImage (`--format auto`) or with
    /// `--format linux`; multiboot when a multiboot header is found (or asked for); else the native
    /// protocol with an ELF64 or a flat binary. The image is checked against RAM and every area
    /// the chosen protocol writes.
    public static func select(_ bytes: [UInt8], options: BootOptions) throws(BootError) -> any BootProtocol {
        if options.format == .linux || (options.format == .auto && (LinuxKernel.isBzImage(bytes) || LinuxKernel.isVmlinux(bytes))) {
            return try LinuxProtocol(bytes, options: options)
        }
        guard options.initrd == nil else { throw .invalid("--initrd needs a Linux kernel (--kernel)") }
        let scan = options.format == .multiboot || options.format == .auto ? Multiboot.scan(bytes) : .none
        if options.format == .multiboot || (options.format == .auto && prefersMultiboot(bytes, scan)) {
            return try MultibootProtocol(bytes, scan: scan, options: options)
        }
        guard options.modules.isEmpty else { throw .invalid("--module needs a multiboot kernel") }
        return try NativeBoot(bytes, options: options)
    }

    /// `--format auto`: a valid multiboot header makes the image a multiboot kernel; a broken one
    /// does too (so it gets its reason), unless the file is an ELF64 x86-64 executable, which
    /// boots as one of ours.
    static func prefersMultiboot(_ bytes: [UInt8], _ scan: Multiboot.Scan) -> Bool {
        switch scan {
        case .none: return false
        case .header: return true
        case .invalid: return !(ELF64.isELF(bytes) && bytes.count > 4 && bytes[4] == 2)
        }
    }

    /// The MP table areas and the ACPI tables, which every protocol leaves alone when the
    /// interrupt controllers are on.
    static func mpAreas(_ options: BootOptions) -> [(name: String, range: Range<UInt64>)] {
        options.interruptControllers ? Layout.mpAreas + [("ACPI tables", Layout.acpiTables..<Layout.acpiTablesEnd)] : []
    }

    /// The ACPI tables of a native or multiboot boot (full FADT unless asked otherwise), written
    /// with the interrupt controllers, which the MADT describes.
    static func writeACPI(_ options: BootOptions, to memory: GuestMemory) throws(BootError) {
        guard options.interruptControllers else { return }
        let tables = ACPITables(cpus: options.cpus, virtioDevices: (0..<options.virtioDevices).map(Platform.virtio),
                                mode: options.acpi ?? .full)
        try tables.write(to: memory)
    }

    /// Runs a loader, its error naming the image.
    static func loading<Result>(_ path: String, _ body: () throws -> Result) throws(BootError) -> Result {
        do { return try body() } catch let error as LoaderError { throw .image(path: path, error) } catch let error as BootError {
            throw error
        } catch { throw .invalid("\(error)") }
    }
}

/// swiftvmm's own protocol (docs/guest-abi.md): an ELF64 or flat binary entered in 64-bit mode
/// (identity paging, a GDT, a stack per vCPU, RDI = the boot info) or a flat binary in real mode.
struct NativeBoot: BootProtocol {
    let image: LoadedImage
    let options: BootOptions
    var longMode: Bool { options.entry == .long || image.format == .elf64 }

    init(_ bytes: [UInt8], options: BootOptions) throws(BootError) {
        self.options = options
        let isELF: Bool
        switch options.format {
        case .elf: isELF = true
        case .flat: isELF = false
        case .auto, .multiboot, .linux: isELF = ELF64.isELF(bytes) || options.imagePath.lowercased().hasSuffix(".elf")
        }
        let loaded: LoadedImage
        if isELF {
            guard options.entry == .long else {
                throw .invalid("--entry real applies to flat binaries; ELF images start in 64-bit mode")
            }
            loaded = try BootProtocols.loading(options.imagePath) { try ELF64.load(bytes) }
        } else {
            let address = options.effectiveLoadAddress
            let region = Layout.ramRanges(size: options.ramSize).first { address >= $0.start && address < $0.start + $0.size }
            var room = region.map { $0.start + $0.size - address } ?? 0
            if options.entry == .real { room = min(room, Layout.realModeImageLimit - min(address, Layout.realModeImageLimit)) }
            loaded = try BootProtocols.loading(options.imagePath) { try FlatBinary.load(bytes, at: address, room: room) }
        }
        var reserved: [(name: String, range: Range<UInt64>)] = [("boot-info block", Layout.bootInfo..<Layout.bootInfoEnd)]
        reserved += BootProtocols.mpAreas(options)
        if options.entry == .long || loaded.format == .elf64 {
            reserved.append(("boot page tables and GDT", Layout.bootGDT..<BootState.longModeTablesEnd(ramSize: options.ramSize)))
            let stacks = UInt64(min(options.cpus, Layout.entryStacks)) * Layout.stackSize
            reserved.append(("initial stacks", (Layout.stackTop - stacks)..<Layout.stackTop))
        }
        image = try BootProtocols.loading(options.imagePath) { try loaded.validated(isRAM: options.isRAM, reserved: reserved) }
    }

    mutating func writeStructures(to memory: GuestMemory) throws(BootError) {
        let imageEnd = image.segments.map { $0.address + $0.memorySize }.max() ?? 0
        let imageStart = image.segments.map(\.address).min() ?? 0
        do {
            if longMode { try BootState.writeLongModeTables(to: memory, ramSize: options.ramSize) }
            try BootInfo(ramSize: options.ramSize, cpuCount: UInt32(options.cpus), longMode: longMode,
                         commandLine: options.commandLine, imageStart: imageStart, imageEnd: imageEnd,
                         interruptControllers: options.interruptControllers,
                         mpTable: options.interruptControllers ? Layout.mpTable : 0,
                         virtioDevices: options.virtioDevices).write(to: memory)
        } catch { throw .memory(error) }
        try BootProtocols.writeACPI(options, to: memory)
    }

    /// vCPU 0 enters; with interrupt controllers the others wait for INIT/SIPI (without them
    /// there is only one).
    func entryState(vcpu index: Int, reset: SpecialRegisters) -> EntryState? {
        guard index == 0 || !options.interruptControllers else { return nil }
        let special = longMode ? BootState.longModeSpecialRegisters(from: reset) : BootState.realModeSpecialRegisters(from: reset)
        return EntryState(special: special, registers: BootState.entryRegisters(entry: image.entry, mode: longMode ? .long : .real, vcpu: index))
    }
}

/// Multiboot v1: 32-bit protected mode, EAX = the magic, EBX = the info block (after the kernel
/// and its modules), with the kernel's path and the command line as its command line.
struct MultibootProtocol: BootProtocol {
    let image: LoadedImage
    let options: BootOptions
    private var infoAddress: UInt32 = 0

    init(_ bytes: [UInt8], scan: Multiboot.Scan, options: BootOptions) throws(BootError) {
        self.options = options
        switch scan {
        case .header(let header):
            guard options.entry == .long else {
                throw .invalid("--entry real applies to flat binaries; multiboot kernels start in 32-bit protected mode")
            }
            image = try BootProtocols.loading(options.imagePath) {
                try Multiboot.load(bytes, header: header).validated(isRAM: options.isRAM, reserved: BootProtocols.mpAreas(options))
            }
        case .invalid(let error): throw .image(path: options.imagePath, error)
        case .none: throw .image(path: options.imagePath, .multiboot("no multiboot header (magic 0x1badb002) in the image"))
        }
    }

    mutating func writeStructures(to memory: GuestMemory) throws(BootError) {
        // The kernel's path first, then the user's arguments, as QEMU passes them.
        let commandLine = options.commandLine.isEmpty ? options.imagePath : options.imagePath + " " + options.commandLine
        infoAddress = try MultibootBoot.place(image: image, modules: options.modules.map { ($0.path, $0.bytes) },
                                              commandLine: commandLine, ramSize: options.ramSize, memory: memory)
        try BootProtocols.writeACPI(options, to: memory)
    }

    func entryState(vcpu index: Int, reset: SpecialRegisters) -> EntryState? {
        guard index == 0 else { return nil }
        return EntryState(special: MultibootBoot.specialRegisters(from: reset, infoAddress: infoAddress),
                          registers: MultibootBoot.entryRegisters(entry: image.entry, infoAddress: infoAddress))
    }
}

/// Linux's 64-bit boot protocol: the zero page, the e820 map, ACPI tables, the command line and
/// the initrd; vCPU 0 enters, the others wait for the kernel's INIT/SIPI.
struct LinuxProtocol: BootProtocol {
    let kernel: LinuxKernel.Image
    let options: BootOptions
    var image: LoadedImage { kernel.kernel }

    init(_ bytes: [UInt8], options: BootOptions) throws(BootError) {
        self.options = options
        guard options.modules.isEmpty else { throw .invalid("--module needs a multiboot kernel") }
        let kernel = try BootProtocols.loading(options.imagePath) {
            LinuxKernel.isBzImage(bytes) ? try LinuxKernel.loadBzImage(bytes) : try LinuxKernel.loadVmlinux(bytes)
        }
        let reserved = LinuxBoot.reserved(ramSize: options.ramSize, interruptControllers: options.interruptControllers)
        _ = try BootProtocols.loading(options.imagePath) { try kernel.kernel.validated(isRAM: options.isRAM, reserved: reserved) }
        self.kernel = kernel
    }

    mutating func writeStructures(to memory: GuestMemory) throws(BootError) {
        try LinuxBoot.prepare(image: kernel, initrd: options.initrd.map { ($0.path, $0.bytes) }, commandLine: options.commandLine,
                              cpus: options.cpus, virtioDevices: options.virtioDevices, acpi: options.acpi ?? .reduced,
                              ramSize: options.ramSize, memory: memory)
    }

    func entryState(vcpu index: Int, reset: SpecialRegisters) -> EntryState? {
        guard index == 0 else { return nil }
        return EntryState(special: LinuxBoot.specialRegisters(from: reset), registers: LinuxBoot.entryRegisters(entry: image.entry))
    }
}
