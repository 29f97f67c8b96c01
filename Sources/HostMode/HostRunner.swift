import VMM
import Host
import Coordinator
import FoundationEssentials
import Glibc
import KVM
import Logging
import Placement
import Synchronization
import VMMCore

/// One period of host mode, as logged (JSON lines) and plotted.
public struct PeriodRecord: Codable, Sendable {
    public struct PCPU: Codable, Sendable {
        public var cpu: Int
        /// Sum of the usage of the vCPUs on it (what the report line shows).
        public var usage: Double
        public var demand: Double
        /// The CPU's whole busy share from /proc/stat: every process and the kernel's work.
        public var hostBusy: Double?
        /// The CPU's steal share from /proc/stat (this host is itself a VM whose hypervisor ran
        /// something else): vCPUs placed here lost that much usage through no decision of ours.
        public var hostSteal: Double?
        public var vms: [String]
    }

    public struct VMRecord: Codable, Sendable {
        public var name: String
        public var usage: Double
        public var demand: Double
        public var cpus: [Int]
        public var actualMiB: Double
        public var unusedMiB: Double?
        public var balloonMiB: Double
        public var balloonTargetMiB: Double
        /// With page sharing: resident guest RAM backed by shared pages (KSM, the zero page),
        /// and by the VM's own.
        public var sharedMiB: Double?
        public var privateMiB: Double?
        /// Per vCPU, since it started: time runnable but waiting for a host CPU (schedstat's
        /// run_delay), and the steal the guest's steal-time record shows (nil: not enabled).
        public var runDelayMs: [Double]?
        public var guestStealMs: [Double?]?
    }

    public var period: Int
    public var seconds: Double
    public var moves: Int
    /// The swiftvmm process's anonymous resident memory (guest RAM included), MiB.
    public var rssAnonMiB: Double?
    /// Its proportional anonymous memory (Pss_Anon): a page KSM shares among N mappings counts
    /// 1/N in each, so what sharing saves shows here (RssAnon counts it in every mapping).
    public var pssAnonMiB: Double?
    /// CPU time the controller spent on this round (sampling, deciding, acting), milliseconds.
    public var controllerCPUMilliseconds: Double?
    public var pcpus: [PCPU]
    public var vms: [VMRecord]
}

/// How host mode ended.
public struct HostOutcome: Sendable {
    public var outcomes: [String: RunOutcome]
    public var records: [PeriodRecord]

    /// A VM failed when KVM or the VMM stopped it, or it reported failure through the debug port
    /// (anything but status 1, the "passed" value).
    public var failedVMs: [String] {
        outcomes.filter { _, outcome in
            switch outcome {
            case .halted, .poweredOff, .reboot, .stopped, .signal, .migrated: return false
            case .debugExit(let status): return status & 0xFF != 1
            case .guestFailure, .vmmFailure: return true
            }
        }.keys.sorted()
    }
}

/// Runs many VMs in this process with a controller that, every period, samples vCPU load and
/// memory, re-pins vCPUs and resizes balloons.
public final class HostRunner: @unchecked Sendable {
    // @unchecked: `samples`, `affinity`, `records` and `keepRecords` are touched only by the controller thread
    // while it runs and by run() before it starts and after it has stopped.
    public let config: HostConfig
    let machines: [(vm: HostConfig.VM, machine: Machine)]
    let hostCPUs: [Int]
    let logger: Logger
    private var placement: any PlacementPolicy
    private let coordinator: MemoryCoordinator?
    private var previous: [Int32: (stat: ThreadSchedStat, time: UInt64)] = [:]
    private var previousCPUTimes = HostCPUTimes.read()
    private var affinity: [[[Int]]] = []
    private var records: [PeriodRecord] = []
    private var keepRecords = false
    private let stopping = Atomic<Bool>(false)
    private let wake = ConditionLock()
    private let latestRecord = Locked<PeriodRecord?>(nil)

    /// The last period's record (nil until one has ended): what the API's GET /swiftvmm/host shows.
    public var latest: PeriodRecord? { latestRecord.withLock { $0 } }

    /// The machine of the VM named `name`.
    public func machine(named name: String) -> Machine? { machines.first { $0.vm.name == name }?.machine }

    /// The VMs' names, in config order.
    public var vmNames: [String] { machines.map(\.vm.name) }

    /// Whether the memory coordinator sets the balloons (then nobody else may).
    public var coordinatesMemory: Bool { coordinator != nil }

    public init(config: HostConfig, logger: Logger) throws(VMMError) {
        self.config = config
        self.logger = logger
        if let total = readTextFile("/proc/meminfo").flatMap(hostMemoryTotal(meminfo:)) {
            try config.checkAdmission(hostMemoryBytes: total)
        }
        hostCPUs = config.effectiveHostCPUs
        placement = (config.placement ?? .loadAware).policy()
        let anyBalloon = config.vms.contains { $0.balloon ?? false }
        if anyBalloon && (config.memoryPolicy ?? .coordinator) == .coordinator {
            var settings = CoordinatorSettings()
            if let values = config.coordinator {
                settings.lowWatermark = values.lowWatermark?.bytes ?? settings.lowWatermark
                settings.highWatermark = values.highWatermark?.bytes ?? settings.highWatermark
                settings.floor = values.floor?.bytes ?? settings.floor
                settings.step = values.step?.bytes ?? settings.step
            }
            settings.hostReserve = config.hostReserve?.bytes ?? settings.hostReserve
            coordinator = MemoryCoordinator(settings: settings)
        } else {
            coordinator = nil
        }
        var machines: [(HostConfig.VM, Machine)] = []
        for vm in config.vms {
            do {
                machines.append((vm, try Machine(config: try config.machineConfig(vm), logger: logger)))
            } catch {
                throw .inVM(name: vm.name, error)
            }
        }
        self.machines = machines
        if let sharing = machines.first(where: { $0.1.config.pageSharing })?.1 {
            Machine.announcePageSharing(mergeable: sharing.memory.isMergeable, logger: logger)
        }
    }

    /// Runs every VM until all end, `duration` seconds pass, or SIGINT/SIGTERM/SIGHUP; `report`
    /// gets each period's lines, `log` each period's JSON line. The outcome carries every
    /// period's record only with `keepRecords` (`--plot`): kept otherwise, they would grow the
    /// VMM by about 1.6 KiB a period for as long as host mode runs (measured by make soak).
    public func run(duration: Double?, keepRecords: Bool = false, report: @escaping @Sendable (String) -> Void,
                    log: (@Sendable (String) -> Void)? = nil) -> HostOutcome {
        self.keepRecords = keepRecords
        SignalWaiter.blockInCallingThread() // every thread started below inherits this

        let outcomes = Locked<[String: RunOutcome]>([:])
        var threads: [HostThreadHandle] = []
        for (vm, machine) in machines {
            let name = vm.name
            if let thread = try? HostThreadHandle.spawn(.vmm, name: "vm-" + name, { [self] in
                let outcome = machine.run(handleSignals: false)
                outcomes.withLock { $0[name] = outcome }
                wake.withLock { wake.broadcast() }
            }) { threads.append(thread) }
        }
        let signals = try? SignalWaiter { [self] received in
            logger.notice("signal \(received): stopping every VM")
            stopping.store(true, ordering: .releasing)
            wake.withLock { wake.broadcast() }
            return .stop
        }
        waitForVCPUThreads()
        applyInitialAffinity()
        let controller = try? HostThreadHandle.spawn(.controller, name: "controller") { [self] in controllerLoop(report: report, log: log) }
        if controller == nil { logger.error("cannot start the controller thread; the VMs run unmanaged") }

        let deadline = duration.map { SystemMonotonicClock().nanoseconds().saturatingAdd(UInt64(saturating: $0 * 1e9)) }
        wake.withLock {
            while !stopping.load(ordering: .acquiring) && outcomes.withLock({ $0.count }) < machines.count {
                if let deadline, SystemMonotonicClock().nanoseconds() >= deadline { break }
                wake.wait(until: deadline)
            }
        }
        stopping.store(true, ordering: .releasing)
        wake.withLock { wake.broadcast() }
        controller?.join()
        for (_, machine) in machines { machine.stop() }
        for thread in threads { thread.join() }
        signals?.stop()
        return HostOutcome(outcomes: outcomes.withLock { $0 }, records: records)
    }

    private func waitForVCPUThreads() {
        for _ in 0..<400 {
            if machines.allSatisfy({ $0.machine.vcpuThreadIDs().allSatisfy { $0 != nil } }) { return }
            usleep(5000)
        }
        logger.warning("some vCPU threads did not start within 2 s")
    }

    private func applyInitialAffinity() {
        affinity = machines.map { vm, machine in
            (0..<machine.config.cpus).map { index in vm.affinity?[index] ?? hostCPUs }
        }
        for (vmIndex, (_, machine)) in machines.enumerated() {
            for (index, tid) in machine.vcpuThreadIDs().enumerated() {
                guard let tid else { continue }
                do { try HostThread.setAffinity(thread: tid, cpus: affinity[vmIndex][index]) } catch {
                    logger.warning("pinning \(machines[vmIndex].vm.name) vCPU \(index): \(error)")
                }
            }
        }
    }

    // MARK: the controller

    private func controllerLoop(report: @Sendable (String) -> Void, log: (@Sendable (String) -> Void)?) {
        let period = UInt64((config.period ?? 1) * 1e9)
        let start = SystemMonotonicClock().nanoseconds()
        _ = sample() // the baseline for the first period's deltas
        var round = 0
        while !stopping.load(ordering: .acquiring) {
            let next = start + UInt64(round + 1) * period
            wake.withLock {
                while !stopping.load(ordering: .acquiring) && SystemMonotonicClock().nanoseconds() < next { wake.wait(until: next) }
            }
            if stopping.load(ordering: .acquiring) { break }
            round += 1
            let cpuBefore = Clocks.threadCPUNanoseconds()
            var record = controlRound(round, seconds: Double(SystemMonotonicClock().nanoseconds() - start) / 1e9)
            record.controllerCPUMilliseconds = Double(Clocks.threadCPUNanoseconds() - cpuBefore) / 1e6
            if keepRecords { records.append(record) }
            latestRecord.withLock { [record] in $0 = record }
            report(reportLines(record))
            if let log, let data = try? JSONEncoder().encode(record) { log(String(decoding: data, as: UTF8.self)) }
        }
    }

    /// One round: sample, place, coordinate memory; returns what it saw and did.
    func controlRound(_ round: Int, seconds: Double) -> PeriodRecord {
        let (vcpus, complete) = sample()
        var flat = vcpus.flatMap { $0 }
        // Decide only on a full period of data for every vCPU (not on a thread's first sample).
        let pinning = complete ? placement.decide(flat, hostCPUs: hostCPUs) : [:]
        applyPlacement(pinning, vcpus: vcpus, flat: &flat)
        let statuses = machines.map { $0.machine.balloon?.status() }
        let memory = machines.enumerated().map { index, entry -> VMMemorySample in
            let (vm, machine) = entry
            let status = statuses[index]
            let sharing = machine.pageSharing() // 0.5 ms of CPU per 64 MiB VM
            return VMMemorySample(name: vm.name, maximumBytes: machine.config.memorySize, balloonBytes: status?.actualBytes ?? 0,
                                  unusedBytes: status?.statistics?[.freeMemory], sharedBytes: sharing?.sharedBytes,
                                  privateBytes: sharing?.privateBytes)
        }
        let targets = coordinateMemory(memory)
        let mib = Double(1 << 20)
        let vmRecords = machines.enumerated().map { index, entry -> PeriodRecord.VMRecord in
            let samples = vcpus[index]
            let target = targets[index] ?? statuses[index]?.targetBytes ?? 0
            return PeriodRecord.VMRecord(name: entry.vm.name, usage: samples.reduce(0) { $0 + $1.usage },
                                         demand: samples.reduce(0) { $0 + $1.demand }, cpus: affinity[index].flatMap { $0 },
                                         actualMiB: Double(memory[index].actualBytes) / mib,
                                         unusedMiB: memory[index].unusedBytes.map { Double($0) / mib },
                                         balloonMiB: Double(memory[index].balloonBytes) / mib, balloonTargetMiB: Double(target) / mib,
                                         sharedMiB: memory[index].sharedBytes.map { Double($0) / mib },
                                         privateMiB: memory[index].privateBytes.map { Double($0) / mib },
                                         // run_delay as this round's sample read it
                                         runDelayMs: entry.machine.vcpuThreadIDs().map { tid in
                                             Double(tid.flatMap { previous[$0]?.stat.waitNanoseconds } ?? 0) / 1e6
                                         },
                                         guestStealMs: entry.machine.guestStealNanoseconds().map { $0.map { Double($0) / 1e6 } })
        }
        let cpuTimes = HostCPUTimes.read()
        let hostBusy = cpuTimes.flatMap { now in previousCPUTimes.map { now.busyPercent(since: $0) } } ?? [:]
        let hostSteal = cpuTimes.flatMap { now in previousCPUTimes.map { now.stealPercent(since: $0) } } ?? [:]
        previousCPUTimes = cpuTimes
        let pcpus = PCPUReport.build(flat, hostCPUs: hostCPUs).map {
            PeriodRecord.PCPU(cpu: $0.cpu, usage: $0.usage, demand: $0.demand, hostBusy: hostBusy[$0.cpu],
                              hostSteal: hostSteal[$0.cpu], vms: $0.vms)
        }
        return PeriodRecord(period: round, seconds: seconds, moves: pinning.count,
                            rssAnonMiB: ProcessMemory.current().map { Double($0.anonymous) / 1024 },
                            pssAnonMiB: ProcessMemory.proportionalAnonymousKiB().map { Double($0) / 1024 }, pcpus: pcpus, vms: vmRecords)
    }

    /// Pins each vCPU the placement policy moved (indexes into `flat`, the VMs' vCPUs in order).
    private func applyPlacement(_ pinning: [Int: Int], vcpus: [[VCPUSample]], flat: inout [VCPUSample]) {
        let owners = vcpus.enumerated().flatMap { vmIndex, list in list.indices.map { (vm: vmIndex, vcpu: $0) } }
        for (flatIndex, cpu) in pinning where owners.indices.contains(flatIndex) {
            let (vmIndex, index) = owners[flatIndex]
            guard let tid = machines[vmIndex].machine.vcpuThreadIDs()[index] else { continue }
            do {
                try HostThread.setAffinity(thread: tid, cpus: [cpu])
                logger.info("placement: \(flat[flatIndex].name) -> CPU \(cpu)")
                affinity[vmIndex][index] = [cpu]
                flat[flatIndex].affinity = [cpu]
            } catch {
                logger.warning("re-pinning \(flat[flatIndex].name) to CPU \(cpu): \(error)")
            }
        }
    }

    /// The memory coordinator's new balloon targets (by VM index), already set on the balloons.
    private func coordinateMemory(_ memory: [VMMemorySample]) -> [Int: UInt64] {
        guard let coordinator else { return [:] }
        let available = readTextFile("/proc/meminfo").flatMap(hostMemoryAvailable(meminfo:)) ?? 0
        let targets = coordinator.decide(memory, hostAvailableBytes: available)
        for (index, bytes) in targets.sorted(by: { $0.key < $1.key }) where machines.indices.contains(index) {
            machines[index].machine.balloon?.setTarget(bytes: bytes)
            logger.info("coordinator: \(machines[index].vm.name) balloon \(mebibytes(memory[index].balloonBytes)) -> \(mebibytes(bytes)) MiB (guest free \(memory[index].unusedBytes.map(mebibytes) ?? "?") MiB)")
        }
        return targets
    }

    /// Usage and demand of every vCPU since the previous call; `complete` is false when some vCPU
    /// had no earlier sample to measure against.
    private func sample() -> (vcpus: [[VCPUSample]], complete: Bool) {
        let now = SystemMonotonicClock().nanoseconds()
        var complete = true
        let vcpus = machines.enumerated().map { vmIndex, entry in
            let tids = entry.machine.vcpuThreadIDs()
            return tids.enumerated().map { index, tid in
                let name = tids.count == 1 ? entry.vm.name : "\(entry.vm.name)/\(index)"
                var sample = VCPUSample(name: name, usage: 0, demand: 0, affinity: affinity.isEmpty ? hostCPUs : affinity[vmIndex][index])
                guard let tid, let stat = ThreadSchedStat.read(thread: tid) else {
                    complete = false
                    return sample
                }
                if let earlier = previous[tid] {
                    (sample.usage, sample.demand) = stat.usageAndDemand(since: earlier.stat, wallNanoseconds: now - earlier.time)
                } else {
                    complete = false
                }
                sample.lastCPU = stat.lastCPU
                previous[tid] = (stat, now)
                return sample
            }
        }
        return (vcpus, complete)
    }

    /// The per-pCPU and per-VM lines of one period.
    func reportLines(_ record: PeriodRecord) -> String {
        var lines = ["--- period \(record.period) (\(formatOneDecimal(record.seconds)) s, \(record.moves) moves)"]
        lines += record.pcpus.map { PCPUReport(cpu: $0.cpu, usage: $0.usage, demand: $0.demand, vms: $0.vms).line }
        lines += record.vms.map { vm in
            VMMemorySample(name: vm.name, maximumBytes: UInt64(saturating: vm.actualMiB * Double(1 << 20)), balloonBytes: 0,
                           unusedBytes: vm.unusedMiB.map { UInt64(saturating: $0 * Double(1 << 20)) },
                           sharedBytes: vm.sharedMiB.map { UInt64(saturating: $0 * Double(1 << 20)) }).line
        }
        return lines.joined(separator: "\n")
    }

}
