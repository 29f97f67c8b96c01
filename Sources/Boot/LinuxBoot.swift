import KVM
import Loaders
import VMMCore

/// Booting Linux through the x86 boot protocol's 64-bit entry: long mode with identity paging, a
/// GDT with __BOOT_CS = 0x10 and __BOOT_DS = 0x18, RSI = the zero page, the ACPI tables, the e820
/// map, the command line and the initrd.
enum LinuxBoot {
    static let zeroPage: UInt64 = Layout.bootInfo
    static let commandLine: UInt64 = Layout.bootInfo + 0x1000
    static let commandLineMax = 0x1000
    static let bootCS: UInt16 = 0x10
    static let bootDS: UInt16 = 0x18
    static let tssSelector: UInt16 = 0x20

    /// Areas a kernel segment must not overlap.
    static func reserved(ramSize: UInt64, interruptControllers: Bool) -> [(name: String, range: Range<UInt64>)] {
        var areas: [(name: String, range: Range<UInt64>)] = [
            ("boot page tables and GDT", Layout.bootGDT..<BootState.longModeTablesEnd(ramSize: ramSize)),
            ("zero page and command line", zeroPage..<(commandLine + UInt64(commandLineMax))),
            ("ACPI tables", Layout.acpiTables..<Layout.acpiTablesEnd),
        ]
        if interruptControllers { areas += Layout.mpAreas }
        return areas
    }

    /// The e820 map: MemoryMap's firmware view.
    static func e820(ramSize: UInt64) -> [ZeroPage.E820Entry] {
        MemoryMap(ramSize: ramSize).firmwareView.map { ZeroPage.E820Entry(base: $0.base, size: $0.length, type: $0.kind.rawValue) }
    }

    /// Writes page tables, GDT, ACPI tables, command line, initrd and zero page.
    static func prepare(image: LinuxKernel.Image, initrd: (path: String, bytes: [UInt8])?, commandLine text: String,
                        cpus: Int, virtioDevices: Int, acpi: ACPITables.Mode, ramSize: UInt64, memory: GuestMemory) throws(BootError) {
        let limit = min(Int(image.header.commandLineSize), commandLineMax - 1)
        guard text.utf8.count <= limit else {
            throw .invalid("command line is longer than the kernel's \(limit) bytes")
        }
        var initrdPlace: (address: UInt64, size: UInt64)?
        if let initrd {
            let lowEnd = Layout.ramRanges(size: ramSize)[0].size
            let ceiling = min(lowEnd, UInt64(image.header.initrdAddressMax) + 1)
            let size = UInt64(initrd.bytes.count)
            let kernelEnd = image.kernel.segments.map { $0.address + $0.memorySize }.max() ?? 0
            guard size <= ceiling, (ceiling - size) & ~0xFFF >= kernelEnd else {
                throw .image(path: initrd.path, .tooLarge(size: initrd.bytes.count, room: ceiling > kernelEnd ? ceiling - kernelEnd : 0))
            }
            initrdPlace = ((ceiling - size) & ~0xFFF, size)
        }
        let tables = ACPITables(cpus: cpus, virtioDevices: (0..<virtioDevices).map(Platform.virtio), mode: acpi)
        let rsdp = Layout.acpiTables
        let page = ZeroPage(headerBytes: image.headerBytes, commandLineAddress: commandLine,
                            commandLineSize: UInt32(limit), initrd: initrdPlace, e820: e820(ramSize: ramSize), rsdpAddress: rsdp)
        do {
            try BootState.writeLongModeTables(to: memory, ramSize: ramSize)
            let gdt: [UInt64] = [0, 0x00AF_9A00_0000_FFFF, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF]
                + BootState.tssDescriptor(base: Layout.bootTSS, limit: 0x67)
            for (index, descriptor) in gdt.enumerated() { try memory.store(descriptor, at: Layout.bootGDT + UInt64(index * 8)) }
            try tables.write(to: memory)
            try memory.write(Array(text.utf8) + [0], at: commandLine)
            if let initrd, let initrdPlace { try memory.write(initrd.bytes, at: initrdPlace.address) }
            try memory.write(page.bytes, at: zeroPage)
        } catch let error as GuestMemoryError {
            throw .memory(error)
        } catch let error as BootError {
            throw error
        } catch {
            throw .invalid("\(error)")
        }
    }

    /// Long mode as BootState sets it, with Linux's boot selectors.
    static func specialRegisters(from reset: SpecialRegisters) -> SpecialRegisters {
        var sregs = BootState.longModeSpecialRegisters(from: reset)
        sregs.cs.selector = bootCS
        for keyPath in [\SpecialRegisters.ds, \.es, \.ss, \.fs, \.gs] { sregs[keyPath: keyPath].selector = bootDS }
        sregs.tr.selector = tssSelector
        sregs.gdt = DescriptorTable(base: Layout.bootGDT, limit: 6 * 8 - 1)
        return sregs
    }

    /// RIP = the 64-bit entry, RSI = the zero page, interrupts off.
    static func entryRegisters(entry: UInt64) -> Registers {
        var regs = Registers()
        regs.rip = entry
        regs.rsi = zeroPage
        regs.rsp = zeroPage - 0x10
        regs.rflags = 0x2
        return regs
    }
}
