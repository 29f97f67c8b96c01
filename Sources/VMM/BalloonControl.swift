import Boot
import Devices
import VMMCore

/// The host's handle on a VM's balloon: set its target, read what the guest did and reported.
/// Thread-safe; the memory coordinator and host mode drive it while the VM runs.
public struct BalloonControl: Sendable {
    let device: VirtioMMIODevice<MachineInterruptLine, BalloonModel>
    /// Deterministic mode: requests wait here for the vCPU's next exit, which records them.
    let inputs: ExternalInputs?

    init(device: VirtioMMIODevice<MachineInterruptLine, BalloonModel>, inputs: ExternalInputs? = nil) {
        (self.device, self.inputs) = (device, inputs)
    }

    /// A snapshot of the balloon.
    public struct Status: Sendable, Equatable {
        public var targetPages: UInt32
        public var actualPages: UInt32
        public var counters: BalloonCounters
        public var statistics: BalloonStatistics?
        public var driverReady: Bool
        public var needsReset: Bool

        public init(targetPages: UInt32, actualPages: UInt32, counters: BalloonCounters, statistics: BalloonStatistics?,
                    driverReady: Bool, needsReset: Bool) {
            self.targetPages = targetPages
            self.actualPages = actualPages
            self.counters = counters
            self.statistics = statistics
            self.driverReady = driverReady
            self.needsReset = needsReset
        }

        public var targetBytes: UInt64 { UInt64(targetPages) * BalloonModel.pageSize }
        public var actualBytes: UInt64 { UInt64(actualPages) * BalloonModel.pageSize }
    }

    /// Asks the guest to hold `bytes` (rounded down to whole pages) in its balloon.
    public func setTarget(bytes: UInt64) {
        let pages = UInt32(clamping: bytes / BalloonModel.pageSize)
        if let inputs { inputs.offerBalloonTarget(pages) } else { applyTarget(pages: pages) }
    }

    /// Sets the target now (deterministic mode: at an exit, on the vCPU thread).
    func applyTarget(pages: UInt32) {
        device.withModel { model, context in model.setTarget(pages: pages, context: &context) }
    }

    /// Asks the guest for statistics every `seconds` from now on (0: never); the timer thread
    /// looks at the new deadline at once.
    public func setStatsInterval(seconds: Double) {
        let nanoseconds = UInt64(max(0, min(seconds.isNaN ? 0 : seconds, 3600)) * 1e9)
        if let inputs { inputs.offerBalloonStatsInterval(nanoseconds) } else { applyStatsInterval(nanoseconds: nanoseconds) }
    }

    func applyStatsInterval(nanoseconds: UInt64) {
        device.withModel { model, _ in model.statsInterval = nanoseconds }
    }

    /// Whether the guest may deflate the balloon on its own when it runs out of memory.
    public var deflateOnOOM: Bool { device.withModel { model, _ in model.deflateOnOOM } }

    /// Seconds between statistics requests (0: never).
    public var statsIntervalSeconds: Double { device.withModel { model, _ in Double(model.statsInterval) / 1e9 } }

    /// Times the transport gave up on a queue the guest broke.
    public var queueErrors: Int { device.queueErrors }

    public func status() -> Status {
        let needsReset = device.deviceStatus & VirtioStatus.needsReset != 0
        return device.withModel { model, context in
            Status(targetPages: model.targetPages, actualPages: model.actualPages, counters: model.counters,
                   statistics: model.statistics, driverReady: context.driverReady, needsReset: needsReset)
        }
    }

    /// The `--stats` lines for the balloon.
    public func report() -> String {
        let s = status()
        let c = s.counters
        var lines = ["balloon: target_kib=\(s.targetBytes / 1024) actual_kib=\(s.actualBytes / 1024) inflated=\(c.inflated) "
            + "deflated=\(c.deflated) released=\(c.released) release_calls=\(c.releaseCalls) rejected_pfns=\(c.rejectedPFNs) "
            + "rejected_buffers=\(c.rejectedBuffers) stats_updates=\(c.statsUpdates) stats_rejected=\(c.statsRejected) "
            + "queue_errors=\(device.queueErrors)"]
        if let statistics = s.statistics {
            let values = BalloonStatTag.allCases.compactMap { tag in statistics[tag].map { "\(tag)=\($0)" } }
            lines.append("balloon stats: " + values.joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }

    /// The Linux command-line form of this device: `virtio_mmio.device=SIZE@ADDRESS:IRQ`.
    public static var linuxCommandLine: String {
        Platform.linuxCommandLine(virtio: 0)
    }
}
