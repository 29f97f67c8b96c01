import VMMCore
/// One vCPU as the placement policies see it, over the last period.
public struct VCPUSample: Sendable, Equatable {
    /// "vm3", or "vm3/1" for a VM's second vCPU.
    public var name: String
    /// Share of a pCPU it ran, in percent (what the report shows).
    public var usage: Double
    /// Share of time it was runnable (running or waiting on a runqueue), in percent: what it would
    /// use if it had a pCPU to itself. Policies balance this; usage saturates under contention.
    public var demand: Double
    /// The pCPUs it may run on now.
    public var affinity: [Int]
    /// The pCPU it last ran on.
    public var lastCPU: Int?

    public init(name: String, usage: Double, demand: Double, affinity: [Int], lastCPU: Int? = nil) {
        self.name = name
        self.usage = usage
        self.demand = demand
        self.affinity = affinity
        self.lastCPU = lastCPU
    }

    /// The single pCPU it is pinned to, if it is pinned to one.
    public var pinnedCPU: Int? { affinity.count == 1 ? affinity[0] : nil }
}

/// A placement decision: vCPU index (into the samples) -> the pCPU to pin it to.
public typealias Pinning = [Int: Int]

/// A way of placing vCPUs on pCPUs, called once per period.
public protocol PlacementPolicy: Sendable {
    var name: String { get }
    /// Returns only the vCPUs to (re)pin; an empty result means leave everything alone.
    mutating func decide(_ vcpus: [VCPUSample], hostCPUs: [Int]) -> Pinning
}

/// Leaves every vCPU where it is.
public struct NoPlacement: PlacementPolicy {
    public init() {}
    public var name: String { "none" }
    public mutating func decide(_ vcpus: [VCPUSample], hostCPUs: [Int]) -> Pinning { [:] }
}

/// The naive baseline: vCPU i goes to pCPU i mod P (so after the first round nothing moves).
/// It balances counts, not load.
public struct RoundRobinPlacement: PlacementPolicy {
    public init() {}
    public var name: String { "round-robin" }

    public mutating func decide(_ vcpus: [VCPUSample], hostCPUs: [Int]) -> Pinning {
        guard !hostCPUs.isEmpty else { return [:] }
        var pinning: Pinning = [:]
        for index in vcpus.indices {
            let cpu = hostCPUs[index % hostCPUs.count]
            if vcpus[index].pinnedCPU != cpu { pinning[index] = cpu }
        }
        return pinning
    }
}

/// Balances per-pCPU demand, smoothed per vCPU across periods (an exponential moving average with
/// weight `smoothing` on the newest period) so that period-to-period noise does not move anything.
/// vCPUs not pinned to a single pCPU are placed first, heaviest first,
/// each on the least loaded pCPU (preferring the one it last ran on when loads tie). Then, while
/// the most and least loaded pCPUs differ by more than `threshold` percentage points, it makes the
/// single move (or, failing that, swap) that narrows the gap most, up to `maxMoves` a period. A
/// system within the threshold is left alone, so a balanced host sees no churn.
public struct LoadAwarePlacement: PlacementPolicy {
    public var threshold: Double
    public var maxMoves: Int
    public var smoothing: Double
    private var smoothed: [String: Double] = [:]

    public init(threshold: Double = 20, maxMoves: Int = 4, smoothing: Double = 0.5) {
        self.threshold = threshold
        self.maxMoves = maxMoves
        self.smoothing = smoothing
    }

    public var name: String { "load-aware" }

    public mutating func decide(_ samples: [VCPUSample], hostCPUs: [Int]) -> Pinning {
        guard !hostCPUs.isEmpty, !samples.isEmpty else { return [:] }
        var vcpus = samples
        for index in vcpus.indices {
            let name = vcpus[index].name
            let value = smoothed[name].map { $0 + smoothing * (vcpus[index].demand - $0) } ?? vcpus[index].demand
            smoothed[name] = value
            vcpus[index].demand = value
        }
        var assignment: [Int?] = vcpus.map { sample in sample.pinnedCPU.flatMap { hostCPUs.contains($0) ? $0 : nil } }
        var load = Dictionary(uniqueKeysWithValues: hostCPUs.map { ($0, 0.0) })
        for (index, cpu) in assignment.enumerated() { if let cpu { load[cpu, default: 0] += vcpus[index].demand } }
        var pinning: Pinning = [:]

        // Unpinned vCPUs: longest-processing-time first onto the least loaded pCPU.
        let floating = assignment.indices.filter { assignment[$0] == nil }.sorted { vcpus[$0].demand > vcpus[$1].demand }
        for index in floating {
            let lowest = load.values.min() ?? 0
            let candidates = hostCPUs.filter { load[$0]! <= lowest + 1e-9 }
            let cpu = candidates.first { $0 == vcpus[index].lastCPU } ?? candidates[0]
            assignment[index] = cpu
            load[cpu]! += vcpus[index].demand
            pinning[index] = cpu
        }

        // Pinned vCPUs: greedy moves while the spread is above the threshold.
        for _ in 0..<maxMoves {
            let ordered = hostCPUs.sorted { load[$0]! > load[$1]! }
            let high = ordered.first!, low = ordered.last!
            let gap = load[high]! - load[low]!
            guard gap > threshold else { break }
            func spreadAfter(moving delta: Double) -> Double { // new gap between these two pCPUs
                abs((load[high]! - delta) - (load[low]! + delta))
            }
            var best: (gain: Double, move: (Int, Int?))? = nil
            for a in assignment.indices where assignment[a] == high {
                let gain = gap - spreadAfter(moving: vcpus[a].demand)
                if gain > (best?.gain ?? 1e-6) { best = (gain, (a, nil)) }
                for b in assignment.indices where assignment[b] == low {
                    let swapGain = gap - spreadAfter(moving: vcpus[a].demand - vcpus[b].demand)
                    // A swap is two moves: take it only when it beats the best single move clearly.
                    if swapGain > (best?.gain ?? 1e-6) + threshold / 2 { best = (swapGain, (a, b)) }
                }
            }
            guard let (_, (a, b)) = best else { break }
            assignment[a] = low
            load[high]! -= vcpus[a].demand
            load[low]! += vcpus[a].demand
            pinning[a] = low
            if let b {
                assignment[b] = high
                load[low]! -= vcpus[b].demand
                load[high]! += vcpus[b].demand
                pinning[b] = high
            }
        }
        return pinning.filter { vcpus[$0.key].pinnedCPU != $0.value }
    }
}

/// Per-pCPU view of a period, for reports: usage (sum of its vCPUs' usage) and who is on it.
public struct PCPUReport: Sendable, Equatable {
    public var cpu: Int
    public var usage: Double
    public var demand: Double
    public var vms: [String]

    public init(cpu: Int, usage: Double, demand: Double, vms: [String]) {
        self.cpu = cpu
        self.usage = usage
        self.demand = demand
        self.vms = vms
    }

    /// `0 - usage: 50.0 | mapping ['vm1', 'vm5']`, the line the scenarios use.
    public var line: String {
        "\(cpu) - usage: \(formatOneDecimal(usage)) | mapping [\(vms.map { "'\($0)'" }.joined(separator: ", "))]"
    }

    /// Groups vCPUs by the pCPU they are pinned to (or last ran on when not pinned).
    public static func build(_ vcpus: [VCPUSample], hostCPUs: [Int]) -> [PCPUReport] {
        hostCPUs.map { cpu in
            let here = vcpus.filter { ($0.pinnedCPU ?? $0.lastCPU) == cpu }
            return PCPUReport(cpu: cpu, usage: here.reduce(0) { $0 + $1.usage },
                              demand: here.reduce(0) { $0 + $1.demand }, vms: here.map(\.name))
        }
    }
}

