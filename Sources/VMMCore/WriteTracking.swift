/// The VMM's own writes into guest RAM, recorded while a migration copies memory: the guest's
/// writes are in KVM's dirty log, but a device writing a used ring, or the balloon releasing a
/// page, reaches RAM through this process's mapping, which KVM never sees.
extension GuestMemory {
    /// Starts recording: from now on every write, fill, store and discard marks its pages.
    public func startTrackingWrites() {
        vmmWrites.withLock { bitmaps in bitmaps = regions.map { [UInt64](repeating: 0, count: ($0.size / pageSize + 63) / 64) } }
        tracking.store(true, ordering: .releasing)
    }

    public func stopTrackingWrites() {
        tracking.store(false, ordering: .releasing)
        vmmWrites.withLock { $0 = [] }
    }

    /// The pages written since the last call (or the start), one bitmap of 64-page words per
    /// region, and a fresh start.
    public func takeWrittenPages() -> [[UInt64]] {
        vmmWrites.withLock { bitmaps in
            defer { for index in bitmaps.indices { bitmaps[index] = [UInt64](repeating: 0, count: bitmaps[index].count) } }
            return bitmaps
        }
    }

    /// Marks [address, address + length) written, when recording. Ranges outside RAM are the
    /// access's own error; they mark nothing.
    @inline(__always)
    func noteWrite(_ address: UInt64, _ length: Int) {
        guard tracking.load(ordering: .relaxed), length > 0 else { return }
        guard let index = regions.firstIndex(where: { $0.contains(address, length: length) }) else { return }
        let region = regions[index]
        let first = Int((address - region.guestStart) / UInt64(pageSize))
        let last = Int((address - region.guestStart + UInt64(length) - 1) / UInt64(pageSize))
        vmmWrites.withLock { bitmaps in
            guard index < bitmaps.count else { return }
            for page in first...last { bitmaps[index][page / 64] |= 1 << UInt64(page % 64) }
        }
    }
}
