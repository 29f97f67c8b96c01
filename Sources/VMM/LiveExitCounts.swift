import Synchronization

/// A vCPU's exit counts by reason, readable by any thread at any moment (the API's live
/// statistics): the vCPU thread adds to them with one relaxed atomic add per exit, beside the
/// plain counters it keeps for `--stats`. Never stale, unlike the snapshots the runner publishes.
public final class LiveExitCounts: Sendable {
    public typealias Reason = ExitStatistics.Reason
    private static let capacity = 16
    private let counts: InlineArray<16, Atomic<UInt64>>

    public init() {
        precondition(Reason.allCases.count <= Self.capacity, "LiveExitCounts holds at most 16 exit kinds")
        counts = InlineArray { _ in Atomic(0) }
    }

    @inline(__always)
    func record(_ reason: Reason) {
        counts[reason.index].add(1, ordering: .relaxed)
    }

    /// Each reason's count so far.
    public func snapshot() -> [Reason: UInt64] {
        var result: [Reason: UInt64] = [:]
        for reason in Reason.allCases { result[reason] = counts[reason.index].load(ordering: .relaxed) }
        return result
    }
}
