import Devices
import Host
import Logging
import VMMCore

/// `--disk PATH[,ro][,id=NAME]`: a raw image the guest sees as a virtio-blk disk.
public struct DiskConfig: Sendable, Equatable {
    public var path: String
    public var readOnly: Bool
    /// The drive's name (Firecracker's drive_id) and the serial number the guest reads (GET_ID,
    /// at most 20 bytes); nil: "disk" and its index.
    public var id: String?

    public init(path: String, readOnly: Bool = false, id: String? = nil) { (self.path, self.readOnly, self.id) = (path, readOnly, id) }

    /// `PATH`, `PATH,ro`, `PATH,rw`, each optionally with `,id=NAME` (letters, digits, `-`, `_`, `.`).
    public init?(parsing text: String) {
        var parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let path = parts.first, !path.isEmpty else { return nil }
        parts.removeFirst()
        var readOnly = false, id: String?
        for part in parts {
            switch part {
            case "ro": readOnly = true
            case "rw": readOnly = false
            default:
                guard part.hasPrefix("id="), let name = Optional(String(part.dropFirst(3))), Self.validID(name) else { return nil }
                id = name
            }
        }
        (self.path, self.readOnly, self.id) = (path, readOnly, id)
    }

    /// 1 to 20 characters of letters, digits, `-`, `_` and `.`: it is the guest's serial number.
    public static func validID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= BlockModel.idLength
            && id.utf8.allSatisfy { $0 < 0x80 && (Character(Unicode.Scalar($0)).isLetter || Character(Unicode.Scalar($0)).isNumber || "-_.".utf8.contains($0)) }
    }
}

/// A virtio-blk disk of the machine: the device on the MMIO bus and the I/O worker thread that
/// executes its requests. The vCPU that notifies only checks and queues requests; the worker
/// reads and writes between the image and guest RAM without holding the device lock, then
/// completes a batch under it (one interrupt per batch). Releasing the disk (a machine that
/// ends, or one whose build failed later) stops its worker.
final class Disk: Sendable {
    let id: String
    let device: VirtioMMIODevice<MachineInterruptLine, BlockModel>
    private let worker: DiskWorker

    init(id: String, backend: FileBlockBackend, memory: GuestMemory, line: MachineInterruptLine, clock: any MonotonicClock,
         timers: TimerService, logger: Logger) throws(VMMError) {
        self.id = id
        let relay = WakeRelay()
        let model = BlockModel(capacityBytes: backend.size, readOnly: backend.readOnly, discardable: backend.supportsDiscard,
                               serial: id, wake: { relay.fire() })
        device = VirtioMMIODevice(model: model, memory: memory, interrupt: line, clock: clock, scheduler: timers,
                                  onError: { logger.warning("virtio-blk \(id): \($0); the device needs a reset") })
        worker = DiskWorker(device: device, executor: BlockExecutor(backend: backend, memory: memory, serial: model.serial))
        relay.connect(worker)
        try VMMError.host { () throws(HostError) in try worker.start(name: "disk-\(id)") }
    }

    deinit { worker.stop() }

    /// Waits until no request is queued or executing (see DiskWorker.drain).
    func drain() { worker.drain() }

    /// Ends the worker (after what it is executing).
    func stop() { worker.stop() }

    var counters: BlockCounters { device.withModel { model, _ in model.counters } }

    /// One line for `--stats`.
    func report() -> String {
        let c = counters
        return "disk \(id): \(c.reads) reads (\(ByteSize(bytes: c.bytesRead))), \(c.writes) writes (\(ByteSize(bytes: c.bytesWritten))), "
            + "\(c.flushes) flushes, \(c.discards) discards, \(c.writeZeroes) write-zeroes, \(c.errors) errors, \(c.unsupported) unsupported, "
            + "\(c.malformed) malformed; \(c.notifications) notifications, \(c.batches) batches; \(device.queueErrors) queue errors"
    }

    /// The model's wake-up, connected once the worker exists (the model is made first).
    private final class WakeRelay: @unchecked Sendable {
        // @unchecked: `worker` is set once in Disk.init, before the device is on a bus.
        private weak var worker: DiskWorker?
        func connect(_ worker: DiskWorker) { self.worker = worker }
        func fire() { worker?.wake() }
    }
}

/// The thread that executes one disk's requests, and the flags it sleeps on.
final class DiskWorker: @unchecked Sendable {
    // @unchecked: `requested` and `executing` are touched with `thread.lock` held.
    private let thread = ServiceThread()
    private var requested = false
    private var executing = false
    private let device: VirtioMMIODevice<MachineInterruptLine, BlockModel>
    private let executor: BlockExecutor

    init(device: VirtioMMIODevice<MachineInterruptLine, BlockModel>, executor: BlockExecutor) {
        (self.device, self.executor) = (device, executor)
    }

    func start(name: String) throws(HostError) {
        try thread.start(.disk, name: name) { [self] in serve() }
    }

    func stop() { thread.stop() }

    /// Called under the device lock (requests were queued): only raises a flag.
    func wake() {
        thread.lock.withLock {
            requested = true
            thread.lock.broadcast()
        }
    }

    private func serve() {
        while true {
            let stop = thread.lock.withLock { () -> Bool in
                while !requested && !thread.stopRequested { thread.lock.wait() }
                guard !thread.stopRequested else { return true }
                (requested, executing) = (false, true)
                return false
            }
            if stop { return }
            let requests = device.withModel { model, context in model.takePending(context: &context) }
            let completions = requests.map(executor.execute)
            if !completions.isEmpty {
                device.withQueues("completing requests") { model, context throws(VirtqueueError) in try model.complete(completions, context: &context) }
            }
            thread.lock.withLock {
                executing = false
                thread.lock.broadcast()
            }
        }
    }

    /// Waits until no request is queued or executing: with the vCPUs paused none comes in, so
    /// what the guest asked for is on the disk and in guest RAM before a snapshot's state or a
    /// migration's last copy is taken.
    func drain() {
        thread.lock.withLock {
            while (requested || executing) && !thread.stopRequested { thread.lock.wait() }
        }
    }
}

extension Disk: SnapshotDevice {
    func saveState(now: UInt64) -> [UInt8] {
        drain()
        return device.saveState(now: now)
    }

    func restoreState(_ bytes: [UInt8], now: UInt64) throws(StateError) {
        try device.restoreState(bytes, now: now)
    }
}
