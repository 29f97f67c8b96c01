import Host
import Glibc

/// Reads a thread's scheduler accounting from /proc/self/task/TID: run and wait time (schedstat,
/// nanoseconds) and the CPU it last ran on (stat, field 39).
public struct ThreadSchedStat: Sendable, Equatable {
    public var runNanoseconds: UInt64
    public var waitNanoseconds: UInt64
    public var lastCPU: Int?

    public init(runNanoseconds: UInt64, waitNanoseconds: UInt64, lastCPU: Int?) {
        self.runNanoseconds = runNanoseconds
        self.waitNanoseconds = waitNanoseconds
        self.lastCPU = lastCPU
    }

    /// nil when the thread is gone or /proc is unavailable.
    public static func read(thread tid: Int32) -> ThreadSchedStat? {
        guard let schedstat = readTextFile("/proc/self/task/\(tid)/schedstat"),
              let stat = readTextFile("/proc/self/task/\(tid)/stat") else { return nil }
        return parse(schedstat: schedstat, stat: stat)
    }

    /// Parses "RUN WAIT SLICES" and a stat line whose second field is "(comm)" (may hold spaces).
    public static func parse(schedstat: String, stat: String) -> ThreadSchedStat? {
        let times = schedstat.split(separator: " ").compactMap { UInt64($0.trimmingCharacters()) }
        guard times.count >= 2 else { return nil }
        var lastCPU: Int?
        if let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After "(comm)" come fields 3, 4, ...; the processor is field 39.
            if fields.count >= 37 { lastCPU = Int(fields[36]) }
        }
        return ThreadSchedStat(runNanoseconds: times[0], waitNanoseconds: times[1], lastCPU: lastCPU)
    }

    /// Usage and demand in percent of one pCPU between two samples `wall` nanoseconds apart.
    public func usageAndDemand(since earlier: ThreadSchedStat, wallNanoseconds wall: UInt64) -> (usage: Double, demand: Double) {
        guard wall > 0 else { return (0, 0) }
        let run = Double(runNanoseconds &- earlier.runNanoseconds), wait = Double(waitNanoseconds &- earlier.waitNanoseconds)
        return (min(100, run / Double(wall) * 100), min(100, (run + wait) / Double(wall) * 100))
    }
}

extension Substring {
    func trimmingCharacters() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}

/// The host's online CPUs, from /sys/devices/system/cpu/online ("0-1", "0,2-3").
public func onlineHostCPUs() -> [Int] {
    guard let text = readTextFile("/sys/devices/system/cpu/online") else { return [0] }
    return parseCPUList(text)
}

/// Parses a kernel CPU list such as "0-3,6".
public func parseCPUList(_ text: String) -> [Int] {
    var cpus: [Int] = []
    for part in text.split(separator: ",") {
        let bounds = part.split(separator: "-").compactMap { Int($0.trimmingCharacters()) }
        if bounds.count == 2, bounds[0] <= bounds[1] { cpus += Array(bounds[0]...bounds[1]) }
        else if bounds.count == 1 { cpus.append(bounds[0]) }
    }
    return cpus
}

/// Per-CPU busy and total jiffies from /proc/stat, to measure each host CPU's whole load (every
/// process, the kernel's own work included), not only swiftvmm's vCPUs.
public struct HostCPUTimes: Sendable, Equatable {
    public var busy: [Int: UInt64]
    public var total: [Int: UInt64]
    /// Time the machine's own hypervisor ran something else while this CPU had work (steal):
    /// on a host that is itself a VM, the vCPUs placed here lose that much.
    public var steal: [Int: UInt64]

    public init(busy: [Int: UInt64], total: [Int: UInt64], steal: [Int: UInt64] = [:]) {
        self.busy = busy
        self.total = total
        self.steal = steal
    }

    public static func read() -> HostCPUTimes? { readTextFile("/proc/stat").map(parse(stat:)) }

    /// Parses the "cpuN user nice system idle iowait irq softirq steal ..." lines.
    public static func parse(stat: String) -> HostCPUTimes {
        var times = HostCPUTimes(busy: [:], total: [:])
        for line in stat.split(separator: "\n") where line.hasPrefix("cpu") && !line.hasPrefix("cpu ") {
            let fields = line.split(separator: " ")
            guard let cpu = Int(fields[0].dropFirst(3)) else { continue }
            let values = fields.dropFirst().compactMap { UInt64($0) }
            guard values.count >= 4 else { continue }
            let idle = values[3] + (values.count > 4 ? values[4] : 0) // idle + iowait
            let total = values.prefix(8).reduce(0, +) // guest time is already inside user
            times.total[cpu] = total
            times.busy[cpu] = total - idle
            times.steal[cpu] = values.count > 7 ? values[7] : 0
        }
        return times
    }

    /// Busy percent of each CPU between `earlier` and this sample.
    public func busyPercent(since earlier: HostCPUTimes) -> [Int: Double] {
        share(of: busy, since: earlier, earlierValues: earlier.busy)
    }

    /// Steal percent of each CPU between `earlier` and this sample.
    public func stealPercent(since earlier: HostCPUTimes) -> [Int: Double] {
        share(of: steal, since: earlier, earlierValues: earlier.steal)
    }

    private func share(of values: [Int: UInt64], since earlier: HostCPUTimes, earlierValues: [Int: UInt64]) -> [Int: Double] {
        var result: [Int: Double] = [:]
        for (cpu, total) in total {
            guard let before = earlier.total[cpu], total > before else { continue }
            result[cpu] = Double((values[cpu] ?? 0) &- (earlierValues[cpu] ?? 0)) / Double(total - before) * 100
        }
        return result
    }
}
