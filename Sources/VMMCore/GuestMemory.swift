import Glibc
import Synchronization

/// Errors from guest memory allocation and access.
public enum GuestMemoryError: Error, Equatable, CustomStringConvertible {
    /// [address, address + length) is not entirely inside one RAM region.
    case outOfBounds(address: UInt64, length: Int)
    /// Regions overlap, are empty, or are not page aligned.
    case invalidLayout(String)
    /// The host refused the mapping.
    case mapFailed(size: Int, errno: Int32)
    /// Reading or writing a memory file (snapshot, migration) failed.
    case file(String, errno: Int32)

    public var description: String {
        switch self {
        case .outOfBounds(let address, let length):
            return "guest range 0x\(String(address, radix: 16)) + \(length) is outside guest RAM"
        case .invalidLayout(let why): return "invalid guest memory layout: \(why)"
        case .mapFailed(let size, let errno):
            return "cannot map \(size >> 20) MiB of guest memory: \(String(cString: strerror(errno)))"
        case .file(let what, let errno): return "\(what): \(String(cString: strerror(errno)))"
        }
    }
}

/// One contiguous range of guest RAM backed by an anonymous host mapping.
public struct GuestMemoryRegion: Sendable {
    public let guestStart: UInt64
    public let size: Int
    /// Host virtual address of the first byte (handed to KVM as userspace_addr).
    public let hostAddress: UInt

    public var guestEnd: UInt64 { guestStart + UInt64(size) }

    /// True when [address, address + length) lies in this region.
    @inline(__always)
    public func contains(_ address: UInt64, length: Int) -> Bool {
        length >= 0 && address >= guestStart && address <= guestEnd
            && UInt64(length) <= guestEnd - address
    }
}

/// Guest RAM: anonymous host mappings, one per region, with bounds-checked access.
///
/// `@unchecked Sendable`: guest memory is shared by design with the guest's vCPUs, which write it
/// concurrently with the VMM; this type only guarantees that every access stays inside a mapping.
public final class GuestMemory: @unchecked Sendable {
    public let regions: [GuestMemoryRegion]
    public let pageSize: Int
    /// Whether every region was marked mergeable for KSM (asked with `mergeable`, and the kernel
    /// took it: one without KSM refuses MADV_MERGEABLE).
    public let isMergeable: Bool
    /// Whether the regions are private mappings of a snapshot's memory file (a lazy restore):
    /// then a discard maps fresh zero pages instead of MADV_DONTNEED, which would bring the
    /// file's old contents back.
    let fileBacked = Atomic<Bool>(false)
    /// While a migration runs: the pages the VMM itself wrote (devices' writes into guest RAM,
    /// balloon discards), one bitmap per region. KVM's dirty log sees only the guest's writes.
    let tracking = Atomic<Bool>(false)
    let vmmWrites = Locked<[[UInt64]]>([])

    /// Maps each `(guestStart, size)` range as zero-filled anonymous memory (MAP_NORESERVE).
    /// With `prefault`, every page is made resident up front (as a host that reserves a VM's
    /// memory at start would), so guest pages handed back through the balloon visibly leave RSS.
    /// `progress` (with `prefault`) hears the bytes made resident so far and the total, every
    /// 256 MiB: prefaulting gigabytes takes seconds to tens of seconds.
    /// With `mergeable`, every region is marked MADV_MERGEABLE: the kernel's KSM daemon may
    /// share its pages, copy-on-write, with identical pages of other mergeable memory.
    public init(ranges: [(start: UInt64, size: Int)], hugePages: Bool = false, prefault: Bool = false, mergeable: Bool = false,
                progress: ((_ done: Int, _ total: Int) -> Void)? = nil) throws(GuestMemoryError) {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let sorted = ranges.sorted { $0.start < $1.start }
        for (index, range) in sorted.enumerated() {
            guard range.size > 0 else { throw .invalidLayout("empty region at 0x\(String(range.start, radix: 16))") }
            guard range.start % UInt64(pageSize) == 0, range.size % pageSize == 0 else {
                throw .invalidLayout("region at 0x\(String(range.start, radix: 16)) is not page aligned")
            }
            if index > 0, sorted[index - 1].start + UInt64(sorted[index - 1].size) > range.start {
                throw .invalidLayout("regions overlap at 0x\(String(range.start, radix: 16))")
            }
        }
        var regions: [GuestMemoryRegion] = []
        var merging = mergeable
        let total = sorted.reduce(0) { $0 + $1.size }
        var done = 0
        for range in sorted {
            let mapping = mmap(nil, range.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let mapping, mapping != UnsafeMutableRawPointer(bitPattern: -1) else {
                let code = errno
                for region in regions { munmap(UnsafeMutableRawPointer(bitPattern: region.hostAddress), region.size) }
                throw .mapFailed(size: range.size, errno: code)
            }
            if hugePages { _ = madvise(mapping, range.size, MADV_HUGEPAGE) }
            if mergeable && madvise(mapping, range.size, Self.madviseMergeable) != 0 { merging = false }
            if prefault {
                let step = 256 << 20
                for offset in stride(from: 0, to: range.size, by: step) {
                    // Safe: offset < range.size, and the chunk ends inside the mapping just made.
                    Self.populate(mapping + offset, size: min(step, range.size - offset), pageSize: pageSize)
                    done += min(step, range.size - offset)
                    progress?(done, total)
                }
            }
            regions.append(GuestMemoryRegion(guestStart: range.start, size: range.size, hostAddress: UInt(bitPattern: mapping)))
        }
        self.regions = regions
        self.pageSize = pageSize
        isMergeable = merging
    }

    /// MADV_MERGEABLE (linux/mman.h).
    static let madviseMergeable: Int32 = 12

    /// MADV_POPULATE_WRITE (Linux 5.14) faults the range in writable; older kernels refuse it,
    /// and then one write per page does the same.
    private static func populate(_ mapping: UnsafeMutableRawPointer, size: Int, pageSize: Int) {
        let populateWrite: Int32 = 23
        if madvise(mapping, size, populateWrite) == 0 { return }
        // Safe: every offset is inside the mapping just created, which nothing else uses yet.
        for offset in stride(from: 0, to: size, by: pageSize) { mapping.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self) }
    }

    deinit {
        for region in regions { munmap(UnsafeMutableRawPointer(bitPattern: region.hostAddress), region.size) }
    }

    /// Total bytes of RAM.
    public var totalSize: Int { regions.reduce(0) { $0 + $1.size } }

    /// The region holding all of [address, address + length), if any.
    @inline(__always)
    public func region(containing address: UInt64, length: Int = 1) -> GuestMemoryRegion? {
        for region in regions where region.contains(address, length: length) { return region }
        return nil
    }

    /// True when [address, address + length) is RAM (inside a single region).
    public func contains(_ address: UInt64, length: Int) -> Bool {
        region(containing: address, length: length) != nil
    }

    /// The one place that turns a guest range into a host pointer: `body` gets a buffer covering
    /// exactly [address, address + length), after the range was checked to be inside one mapping.
    private func withHostBytes<R>(_ address: UInt64, _ length: Int,
                                  _ body: (UnsafeMutableRawBufferPointer) throws(GuestMemoryError) -> R) throws(GuestMemoryError) -> R {
        guard let region = region(containing: address, length: length) else {
            throw .outOfBounds(address: address, length: length)
        }
        // Safe: region.contains checked address..address+length lies inside the live mapping.
        let start = UnsafeMutableRawPointer(bitPattern: region.hostAddress)! + Int(address - region.guestStart)
        return try body(UnsafeMutableRawBufferPointer(start: start, count: length))
    }

    /// For a device that moves bytes between guest RAM and a host file (the share's read, write
    /// and directory listing): `body` gets the host bytes of [address, address + length), checked
    /// to lie inside one region, and may hand them to a system call that reads or fills them.
    /// `filling` notes the range as written by the VMM (a migration's dirty record).
    public func withRAM<R>(_ address: UInt64, length: Int, filling: Bool,
                           _ body: (UnsafeMutableRawBufferPointer) -> R) throws(GuestMemoryError) -> R {
        if filling { noteWrite(address, length) }
        return try withHostBytes(address, length) { buffer in body(buffer) }
    }

    /// Bytes of RAM from `address` to the end of its region (0 outside RAM): how far a string
    /// the guest hands over may run.
    public func bytesAvailable(from address: UInt64) -> Int {
        guard let region = region(containing: address) else { return 0 }
        return Int(region.guestEnd - address)
    }

    /// Copies `bytes` into guest memory at `address`.
    public func write(_ bytes: some Collection<UInt8>, at address: UInt64) throws(GuestMemoryError) {
        noteWrite(address, bytes.count)
        try withHostBytes(address, bytes.count) { buffer in
            // Arrays and their slices (every image and table) copy in one memcpy; an unspecialised
            // element-by-element walk cost a millisecond of start-up for a small kernel.
            let copied: Void? = bytes.withContiguousStorageIfAvailable { source in
                buffer.copyMemory(from: UnsafeRawBufferPointer(source))
            }
            if copied == nil { _ = buffer.initializeMemory(as: UInt8.self, from: bytes) }
        }
    }

    /// Reads `length` bytes at `address`.
    public func read(_ address: UInt64, length: Int) throws(GuestMemoryError) -> [UInt8] {
        try withHostBytes(address, length) { buffer in Array(buffer) }
    }

    /// Fills [address, address + length) with `byte`.
    public func fill(_ address: UInt64, length: Int, with byte: UInt8 = 0) throws(GuestMemoryError) {
        noteWrite(address, length)
        try withHostBytes(address, length) { buffer in
            if length > 0 { memset(buffer.baseAddress!, Int32(byte), length) }
        }
    }

    /// Reads a little-endian integer at `address` (any alignment).
    public func load<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: UInt64) throws(GuestMemoryError) -> T {
        try withHostBytes(address, MemoryLayout<T>.size) { buffer in
            T(littleEndian: buffer.loadUnaligned(as: T.self))
        }
    }

    /// Stores a little-endian integer at `address` (any alignment).
    public func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws(GuestMemoryError) {
        noteWrite(address, MemoryLayout<T>.size)
        try withHostBytes(address, MemoryLayout<T>.size) { buffer in
            buffer.storeBytes(of: value.littleEndian, as: T.self)
        }
    }

    /// Bytes of guest RAM the host currently holds in memory (pages the guest touched and that were
    /// not given back).
    public func residentBytes() -> Int {
        regions.reduce(0) { $0 + ((try? residentBytes($1.guestStart, length: $1.size)) ?? 0) }
    }

    /// Resident bytes of [address, address + length), which must lie in one region; counted with
    /// mincore(2) in bounded chunks.
    public func residentBytes(_ address: UInt64, length: Int) throws(GuestMemoryError) -> Int {
        let first = address / UInt64(pageSize) * UInt64(pageSize)
        let end = (address + UInt64(length) + UInt64(pageSize) - 1) / UInt64(pageSize) * UInt64(pageSize)
        let chunkPages = 16384
        var vector = [UInt8](repeating: 0, count: chunkPages)
        return try withHostBytes(first, Int(end - first)) { buffer in
            var resident = 0
            var offset = 0
            while offset < buffer.count {
                let count = min(buffer.count - offset, chunkPages * pageSize)
                // Safe: the span lies inside the checked buffer; the vector has a byte per page of it.
                let start = buffer.baseAddress! + offset
                if vector.withUnsafeMutableBufferPointer({ mincore(start, count, $0.baseAddress) }) == 0 {
                    resident += vector[0..<(count / pageSize)].reduce(0) { $0 + Int($1 & 1) } * pageSize
                }
                offset += count
            }
            return resident
        }
    }

    /// Returns [address, address + length) to the host (MADV_DONTNEED): the host frees the pages and
    /// the guest reads zeros there on next touch. The range must be page aligned and inside one region.
    public func discard(_ address: UInt64, length: Int) throws(GuestMemoryError) {
        guard address % UInt64(pageSize) == 0, length % pageSize == 0 else {
            throw .outOfBounds(address: address, length: length)
        }
        noteWrite(address, length)
        try withHostBytes(address, length) { buffer in
            guard length > 0 else { return }
            if fileBacked.load(ordering: .acquiring) {
                // Safe: the range was checked to lie inside one of our own mappings, which
                // MAP_FIXED replaces in place with zero-filled anonymous memory.
                _ = mmap(buffer.baseAddress!, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
                if isMergeable { _ = madvise(buffer.baseAddress!, length, Self.madviseMergeable) }
            } else {
                _ = madvise(buffer.baseAddress!, length, MADV_DONTNEED)
            }
        }
    }

    /// Takes the 4 KiB page at `address` away from the guest's view and gives it back (mprotect
    /// to none, then read-write): the contents stay, but the host's mapping is rebuilt, so the
    /// guest's next access to it faults in again (pc-testdev's page flush).
    public func remapPage(_ address: UInt64) throws(GuestMemoryError) {
        let page = 4096
        guard address % UInt64(page) == 0 else { throw .outOfBounds(address: address, length: page) }
        try withHostBytes(address, page) { buffer in
            _ = mprotect(buffer.baseAddress!, page, PROT_NONE)
            _ = mprotect(buffer.baseAddress!, page, PROT_READ | PROT_WRITE)
        }
    }
}
