/// The x86-64 guest memory map and boot-time addresses, in ascending order.
/// docs/guest-abi.md documents the same numbers for guest authors; Guests/runtime/abi.h mirrors them.
public enum Layout {
    /// Bytes per KiB/MiB/GiB, for readability.
    public static let kib: UInt64 = 1 << 10
    public static let mib: UInt64 = 1 << 20
    public static let gib: UInt64 = 1 << 30

    /// Boot GDT for the 64-bit entry (null, code 0x08, data 0x10, TSS 0x18).
    public static let bootGDT: UInt64 = 0x500
    /// A zeroed 104-byte TSS that TR points at on 64-bit entry.
    public static let bootTSS: UInt64 = 0x580
    /// Identity-mapping page tables: PML4, one PDPT, then one page directory (2 MiB pages) per GiB.
    public static let pml4: UInt64 = 0x1000
    public static let pdpt: UInt64 = 0x2000
    public static let pageDirectories: UInt64 = 0x3000
    /// Boot-info block handed to the guest in RDI (see BootInfo).
    public static let bootInfo: UInt64 = 0x5_0000
    /// Boot-info memory map (24-byte entries) and command line follow the block.
    public static let bootInfoMemoryMap: UInt64 = bootInfo + 0x100
    public static let bootInfoMemoryMapMaxEntries = 8
    public static let commandLine: UInt64 = bootInfo + 0x200
    public static let commandLineMax = 0xE00 // bytes, including the terminating NUL
    public static let bootInfoEnd: UInt64 = bootInfo + 0x1000
    /// Low memory the VMM never writes, left to the guest (below 1 MiB and page aligned, so it
    /// can hold an AP start-up trampoline: a SIPI vector is a page number below 0x100).
    public static let guestLowScratch: Range<UInt64> = 0x5_1000..<0x6_0000
    /// Initial stacks for the 64-bit entry: vCPU n starts with RSP = stackTop - n * stackSize.
    public static let stackTop: UInt64 = 0x8_0000
    public static let stackSize: UInt64 = 0x1000
    /// MP floating pointer, in the last KiB of base memory where kernels look for it.
    public static let mpTable: UInt64 = 0x9_FC00
    public static let mpTableEnd: UInt64 = 0xA_0000
    /// The MP configuration table the pointer names, in the BIOS area (reserved in every memory
    /// map): 64 vCPUs' entries do not fit the last KiB of base memory.
    public static let mpConfigTable: UInt64 = 0xF_0000
    public static let mpConfigTableEnd: UInt64 = 0xF_0800
    /// The ACPI tables of a Linux boot (RSDP first), below the BIOS area.
    public static let acpiTables: UInt64 = 0xE_0000
    public static let acpiTablesEnd: UInt64 = 0xF_0000
    /// The BIOS area at the top of the first MiB (reserved in every memory map; holds the MP
    /// configuration table).
    public static let biosArea: UInt64 = 0xF_0000
    /// Both MP areas, as the image checks name them.
    public static let mpAreas: [(name: String, range: Range<UInt64>)] = [
        ("MP table", mpTable..<mpTableEnd), ("MP configuration table", mpConfigTable..<mpConfigTableEnd),
    ]
    /// Everything below this is the VMM's (boot structures) or legacy PC space.
    public static let lowReservedEnd: UInt64 = 0x10_0000
    /// Default load address of flat binaries entered in 64-bit mode.
    public static let defaultLongLoadAddress: UInt64 = 0x10_0000
    /// Default load address of flat binaries entered in real mode (CS = 0, IP = this address).
    public static let defaultRealLoadAddress: UInt64 = 0x1000
    /// Real-mode images must start below this (IP is 16 bits with CS = 0).
    public static let realModeIPLimit: UInt64 = 0x1_0000
    /// Real-mode images must end below the MP table and the legacy VGA/BIOS area.
    public static let realModeImageLimit: UInt64 = mpTable
    /// 32-bit MMIO hole: no RAM from 3 GiB to 4 GiB; devices live here.
    public static let mmioHoleStart: UInt64 = 0xC000_0000
    public static let mmioHoleEnd: UInt64 = 0x1_0000_0000
    // The fixed devices' ports, windows and IRQs (virtio-mmio included) are in Platform.
    /// The IOAPIC and the local APICs' MMIO windows (handled inside KVM with an irqchip).
    public static let ioAPIC: UInt64 = 0xFEC0_0000
    public static let localAPIC: UInt64 = 0xFEE0_0000
    /// Three pages Intel VMX uses to emulate real mode (KVM_SET_TSS_ADDR), inside the hole.
    public static let vmxTSS: UInt64 = 0xFFFB_D000
    /// RAM beyond the first 3 GiB continues here.
    public static let highRAMStart: UInt64 = mmioHoleEnd

    /// Smallest and largest guest RAM the boot structures support.
    public static let minimumRAM: UInt64 = 2 * mib
    public static let maximumRAM: UInt64 = 64 * gib
    /// Most vCPUs (the boot info's APIC ID lists and the MP table hold this many).
    public static let maximumVCPUs = 64
    /// vCPUs that can start at the entry point with an initial stack below stackTop (only vCPU 0
    /// does with interrupt controllers; without them there is one vCPU).
    public static let entryStacks = 32

    /// The guest RAM ranges for `size` bytes of RAM: below the hole, then above 4 GiB.
    public static func ramRanges(size: UInt64) -> [(start: UInt64, size: UInt64)] {
        let low = min(size, mmioHoleStart)
        var ranges = [(start: UInt64(0), size: low)]
        if size > low { ranges.append((start: highRAMStart, size: size - low)) }
        return ranges
    }

    /// One past the highest RAM address.
    public static func ramTop(size: UInt64) -> UInt64 {
        ramRanges(size: size).last.map { $0.start + $0.size } ?? 0
    }

    /// GiB of address space the boot page tables identity-map: all RAM and at least the 4 GiB hole.
    public static func identityMappedGiB(size: UInt64) -> Int {
        Int(max(mmioHoleEnd, (ramTop(size: size) + gib - 1) / gib * gib) / gib)
    }
}
