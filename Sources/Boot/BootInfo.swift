import VMMCore

/// The boot-info block at Layout.bootInfo, whose address the guest gets in RDI (EDI in real mode).
///
/// Layout (little-endian), documented in docs/guest-abi.md and mirrored by Guests/runtime/abi.h:
/// ```
///  0 u32 magic "SVMM" (0x4D4D5653)   4 u16 version (1)   6 u16 size of this block in bytes
///  8 u64 RAM size in bytes          16 u32 vCPU count    20 u32 flags (bit 0: entered in long mode)
/// 24 u64 command-line address       32 u32 command-line length (without the NUL)
/// 36 u32 memory-map entry count     40 u64 memory-map address
/// 48 u64 image load address         56 u64 image end (first byte after the loaded image)
/// 64 u64 MP floating pointer address (0: none)   72 u32 local APIC base   76 u32 IOAPIC base
/// 80 u8[32] APIC ID of vCPUs 0-31
/// 112 u64 first virtio-mmio device (0: none)  120 u16 virtio-mmio device count
/// 122 u8 IRQ of the first  123 u8 zero  124 u32 stride between devices
/// 128 u8[32] APIC ID of vCPUs 32-63 (version 3)
/// 160 u8[8] IRQ of virtio-mmio device 0-7 (version 4; unused entries zero)
/// ```
/// Flags: bit 0 entered in long mode; bit 1 interrupt controllers present (in-kernel PIC, IOAPIC
/// and local APICs), so vCPUs other than 0 wait for INIT/SIPI.
/// Memory-map entries are 24 bytes: u64 base, u64 length, u32 type (1 = usable RAM,
/// 2 = reserved), u32 zero.
public struct BootInfo: Sendable, Equatable {
    public static let magic: UInt32 = 0x4D4D_5653
    public static let version: UInt16 = 4
    public static let size: UInt16 = 168
    public static let flagLongMode: UInt32 = 1
    public static let flagInterruptControllers: UInt32 = 2

    public enum RegionType: UInt32, Sendable { case ram = 1, reserved = 2 }

    public struct Region: Sendable, Equatable {
        public let base: UInt64
        public let length: UInt64
        public let type: RegionType
    }

    public var ramSize: UInt64
    public var cpuCount: UInt32
    public var longMode: Bool
    public var commandLine: String
    public var imageStart: UInt64
    public var imageEnd: UInt64
    public var interruptControllers: Bool
    public var mpTable: UInt64
    public var virtioDevices: Int

    public init(ramSize: UInt64, cpuCount: UInt32, longMode: Bool, commandLine: String, imageStart: UInt64,
                imageEnd: UInt64, interruptControllers: Bool = false, mpTable: UInt64 = 0, virtioDevices: Int = 0) {
        self.ramSize = ramSize
        self.cpuCount = cpuCount
        self.longMode = longMode
        self.commandLine = commandLine
        self.imageStart = imageStart
        self.imageEnd = imageEnd
        self.interruptControllers = interruptControllers
        self.mpTable = mpTable
        self.virtioDevices = virtioDevices
    }

    /// The memory map the guest sees (MemoryMap's boot-info view): the low legacy/boot MiB
    /// reserved, the rest of RAM usable.
    public var memoryMap: [Region] {
        MemoryMap(ramSize: ramSize).bootInfoView.map { Region(base: $0.base, length: $0.length, type: $0.kind == .ram ? .ram : .reserved) }
    }

    /// Writes the block, its memory map and the command line into guest memory.
    public func write(to memory: GuestMemory) throws(GuestMemoryError) {
        let base = Layout.bootInfo
        let map = memoryMap
        try memory.fill(base, length: Int(Layout.bootInfoEnd - base))
        try memory.store(Self.magic, at: base)
        try memory.store(Self.version, at: base + 4)
        try memory.store(Self.size, at: base + 6)
        try memory.store(ramSize, at: base + 8)
        try memory.store(cpuCount, at: base + 16)
        try memory.store((longMode ? Self.flagLongMode : 0) | (interruptControllers ? Self.flagInterruptControllers : 0),
                         at: base + 20)
        try memory.store(Layout.commandLine, at: base + 24)
        try memory.store(UInt32(commandLine.utf8.count), at: base + 32)
        try memory.store(UInt32(map.count), at: base + 36)
        try memory.store(Layout.bootInfoMemoryMap, at: base + 40)
        try memory.store(imageStart, at: base + 48)
        try memory.store(imageEnd, at: base + 56)
        try memory.store(mpTable, at: base + 64)
        try memory.store(UInt32(Layout.localAPIC), at: base + 72)
        try memory.store(UInt32(Layout.ioAPIC), at: base + 76)
        let ids = (0..<min(Int(cpuCount), Layout.maximumVCPUs)).map { UInt8($0) }
        try memory.write(Array(ids.prefix(32)), at: base + 80)
        try memory.write(Array(ids.dropFirst(32)), at: base + 128)
        if virtioDevices > 0 {
            try memory.store(Platform.virtioBase, at: base + 112)
            try memory.store(UInt16(clamping: virtioDevices), at: base + 120)
            try memory.store(UInt8(Platform.virtioFirstIRQ), at: base + 122)
            try memory.store(UInt32(Platform.virtioStride), at: base + 124)
            let irqs = (0..<min(virtioDevices, Platform.virtioMaximum)).map { UInt8(clamping: Platform.virtio($0).irq ?? 0) }
            try memory.write(irqs, at: base + 160)
        }
        for (index, region) in map.prefix(Layout.bootInfoMemoryMapMaxEntries).enumerated() {
            let entry = Layout.bootInfoMemoryMap + UInt64(index * 24)
            try memory.store(region.base, at: entry)
            try memory.store(region.length, at: entry + 8)
            try memory.store(region.type.rawValue, at: entry + 16)
        }
        try memory.write(Array(commandLine.utf8) + [0], at: Layout.commandLine)
    }
}
