/// The guest-physical memory map as every boot protocol reports it, built once from Layout:
/// RAM, what the VMM or the PC keeps (the MP floating pointer, the ACPI tables, the BIOS area),
/// and the holes between (the VGA/option-ROM window, the 32-bit MMIO hole) that no map lists.
/// Each protocol's map is a view of this one list (`firmwareView`, `bootInfoView`).
public struct MemoryMap: Sendable, Equatable {
    public enum Kind: UInt32, Sendable, Equatable {
        /// Usable RAM (e820, multiboot and boot-info type 1).
        case ram = 1
        /// Reserved (type 2): the guest must not use it as RAM.
        case reserved = 2
    }

    public struct Region: Sendable, Equatable {
        public let base: UInt64
        public let length: UInt64
        public let kind: Kind
        /// What the region holds, for logs and docs.
        public let name: String

        public init(base: UInt64, length: UInt64, kind: Kind, name: String) {
            (self.base, self.length, self.kind, self.name) = (base, length, kind, name)
        }

        public var end: UInt64 { base + length }
    }

    /// Every region, in address order, none overlapping.
    public let regions: [Region]

    /// The map of a machine with `ramSize` bytes of RAM (at most Layout.maximumRAM).
    public init(ramSize: UInt64) {
        let ram = Layout.ramRanges(size: ramSize)
        let low = ram[0]
        var regions = [
            Region(base: 0, length: min(Layout.mpTable, low.size), kind: .ram, name: "base memory"),
            Region(base: Layout.mpTable, length: Layout.mpTableEnd - Layout.mpTable, kind: .reserved, name: "MP floating pointer"),
            Region(base: Layout.acpiTables, length: Layout.acpiTablesEnd - Layout.acpiTables, kind: .reserved, name: "ACPI tables"),
            Region(base: Layout.biosArea, length: Layout.lowReservedEnd - Layout.biosArea, kind: .reserved, name: "BIOS area (MP configuration table)"),
        ]
        if low.size > Layout.lowReservedEnd {
            regions.append(Region(base: Layout.lowReservedEnd, length: low.size - Layout.lowReservedEnd, kind: .ram, name: "RAM below the MMIO hole"))
        }
        for high in ram.dropFirst() {
            regions.append(Region(base: high.start, length: high.size, kind: .ram, name: "RAM above 4 GiB"))
        }
        self.regions = regions
    }

    /// What firmware reports (Linux's e820 table, multiboot's memory map): every region, with
    /// neighbouring regions of one kind merged.
    public var firmwareView: [Region] { Self.merged(regions) }

    /// What swiftvmm's own boot info reports: the whole first MiB reserved (the boot structures
    /// of the native protocol live there; guestLowScratch is documented apart), then RAM.
    public var bootInfoView: [Region] {
        let low = Region(base: 0, length: Layout.lowReservedEnd, kind: .reserved, name: "boot structures and legacy PC area")
        return [low] + regions.filter { $0.base >= Layout.lowReservedEnd }
    }

    /// KiB of RAM below 1 MiB and from 1 MiB to the hole, as multiboot's mem_lower and mem_upper.
    public var lowerKiB: UInt32 { UInt32(regions.first { $0.base == 0 && $0.kind == .ram }.map { $0.length / 1024 } ?? 0) }
    public var upperKiB: UInt32 {
        UInt32(clamping: regions.first { $0.base == Layout.lowReservedEnd && $0.kind == .ram }.map { $0.length / 1024 } ?? 0)
    }

    static func merged(_ regions: [Region]) -> [Region] {
        var result: [Region] = []
        for region in regions {
            if let last = result.last, last.kind == region.kind, last.end == region.base {
                result[result.count - 1] = Region(base: last.base, length: last.length + region.length, kind: last.kind, name: last.name)
            } else {
                result.append(region)
            }
        }
        return result
    }
}
