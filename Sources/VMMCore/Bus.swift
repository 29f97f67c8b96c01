
/// A device on a port or MMIO bus. It sees offsets into its own range, never absolute addresses.
///
/// Accesses are `size` bytes (1, 2, 4 or 8), values little-endian in the low bytes. Devices are
/// called from vCPU threads concurrently and must synchronise their own state.
public protocol BusDevice: AnyObject, Sendable {
    func read(offset: UInt64, size: Int) -> UInt64
    func write(offset: UInt64, size: Int, value: UInt64)
}

/// A half-open address range [base, base + length) on a bus.
public struct BusRange: Sendable, Equatable, CustomStringConvertible {
    public let base: UInt64
    public let length: UInt64

    public init(base: UInt64, length: UInt64) {
        self.base = base
        self.length = length
    }

    /// Last address inside the range.
    public var last: UInt64 { base &+ (length &- 1) }

    /// True when [address, address + size) lies wholly inside the range.
    @inline(__always)
    public func contains(_ address: UInt64, size: Int) -> Bool {
        address >= base && address - base < length && UInt64(size) <= length - (address - base)
    }

    public func overlaps(_ other: BusRange) -> Bool {
        base <= other.last && other.base <= last
    }

    public var description: String { "0x\(String(base, radix: 16))-0x\(String(last, radix: 16))" }
}

/// Errors from building a bus.
public enum BusError: Error, Equatable, CustomStringConvertible {
    case emptyRange(BusRange)
    case overlap(new: BusRange, existing: BusRange)

    public var description: String {
        switch self {
        case .emptyRange(let range): return "bus range at 0x\(String(range.base, radix: 16)) is empty or wraps"
        case .overlap(let new, let existing): return "bus range \(new) overlaps \(existing)"
        }
    }
}

/// An address-ordered bus of devices (port I/O or MMIO).
///
/// Built before the vCPUs start and immutable afterwards, so lookups take no lock. As on a real
/// bus, the device whose range holds the access's first address claims it, whatever its size:
/// devices must cope with any size at any offset. Accesses no device claims are "unclaimed": the
/// caller returns all-ones for reads and drops writes.
public struct Bus: Sendable {
    public struct Entry: Sendable {
        public let range: BusRange
        public let device: any BusDevice
    }

    /// Entries sorted by base address, non-overlapping.
    public private(set) var entries: [Entry] = []

    public init() {}

    /// Adds `device` at `range`; rejects empty, wrapping or overlapping ranges.
    public mutating func insert(_ device: any BusDevice, at range: BusRange) throws(BusError) {
        guard range.length > 0, range.base <= range.last else { throw .emptyRange(range) }
        let index = entries.firstIndex { $0.range.base > range.base } ?? entries.endIndex
        if index > entries.startIndex, entries[index - 1].range.overlaps(range) {
            throw .overlap(new: range, existing: entries[index - 1].range)
        }
        if index < entries.endIndex, entries[index].range.overlaps(range) {
            throw .overlap(new: range, existing: entries[index].range)
        }
        entries.insert(Entry(range: range, device: device), at: index)
    }

    /// The entry whose range holds `address`, by binary search.
    @inline(__always)
    public func entry(for address: UInt64) -> Entry? {
        var low = 0
        var high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].range.base <= address { low = middle + 1 } else { high = middle }
        }
        guard low > 0 else { return nil }
        let candidate = entries[low - 1]
        return address - candidate.range.base < candidate.range.length ? candidate : nil
    }

    /// Reads `size` bytes at `address`; nil when no device claims the access.
    @inline(__always)
    public func read(_ address: UInt64, size: Int) -> UInt64? {
        guard let entry = entry(for: address) else { return nil }
        return entry.device.read(offset: address - entry.range.base, size: size)
    }

    /// Writes `size` bytes at `address`; false when no device claims the access.
    @inline(__always)
    public func write(_ address: UInt64, size: Int, value: UInt64) -> Bool {
        guard let entry = entry(for: address) else { return false }
        entry.device.write(offset: address - entry.range.base, size: size, value: value & Bus.mask(size))
        return true
    }

    /// All-ones of `size` bytes: what an unclaimed read returns.
    @inline(__always)
    public static func mask(_ size: Int) -> UInt64 {
        size >= 8 ? UInt64.max : (UInt64(1) << (UInt64(size) * 8)) - 1
    }
}

/// An interrupt request line a device drives. The VMM connects it to the interrupt controller;
/// unit tests connect it to a recorder.
public protocol InterruptLine: Sendable {
    /// Raises (true) or lowers (false) the line (level-triggered semantics).
    func setLevel(_ high: Bool)
    /// One edge (raised, then lowered): whether the interrupt controller took it.
    func pulse() -> InterruptDelivery
}

/// What became of an edge on an interrupt line.
public enum InterruptDelivery: Sendable, Equatable {
    case delivered
    /// Merged with one the controller still had pending: the guest sees one interrupt for both.
    case coalesced
    /// Masked, or no controller behind the line.
    case ignored
}

extension InterruptLine {
    /// A line that cannot tell: every edge counts as delivered.
    public func pulse() -> InterruptDelivery {
        setLevel(true)
        setLevel(false)
        return .delivered
    }
}
