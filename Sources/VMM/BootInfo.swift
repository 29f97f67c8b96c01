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
/// ```
/// Memory-map entries are 24 bytes: u64 base, u64 length, u32 type (1 = usable RAM,
/// 2 = reserved), u32 zero.
public struct BootInfo: Sendable, Equatable {
    public static let magic: UInt32 = 0x4D4D_5653
    public static let version: UInt16 = 1
    public static let size: UInt16 = 64
    public static let flagLongMode: UInt32 = 1

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

    public init(ramSize: UInt64, cpuCount: UInt32, longMode: Bool, commandLine: String, imageStart: UInt64, imageEnd: UInt64) {
        self.ramSize = ramSize
        self.cpuCount = cpuCount
        self.longMode = longMode
        self.commandLine = commandLine
        self.imageStart = imageStart
        self.imageEnd = imageEnd
    }

    /// The memory map the guest sees: the low legacy/boot MiB reserved, the rest of RAM usable.
    public var memoryMap: [Region] {
        var regions = [Region(base: 0, length: Layout.lowReservedEnd, type: .reserved)]
        for range in Layout.ramRanges(size: ramSize) {
            let start = max(range.start, Layout.lowReservedEnd)
            let end = range.start + range.size
            if end > start { regions.append(Region(base: start, length: end - start, type: .ram)) }
        }
        return regions
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
        try memory.store(longMode ? Self.flagLongMode : 0, at: base + 20)
        try memory.store(Layout.commandLine, at: base + 24)
        try memory.store(UInt32(commandLine.utf8.count), at: base + 32)
        try memory.store(UInt32(map.count), at: base + 36)
        try memory.store(Layout.bootInfoMemoryMap, at: base + 40)
        try memory.store(imageStart, at: base + 48)
        try memory.store(imageEnd, at: base + 56)
        for (index, region) in map.prefix(Layout.bootInfoMemoryMapMaxEntries).enumerated() {
            let entry = Layout.bootInfoMemoryMap + UInt64(index * 24)
            try memory.store(region.base, at: entry)
            try memory.store(region.length, at: entry + 8)
            try memory.store(region.type.rawValue, at: entry + 16)
        }
        try memory.write(Array(commandLine.utf8) + [0], at: Layout.commandLine)
    }
}
