import VMMCore

/// Balloon feature bits (virtio 1.x, section 5.5.3).
public enum BalloonFeature {
    public static let mustTellHost: UInt64 = 1 << 0
    public static let statsQueue: UInt64 = 1 << 1
    public static let deflateOnOOM: UInt64 = 1 << 2
}

/// Statistic tags of the balloon's stats queue.
public enum BalloonStatTag: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case swapIn = 0, swapOut, majorFaults, minorFaults, freeMemory, totalMemory, availableMemory, diskCaches,
         hugetlbAllocations, hugetlbFailures

    public var description: String {
        switch self {
        case .swapIn: return "swap_in"
        case .swapOut: return "swap_out"
        case .majorFaults: return "major_faults"
        case .minorFaults: return "minor_faults"
        case .freeMemory: return "free"
        case .totalMemory: return "total"
        case .availableMemory: return "available"
        case .diskCaches: return "caches"
        case .hugetlbAllocations: return "hugetlb_allocations"
        case .hugetlbFailures: return "hugetlb_failures"
        }
    }
}

/// The latest statistics the guest reported, with the monotonic time they arrived.
public struct BalloonStatistics: Sendable, Equatable {
    public var values: [BalloonStatTag: UInt64]
    public var receivedAt: UInt64

    public init(values: [BalloonStatTag: UInt64], receivedAt: UInt64) {
        self.values = values
        self.receivedAt = receivedAt
    }

    public subscript(tag: BalloonStatTag) -> UInt64? { values[tag] }
}

/// What the balloon has done, for `--stats`, the coordinator and tests.
public struct BalloonCounters: Sendable, Equatable {
    /// Pages the guest put in (inflate queue) and took out (deflate queue), valid PFNs only.
    public var inflated: UInt64 = 0
    public var deflated: UInt64 = 0
    /// Pages handed back to the host (MADV_DONTNEED), and how many discard calls that took.
    public var released: UInt64 = 0
    public var releaseCalls: UInt64 = 0
    /// PFNs outside guest RAM, buffers of the wrong shape, stats buffers of the wrong length.
    public var rejectedPFNs: UInt64 = 0
    public var rejectedBuffers: UInt64 = 0
    public var statsUpdates: UInt64 = 0
    public var statsRejected: UInt64 = 0
    /// Nanoseconds spent releasing memory to the host.
    public var releaseNanoseconds: UInt64 = 0

    public init() {}
}

/// virtio-balloon (device type 5): inflate, deflate and statistics queues, MUST_TELL_HOST and
/// DEFLATE_ON_OOM. Inflated pages are checked to be guest RAM, coalesced into ranges and released
/// to the host, so the VMM's resident memory really drops; deflated pages come back as zero pages
/// when the guest next touches them.
public struct BalloonModel: VirtioModel {
    public static var deviceType: UInt32 { 5 }
    public static let pageSize: UInt64 = 4096
    static let inflateQueue = 0, deflateQueue = 1, statsQueue = 2
    static let statEntrySize = 10
    /// The most statistics entries one buffer may carry (the spec defines 16 tags): a larger
    /// buffer is refused unread, so a chain covering all of RAM costs nothing.
    static let maximumStatEntries = 64
    /// The most page numbers one inflate or deflate chain may carry (Linux sends 256); a larger
    /// chain is refused unread, which bounds the work of one notification to the queue size times
    /// this.
    static let maximumPFNsPerChain = 4096

    public var offeredFeatures: UInt64 {
        BalloonFeature.mustTellHost | BalloonFeature.statsQueue | (deflateOnOOM ? BalloonFeature.deflateOnOOM : 0)
    }
    public var queueMaxSizes: [UInt16] { [256, 256, 256] }

    /// Pages the host wants the guest to give up (config num_pages).
    public var targetPages: UInt32
    /// Pages the guest says it has given up (config actual).
    public private(set) var actualPages: UInt32 = 0
    public private(set) var counters = BalloonCounters()
    public private(set) var statistics: BalloonStatistics?
    /// How often to ask for statistics (ns); 0 = never.
    public var statsInterval: UInt64
    /// Whether DEFLATE_ON_OOM is offered: the guest may take pages back from the balloon when it
    /// runs out of memory.
    public let deflateOnOOM: Bool
    /// The stats buffer the driver lent us, returned when we want fresh numbers.
    private var heldStatsHead: UInt16?
    private var lastStatsRequest: UInt64 = 0

    public init(targetPages: UInt32 = 0, statsInterval: UInt64 = 1_000_000_000, deflateOnOOM: Bool = true) {
        self.targetPages = targetPages
        self.statsInterval = statsInterval
        self.deflateOnOOM = deflateOnOOM
    }

    // MARK: config space: u32 num_pages, u32 actual

    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        let bytes = LittleEndian.bytes(targetPages) + LittleEndian.bytes(actualPages)
        guard offset < UInt64(bytes.count) else { return 0 }
        return LittleEndian.load(bytes, at: Int(offset), size: size)
    }

    public mutating func writeConfig(offset: UInt64, size: Int, value: UInt64, context: inout VirtioContext) {
        guard offset == 4, size == 4 else { return } // only `actual` is the driver's to write
        actualPages = UInt32(truncatingIfNeeded: value)
    }

    /// Asks the guest for a new balloon size.
    public mutating func setTarget(pages: UInt32, context: inout VirtioContext) {
        guard pages != targetPages else { return }
        targetPages = pages
        context.signalConfigChange()
    }

    public mutating func reset() {
        actualPages = 0
        heldStatsHead = nil
    }

    // MARK: queues

    public mutating func queueNotified(_ index: Int, context: inout VirtioContext) throws(VirtqueueError) {
        var used = false
        while let chain = try context.queues[index].popChain(memory: context.memory) {
            switch index {
            case Self.inflateQueue, Self.deflateQueue:
                handlePages(chain, inflate: index == Self.inflateQueue, memory: context.memory, now: context.now)
                try context.queues[index].pushUsed(head: chain.head, written: 0, memory: context.memory)
                used = true
            default:
                if let previous = heldStatsHead { // a driver should lend one buffer at a time: return the old one
                    try context.queues[index].pushUsed(head: previous, written: 0, memory: context.memory)
                    used = true
                }
                readStatistics(chain, memory: context.memory, now: context.now)
                heldStatsHead = chain.head
            }
        }
        if used { context.signalUsed() }
    }

    private mutating func handlePages(_ chain: DescriptorChain, inflate: Bool, memory: GuestMemory, now: UInt64) {
        var pages: [UInt64] = []
        let total = chain.readable.reduce(0) { $0 + Int($1.length) }
        guard total <= Self.maximumPFNsPerChain * 4 else {
            counters.rejectedBuffers += UInt64(chain.buffers.count)
            return
        }
        for buffer in chain.readable {
            guard buffer.length % 4 == 0, let bytes = try? memory.read(buffer.address, length: Int(buffer.length)) else {
                counters.rejectedBuffers += 1
                continue
            }
            for entry in stride(from: 0, to: bytes.count, by: 4) {
                let pfn = UInt64(bytes[entry]) | UInt64(bytes[entry + 1]) << 8 | UInt64(bytes[entry + 2]) << 16 | UInt64(bytes[entry + 3]) << 24
                let address = pfn * Self.pageSize
                if memory.contains(address, length: Int(Self.pageSize)) {
                    pages.append(address)
                } else {
                    counters.rejectedPFNs += 1
                }
            }
        }
        if !chain.writable.isEmpty { counters.rejectedBuffers += UInt64(chain.writable.count) }
        guard inflate else {
            counters.deflated += UInt64(pages.count)
            return // deflated pages are zero pages already; the guest may touch them again
        }
        counters.inflated += UInt64(pages.count)
        let start = SystemMonotonicClock().nanoseconds()
        for range in Self.coalesce(pages) {
            if (try? memory.discard(range.lowerBound, length: Int(range.upperBound - range.lowerBound))) != nil {
                counters.released += (range.upperBound - range.lowerBound) / Self.pageSize
                counters.releaseCalls += 1
            }
        }
        counters.releaseNanoseconds += SystemMonotonicClock().nanoseconds() - start
    }

    /// Page addresses sorted and merged into contiguous ranges inside one RAM region each.
    static func coalesce(_ pages: [UInt64]) -> [Range<UInt64>] {
        var ranges: [Range<UInt64>] = []
        for page in Set(pages).sorted() {
            if let last = ranges.last, last.upperBound == page {
                ranges[ranges.count - 1] = last.lowerBound..<(page + pageSize)
            } else {
                ranges.append(page..<(page + pageSize))
            }
        }
        return ranges
    }

    private mutating func readStatistics(_ chain: DescriptorChain, memory: GuestMemory, now: UInt64) {
        let total = chain.readable.reduce(0) { $0 + Int($1.length) }
        guard total > 0, total % Self.statEntrySize == 0, total <= Self.maximumStatEntries * Self.statEntrySize,
              chain.writable.isEmpty else {
            if total > 0 || !chain.writable.isEmpty { counters.statsRejected += 1 }
            return
        }
        var bytes: [UInt8] = []
        for buffer in chain.readable {
            guard let part = try? memory.read(buffer.address, length: Int(buffer.length)) else {
                counters.statsRejected += 1
                return
            }
            bytes += part
        }
        var values: [BalloonStatTag: UInt64] = [:]
        for entry in stride(from: 0, to: bytes.count, by: Self.statEntrySize) {
            let tag = UInt16(bytes[entry]) | UInt16(bytes[entry + 1]) << 8
            let value = LittleEndian.load(bytes, at: entry + 2)
            if let known = BalloonStatTag(rawValue: tag) { values[known] = value } // unknown tags are skipped
        }
        statistics = BalloonStatistics(values: values, receivedAt: now)
        counters.statsUpdates += 1
    }

    // MARK: statistics polling

    public func nextDeadline() -> UInt64? {
        guard statsInterval > 0, heldStatsHead != nil else { return nil }
        return lastStatsRequest.saturatingAdd(statsInterval)
    }

    public mutating func timerFired(now: UInt64, context: inout VirtioContext) throws(VirtqueueError) {
        guard let head = heldStatsHead, now >= lastStatsRequest.saturatingAdd(statsInterval) else { return }
        // A driver that took the queue down keeps no claim on the buffer it lent.
        guard context.queues[Self.statsQueue].ready else {
            heldStatsHead = nil
            return
        }
        heldStatsHead = nil
        lastStatsRequest = now
        try context.queues[Self.statsQueue].pushUsed(head: head, written: 0, memory: context.memory)
        context.signalUsed()
    }
}

extension BalloonModel: VirtioModelState {
    public func save(into out: inout StateWriter, now: UInt64) {
        out.u32(targetPages)
        out.u32(actualPages)
        for counter in [counters.inflated, counters.deflated, counters.released, counters.releaseCalls, counters.rejectedPFNs,
                        counters.rejectedBuffers, counters.statsUpdates, counters.statsRejected, counters.releaseNanoseconds] {
            out.u64(counter)
        }
        out.bool(statistics != nil)
        let values = (statistics?.values ?? [:]).sorted { $0.key.rawValue < $1.key.rawValue }
        out.u32(UInt32(values.count))
        for (tag, value) in values {
            out.u16(tag.rawValue)
            out.u64(value)
        }
        out.age(of: statistics?.receivedAt ?? 0, now: now)
        out.u64(statsInterval)
        out.bool(heldStatsHead != nil)
        out.u16(heldStatsHead ?? 0)
        out.age(of: lastStatsRequest, now: now)
    }

    /// `deflateOnOOM` is the configuration's (it decides the features offered): the snapshot's
    /// configuration section already matched it.
    public mutating func restore(from input: inout StateReader, now: UInt64) throws(StateError) {
        var model = BalloonModel(targetPages: 0, statsInterval: 0, deflateOnOOM: deflateOnOOM)
        model.targetPages = try input.u32("target pages")
        model.actualPages = try input.u32("actual pages")
        var counters = BalloonCounters()
        for path in [\BalloonCounters.inflated, \.deflated, \.released, \.releaseCalls, \.rejectedPFNs, \.rejectedBuffers,
                     \.statsUpdates, \.statsRejected, \.releaseNanoseconds] {
            counters[keyPath: path] = min(try input.u64("counter"), counterLimit)
        }
        model.counters = counters
        let hasStatistics = try input.bool("statistics present")
        var values: [BalloonStatTag: UInt64] = [:]
        for _ in 0..<(try input.count("statistics", maximum: BalloonStatTag.allCases.count)) {
            let raw = try input.u16("statistic tag")
            let value = try input.u64("statistic")
            guard let tag = BalloonStatTag(rawValue: raw) else { throw .invalid("balloon: statistic tag \(raw)") }
            values[tag] = value
        }
        let receivedAt = try input.age("statistics time", now: now)
        model.statistics = hasStatistics ? BalloonStatistics(values: values, receivedAt: receivedAt) : nil
        model.statsInterval = try input.u64("statistics interval")
        let held = try input.bool("held buffer present")
        let head = try input.u16("held buffer")
        guard head < queueMaxSizes[Self.statsQueue] else { throw .invalid("balloon: held buffer \(head)") }
        model.heldStatsHead = held ? head : nil
        model.lastStatsRequest = try input.age("last statistics request", now: now)
        self = model
    }
}
