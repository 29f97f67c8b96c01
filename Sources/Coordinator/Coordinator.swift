import VMMCore

/// One VM's memory as the coordinator sees it at the end of a period.
public struct VMMemorySample: Sendable, Equatable {
    public var name: String
    /// Guest RAM (the most the VM can have).
    public var maximumBytes: UInt64
    /// What the balloon holds now (the guest's `actual`).
    public var balloonBytes: UInt64
    /// Free memory the guest last reported through the balloon's statistics; nil before any.
    public var unusedBytes: UInt64?
    /// With page sharing: resident guest RAM backed by shared pages (KSM, the zero page) and by
    /// pages of the VM's own; nil without it.
    public var sharedBytes: UInt64?
    public var privateBytes: UInt64?

    public init(name: String, maximumBytes: UInt64, balloonBytes: UInt64, unusedBytes: UInt64?,
                sharedBytes: UInt64? = nil, privateBytes: UInt64? = nil) {
        self.name = name
        self.maximumBytes = maximumBytes
        self.balloonBytes = balloonBytes
        self.unusedBytes = unusedBytes
        self.sharedBytes = sharedBytes
        self.privateBytes = privateBytes
    }

    /// Of `bytes` this VM gives up, what the host gets back: a page the balloon takes that KSM
    /// shares with other mappings frees nothing while they keep it, so only the VM's private
    /// share of its resident memory counts (all of it without page sharing).
    public func hostGain(of bytes: UInt64) -> UInt64 {
        guard let shared = sharedBytes, let own = privateBytes, shared > 0 else { return bytes }
        let resident = shared.saturatingAdd(own)
        // bytes * own / resident without overflow: own <= resident, both at most guest RAM.
        return UInt64((Double(bytes) * Double(own) / Double(resident)).rounded(.down))
    }

    /// Memory the VM may use: its RAM minus the balloon.
    public var actualBytes: UInt64 { maximumBytes - min(balloonBytes, maximumBytes) }

    /// `Memory (VM: vm1) Actual [512.0], Unused: [257.2]` (MiB), the line the scenarios use;
    /// with page sharing it ends `, Shared: [60.1]`.
    public var line: String {
        let unused = unusedBytes.map { mebibytes($0) } ?? "?"
        let shared = sharedBytes.map { ", Shared: [\(mebibytes($0))]" } ?? ""
        return "Memory (VM: \(name)) Actual [\(mebibytes(actualBytes))], Unused: [\(unused)]\(shared)"
    }
}

/// How the coordinator judges and moves memory.
public struct CoordinatorSettings: Sendable, Equatable {
    /// A VM with less free memory than this gets more.
    public var lowWatermark: UInt64
    /// A VM with more free memory than this gives some back.
    public var highWatermark: UInt64
    /// Free memory a VM keeps after giving some back: never squeezed below used + floor.
    public var floor: UInt64
    /// Most memory one VM gains or loses in one period.
    public var step: UInt64
    /// Memory the host keeps for itself: VMs only grow from what is available beyond it.
    public var hostReserve: UInt64

    public static let mib: UInt64 = 1 << 20

    public init(lowWatermark: UInt64 = 96 * mib, highWatermark: UInt64 = 192 * mib, floor: UInt64 = 128 * mib,
                step: UInt64 = 128 * mib, hostReserve: UInt64 = 1 << 30) {
        self.lowWatermark = lowWatermark
        self.highWatermark = highWatermark
        self.floor = floor
        self.step = step
        self.hostReserve = hostReserve
    }
}

/// Memory coordination across VMs through their balloons: grow VMs that run short, take from VMs
/// with memory to spare, in bounded steps, within what the host can spare.
public struct MemoryCoordinator: Sendable {
    public var settings: CoordinatorSettings
    static let page: UInt64 = 4096

    public init(settings: CoordinatorSettings = CoordinatorSettings()) {
        self.settings = settings
    }

    /// New balloon targets (bytes) for the VMs whose target should change, by index.
    /// `hostAvailableBytes` is the host's MemAvailable.
    public func decide(_ vms: [VMMemorySample], hostAvailableBytes: UInt64) -> [Int: UInt64] {
        var targets: [Int: UInt64] = [:]
        var returned: UInt64 = 0
        // Donors: free memory above the high watermark goes back to the host, keeping used + floor.
        for (index, vm) in vms.enumerated() {
            guard let free = vm.unusedBytes, free > settings.highWatermark else { continue }
            let used = vm.actualBytes - min(free, vm.actualBytes)
            let keep = used.saturatingAdd(settings.floor)
            guard vm.actualBytes > keep else { continue }
            let give = pages(min(settings.step, free - settings.highWatermark, vm.actualBytes - keep))
            guard give > 0 else { continue }
            targets[index] = vm.balloonBytes.saturatingAdd(give)
            returned = returned.saturatingAdd(vm.hostGain(of: give))
        }
        // Needy VMs, shortest of free memory first, are topped up towards the high watermark (so a
        // steady consumer does not fall short again next period), from what donors returned and
        // what the host can spare beyond its reserve.
        var budget = returned.saturatingAdd(hostAvailableBytes.saturatingSubtract(settings.hostReserve))
        let needy = vms.indices.filter { index in
            guard let free = vms[index].unusedBytes else { return false }
            return free < settings.lowWatermark && vms[index].balloonBytes > 0
        }.sorted { (vms[$0].unusedBytes ?? 0) < (vms[$1].unusedBytes ?? 0) }
        for index in needy {
            let want = settings.highWatermark.saturatingSubtract(vms[index].unusedBytes ?? 0)
            let grow = pages(min(settings.step, want, vms[index].balloonBytes, budget))
            guard grow > 0 else { break }
            targets[index] = vms[index].balloonBytes - grow
            budget -= grow
        }
        return targets
    }

    private func pages(_ bytes: UInt64) -> UInt64 { bytes / Self.page * Self.page }
}

/// "257.2" for a byte count: MiB with one decimal.
public func mebibytes(_ bytes: UInt64) -> String {
    // Whole MiB and the remainder apart, so a guest-reported size near 2^64 cannot overflow.
    let tenths = (bytes >> 20) * 10 + ((bytes & 0xF_FFFF) * 10 + (1 << 19)) >> 20
    return "\(tenths / 10).\(tenths % 10)"
}

/// MemAvailable from /proc/meminfo, in bytes; nil when it cannot be read.
public func hostMemoryAvailable(meminfo: String) -> UInt64? { meminfoBytes("MemAvailable:", meminfo) }

/// MemTotal from /proc/meminfo, in bytes; nil when it cannot be read.
public func hostMemoryTotal(meminfo: String) -> UInt64? { meminfoBytes("MemTotal:", meminfo) }

private func meminfoBytes(_ key: String, _ meminfo: String) -> UInt64? {
    for line in meminfo.split(separator: "\n") where line.hasPrefix(key) {
        let parts = line.split(separator: " ")
        if parts.count >= 2, let kib = UInt64(parts[1]) { return kib.saturatingMultiply(1024) }
    }
    return nil
}
