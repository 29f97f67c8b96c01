import KVM
import VMMCore

/// Builds the CPU state a guest starts in: 64-bit long mode (page tables, GDT, TSS, stack) or
/// 16-bit real mode.
public enum BootState {
    /// GDT selectors of the 64-bit entry.
    public static let codeSelector: UInt16 = 0x08
    public static let dataSelector: UInt16 = 0x10
    public static let tssSelector: UInt16 = 0x18

    static let cr0 = UInt64(0x8005_0033) // PG | AM | WP | NE | ET | MP | PE
    static let cr4 = UInt64(0x620) // OSXMMEXCPT | OSFXSR | PAE
    static let efer = UInt64(0x500) // LMA | LME
    static let pageFlags = UInt64(0x87) // present, writable, user, 2 MiB page
    static let tableFlags = UInt64(0x07) // present, writable, user

    /// Writes the GDT, TSS and identity-mapping page tables for `ramSize` bytes of RAM.
    ///
    /// Pages carry the user bit, so code the guest moves to CPL 3 can touch all of memory.
    public static func writeLongModeTables(to memory: GuestMemory, ramSize: UInt64) throws(GuestMemoryError) {
        let gdt: [UInt64] = [
            0,
            0x00AF_9A00_0000_FFFF, // 0x08: 64-bit code, DPL 0
            0x00CF_9200_0000_FFFF, // 0x10: data, DPL 0
        ] + tssDescriptor(base: Layout.bootTSS, limit: 0x67)
        for (index, descriptor) in gdt.enumerated() {
            try memory.store(descriptor, at: Layout.bootGDT + UInt64(index * 8))
        }
        try memory.fill(Layout.bootTSS, length: 0x68)

        let gib = Layout.identityMappedGiB(size: ramSize)
        try memory.fill(Layout.pml4, length: 0x2000)
        try memory.store(Layout.pdpt | tableFlags, at: Layout.pml4)
        for directory in 0..<gib {
            let table = Layout.pageDirectories + UInt64(directory) * 0x1000
            try memory.store(table | tableFlags, at: Layout.pdpt + UInt64(directory * 8))
            for entry in 0..<512 {
                let address = UInt64(directory) * Layout.gib + UInt64(entry) * 2 * Layout.mib
                try memory.store(address | pageFlags, at: table + UInt64(entry * 8))
            }
        }
    }

    /// End of the page tables written for `ramSize` (for overlap checks).
    public static func longModeTablesEnd(ramSize: UInt64) -> UInt64 {
        Layout.pageDirectories + UInt64(Layout.identityMappedGiB(size: ramSize)) * 0x1000
    }

    /// A 16-byte 64-bit TSS descriptor as two GDT slots.
    static func tssDescriptor(base: UInt64, limit: UInt32) -> [UInt64] {
        let low = UInt64(limit & 0xFFFF) | (base & 0xFF_FFFF) << 16 | UInt64(0x89) << 40
            | UInt64((limit >> 16) & 0xF) << 48 | ((base >> 24) & 0xFF) << 56
        return [low, base >> 32]
    }

    /// Special registers for the 64-bit entry, starting from the vCPU's reset state.
    public static func longModeSpecialRegisters(from reset: SpecialRegisters) -> SpecialRegisters {
        var sregs = reset
        let code = Segment(base: 0, limit: 0xFFFF_FFFF, selector: codeSelector, type: 0xB, present: true,
                           dpl: 0, db: false, s: true, l: true, g: true)
        let data = Segment(base: 0, limit: 0xFFFF_FFFF, selector: dataSelector, type: 0x3, present: true,
                           dpl: 0, db: true, s: true, l: false, g: true)
        sregs.cs = code
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data)
        sregs.tr = Segment(base: Layout.bootTSS, limit: 0x67, selector: tssSelector, type: 0xB, present: true)
        sregs.gdt = DescriptorTable(base: Layout.bootGDT, limit: 5 * 8 - 1)
        sregs.idt = DescriptorTable(base: 0, limit: 0)
        sregs.cr0 = cr0
        sregs.cr3 = Layout.pml4
        sregs.cr4 = cr4
        sregs.efer = efer
        return sregs
    }

    /// Special registers for the real-mode entry: every segment based at 0.
    public static func realModeSpecialRegisters(from reset: SpecialRegisters) -> SpecialRegisters {
        var sregs = reset
        for keyPath in [\SpecialRegisters.cs, \.ds, \.es, \.fs, \.gs, \.ss] {
            sregs[keyPath: keyPath].base = 0
            sregs[keyPath: keyPath].selector = 0
        }
        return sregs
    }

    /// General registers at entry: RIP, a stack, RDI = boot info, RSI = vCPU index.
    public static func entryRegisters(entry: UInt64, mode: EntryMode, vcpu: Int) -> Registers {
        var regs = Registers()
        regs.rip = entry
        regs.rdi = Layout.bootInfo
        regs.rsi = UInt64(vcpu)
        regs.rsp = mode == .long ? Layout.stackTop - UInt64(vcpu) * Layout.stackSize : entry
        regs.rflags = 0x2
        return regs
    }
}
