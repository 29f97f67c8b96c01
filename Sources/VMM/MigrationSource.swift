import Glibc
import Host
import KVM
import Logging
import Synchronization
import VMMCore

/// What `PUT /migrate` (or `swiftvmm migrate`) asks for.
public struct MigrationRequest: Sendable, Equatable {
    public var destination: SocketEndpoint
    /// The pause the guest may see: pre-copy stops iterating once the remaining dirty pages
    /// would take at most this long at the bandwidth measured.
    public var downtimeMilliseconds: Int
    /// How long pre-copy may iterate before it gives up (the VM keeps running here).
    public var timeoutSeconds: Int
    /// Pause first and copy everything (the naive way), for comparison.
    public var naive: Bool

    public init(destination: SocketEndpoint, downtimeMilliseconds: Int = 50, timeoutSeconds: Int = 60, naive: Bool = false) {
        (self.destination, self.downtimeMilliseconds, self.timeoutSeconds, self.naive) = (destination, downtimeMilliseconds, timeoutSeconds, naive)
    }
}

/// A migration as it runs, and how it ended: `GET /migrate` and the stderr lines.
public struct MigrationProgress: Sendable, Equatable {
    public enum Phase: String, Sendable {
        case connecting, copying, stopping, completed, failed
    }
    public var phase: Phase = .connecting
    public var destination = ""
    public var naive = false
    /// Pre-copy rounds done (round 1 copies all of RAM).
    public var iteration = 0
    public var pagesSent: UInt64 = 0
    public var zeroPagesSent: UInt64 = 0
    public var bytesSent: UInt64 = 0
    /// Pages dirtied in the last round, and the rates measured over it.
    public var dirtyPages: UInt64 = 0
    public var dirtyRateMiBps: Double = 0
    public var bandwidthMiBps: Double = 0
    public var estimatedDowntimeMilliseconds: Double = 0
    public var elapsedMilliseconds: Double = 0
    /// From the source's pause to the destination's word that it runs (once completed).
    public var downtimeMilliseconds: Double?
    public var guestRAMBytes: UInt64 = 0
    public var error: String?

    public init() {}
}

/// Runs one outgoing migration on a thread of its own, over a machine that keeps running until
/// the last round: connect, compare, copy RAM while dirty logging is on, repeat with what the
/// guest (and the VMM) dirtied until it fits the downtime, then pause, send the rest and the
/// state, and end the run as migrated once the destination says it runs. Any failure before
/// that leaves the VM running here.
final class MigrationSource: Sendable {
    let request: MigrationRequest
    let progress = Locked(MigrationProgress())
    private let machine: Machine
    private let logger: Logger

    /// What the switch-over costs beyond the last pages: pausing the vCPUs, the state, and the
    /// destination building the machine (its build measured 3-6 ms in release builds here, the
    /// whole downtime 6-36 ms for a 256 MiB guest dirtying 0.5-256 MiB/s; docs/benchmarks.md).
    /// Part of every downtime estimate, so a target below it is never promised.
    static let switchoverMilliseconds = 10.0

    init(request: MigrationRequest, machine: Machine, logger: Logger) {
        (self.request, self.machine, self.logger) = (request, machine, logger)
        progress.withLock {
            $0.destination = request.destination.description
            $0.naive = request.naive
            $0.guestRAMBytes = UInt64(machine.memory.totalSize)
        }
    }

    var isFinished: Bool { progress.withLock { $0.phase == .completed || $0.phase == .failed } }

    func run() {
        let start = Clocks.monotonicNanoseconds()
        do throws(MigrationError) {
            try migrate(start: start)
        } catch {
            stopLogging()
            // Once the state went out, a broken link leaves no way to know whether the destination
            // runs the VM: resuming here could run it twice, so it stays paused for the operator.
            if stateSent, case .link = error {
                update(start) { $0.phase = .failed; $0.error = "\(error) after the state was sent: the VM stays paused here, the destination may be running it" }
                logger.error("migration to \(request.destination): \(error) after the state was sent; the VM stays paused here (the destination may run it)")
                return
            }
            if pausedHere && !machine.isStopping { machine.resume() }
            update(start) { $0.phase = .failed; $0.error = error.description }
            logger.warning("migration to \(request.destination) failed, the VM runs on here: \(error)")
        }
    }

    private func migrate(start: UInt64) throws(MigrationError) {
        guard let support = machine.stateSupport else { throw .refused("this KVM cannot list the MSRs to migrate") }
        let fd: Int32
        do { fd = try request.destination.connect(for: "migration") } catch { throw .link("\(error)") }
        let connection = FileDescriptor(rawValue: fd)
        defer { connection.close() }
        // A send buffer of 1 MiB: what the source counts as sent is close to what the destination
        // has, so the bandwidth measured is the link's and the last round does not queue behind
        // megabytes still in flight.
        var buffer: Int32 = 1 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, socklen_t(MemoryLayout<Int32>.size))
        let stream = MigrationStream(fd: connection)
        try stream.send(.hello, MigrationStream.hello(SnapshotFile(sections: MachineSnapshot.shapeSections(of: machine, support: support))))
        let reply = try stream.receive()
        switch reply.kind {
        case .accept: break
        case .refuse: throw .incompatible(String(decoding: reply.payload.prefix(4096), as: UTF8.self))
        default: throw .protocolViolation("expected the destination's answer to the hello")
        }
        update(start) { $0.phase = .copying }
        if request.naive {
            pause()
        } else {
            try startLogging()
        }
        let pauseTime: UInt64
        if request.naive {
            pauseTime = Clocks.monotonicNanoseconds()
            try sendRound(stream, pages: .resident, start: start)
        } else {
            pauseTime = try precopy(stream, start: start)
        }
        update(start) { $0.phase = .stopping }
        if !request.naive { try sendRound(stream, pages: .dirty(try collectDirty()), start: start) }
        let sections: [SnapshotFile.Section]
        do { sections = try MachineSnapshot.sections(of: machine, support: support) } catch { throw .refused(error.description) }
        stateSent = true
        try stream.send(.state, SnapshotFile(sections: sections).encoded)
        let answer = try stream.receive()
        switch answer.kind {
        case .started: break
        case .failed: throw .destinationFailed(String(decoding: answer.payload.prefix(4096), as: UTF8.self))
        default: throw .protocolViolation("expected the destination's start")
        }
        let downtime = Double(Clocks.monotonicNanoseconds() - pauseTime) / 1e6
        stopLogging()
        update(start) { $0.phase = .completed; $0.downtimeMilliseconds = downtime }
        let done = progress.withLock { $0 }
        logger.notice("migration to \(request.destination) completed in \(formatOneDecimal(done.elapsedMilliseconds)) ms, downtime \(formatOneDecimal(downtime)) ms, \(done.bytesSent >> 20) MiB sent in \(done.iteration) round(s)")
        machine.control.finish(.migrated)
    }

    /// Rounds while the VM runs; returns the moment the VM was paused for the last one.
    private func precopy(_ stream: MigrationStream, start: UInt64) throws(MigrationError) -> UInt64 {
        var pages: PageSet = .resident
        let deadline = start.saturatingAdd(UInt64(request.timeoutSeconds) * 1_000_000_000)
        while true {
            let roundStart = Clocks.monotonicNanoseconds()
            let sentBefore = progress.withLock { $0.bytesSent }
            try sendRound(stream, pages: pages, start: start)
            let roundEnd = Clocks.monotonicNanoseconds()
            let dirty = try collectDirty()
            let seconds = max(Double(roundEnd - roundStart) / 1e9, 1e-6)
            let bandwidth = Double(progress.withLock { $0.bytesSent } - sentBefore) / seconds
            let count = dirty.reduce(0) { $0 + $1.reduce(0) { $0 + UInt64($1.nonzeroBitCount) } }
            let estimate = bandwidth > 0 ? Double(count) * Double(MigrationStream.pageSize) / bandwidth * 1000 + Self.switchoverMilliseconds : .infinity
            update(start) {
                $0.dirtyPages = count
                $0.dirtyRateMiBps = Double(count) * 4096 / seconds / 1048576
                $0.bandwidthMiBps = bandwidth / 1048576
                $0.estimatedDowntimeMilliseconds = estimate
            }
            let state = progress.withLock { $0 }
            logger.notice("migration: round \(state.iteration): \(state.pagesSent) pages sent, \(count) dirtied (\(formatOneDecimal(state.dirtyRateMiBps)) MiB/s), bandwidth \(formatOneDecimal(state.bandwidthMiBps)) MiB/s, estimated downtime \(formatOneDecimal(min(estimate, 1e9))) ms")
            if estimate <= Double(request.downtimeMilliseconds) {
                pause()
                let paused = Clocks.monotonicNanoseconds()
                // What the guest dirtied between this collection and the pause goes in the last round.
                pendingDirty = dirty
                return paused
            }
            guard Clocks.monotonicNanoseconds() < deadline else {
                try? stream.send(.abort, text: "the source gave up: no convergence")
                throw .notConverging("after \(request.timeoutSeconds) s and \(state.iteration) rounds the guest still dirtied \(count) pages a round (\(formatOneDecimal(state.dirtyRateMiBps)) MiB/s at \(formatOneDecimal(state.bandwidthMiBps)) MiB/s of bandwidth; the estimated downtime \(formatOneDecimal(min(estimate, 1e9))) ms exceeds \(request.downtimeMilliseconds) ms)")
            }
            pages = .dirty(dirty)
        }
    }

    private func pause() {
        pausedHere = !machine.isPaused
        machine.pause()
    }

    // MARK: pages

    enum PageSet {
        /// Every page the host holds (the first round).
        case resident
        /// One bitmap of 64-page words per region.
        case dirty([[UInt64]])
    }

    // Touched only by the migration's own thread (run() and what it calls).
    /// Dirty pages collected before the pause that the last round must still send.
    private nonisolated(unsafe) var pendingDirty: [[UInt64]] = []
    /// Whether this migration paused the VM (a failure then resumes it; a pause of the user's stays).
    private nonisolated(unsafe) var pausedHere = false
    /// Whether the state went out (from then on the destination may run the VM).
    private nonisolated(unsafe) var stateSent = false

    /// One round: each page of `pages` as it is now, runs of non-zero pages in `pages` messages,
    /// pages that are zero now (released by the balloon) as `zeros` (skipped in the first round,
    /// where the destination's RAM is zero already).
    private func sendRound(_ stream: MigrationStream, pages: PageSet, start: UInt64) throws(MigrationError) {
        let memory = machine.memory
        let pageSize = UInt64(MigrationStream.pageSize)
        for (index, region) in memory.regions.enumerated() {
            let indexes: [Int]
            switch pages {
            case .resident: indexes = memory.residentPages(region)
            case .dirty(let bitmaps):
                var merged = index < bitmaps.count ? bitmaps[index] : []
                if index < pendingDirty.count { for word in merged.indices where word < pendingDirty[index].count { merged[word] |= pendingDirty[index][word] } }
                indexes = merged.enumerated().flatMap { word, bits in
                    (0..<64).compactMap { bits & (1 << UInt64($0)) != 0 ? word * 64 + $0 : nil }
                }
            }
            // Runs of non-zero pages (read in one piece, sent as one message) and of zero pages.
            var run: (start: UInt64, count: UInt64)?, zeros: (start: UInt64, count: UInt64)?
            func flushRun() throws(MigrationError) {
                guard let range = run else { return }
                var out = StateWriter()
                out.u64(range.start)
                do { out.raw(try memory.read(range.start, length: Int(range.count * pageSize))) } catch { throw .refused("reading guest RAM: \(error)") }
                try stream.send(.pages, out.bytes)
                update(start) { $0.pagesSent += range.count; $0.bytesSent += range.count * pageSize + 13 }
                run = nil
            }
            func flushZeros() throws(MigrationError) {
                guard let range = zeros else { return }
                var out = StateWriter()
                out.u64(range.start)
                out.u64(range.count)
                try stream.send(.zeros, out.bytes)
                update(start) { $0.zeroPagesSent += range.count; $0.bytesSent += 21 }
                zeros = nil
            }
            for page in indexes {
                let address = region.guestStart + UInt64(page) * pageSize
                if memory.pageIsZero(address) {
                    try flushRun()
                    guard case .dirty = pages else { continue }
                    if let range = zeros, range.start + range.count * pageSize == address { zeros = (range.start, range.count + 1) } else {
                        try flushZeros()
                        zeros = (address, 1)
                    }
                    continue
                }
                try flushZeros()
                if let range = run, range.start + range.count * pageSize == address, range.count < UInt64(MigrationStream.pagesPerMessage) {
                    run = (range.start, range.count + 1)
                } else {
                    try flushRun()
                    run = (address, 1)
                }
            }
            try flushRun()
            try flushZeros()
        }
        pendingDirty = []
        update(start) { $0.iteration += 1 }
    }

    // MARK: dirty logging

    private func startLogging() throws(MigrationError) {
        do { try machine.dirtyTracking.start("migration") } catch { throw .refused("dirty logging: \(error)") }
    }

    private func stopLogging() { machine.dirtyTracking.stop("migration") }

    /// What the guest wrote (KVM's log) and what the VMM wrote, since the last collection.
    private func collectDirty() throws(MigrationError) -> [[UInt64]] {
        do { return try machine.dirtyTracking.take("migration") } catch { throw .refused("dirty log: \(error)") }
    }

    private func update(_ start: UInt64, _ body: (inout MigrationProgress) -> Void) {
        progress.withLock {
            body(&$0)
            $0.elapsedMilliseconds = Double(Clocks.monotonicNanoseconds() - start) / 1e6
        }
    }
}

extension Machine {
    /// Starts migrating this running VM to `request.destination` on a thread of its own; returns
    /// at once. One migration at a time; a finished one may be followed by another.
    public func startMigration(_ request: MigrationRequest) throws(MigrationError) {
        guard !isStopping else { throw .refused("the VM is not running") }
        guard !config.deterministic else { throw .refused("a deterministic VM cannot migrate (its 8259 pair and virtual clock are not in the stream)") }
        if let open = share?.share.openFiles, open > 0 { throw .refused(Machine.openShareFiles(open)) }
        guard request.downtimeMilliseconds >= 1, request.downtimeMilliseconds <= 60_000 else { throw .refused("downtime_ms must be 1 to 60000") }
        guard request.timeoutSeconds >= 1, request.timeoutSeconds <= 86_400 else { throw .refused("timeout_s must be 1 to 86400") }
        let source = MigrationSource(request: request, machine: self, logger: logger)
        try migration.withLock { (current: inout MigrationSource?) throws(MigrationError) in
            if let current, !current.isFinished { throw .refused("a migration is already running") }
            current = source
        }
        do {
            try HostThreadHandle.spawn(.api, name: "migration") { source.run() }.detach()
        } catch {
            source.progress.withLock { $0.phase = .failed; $0.error = error.description }
            throw .refused("cannot start the migration thread: \(error)")
        }
    }

    /// The current or last migration's progress (nil before the first).
    public func migrationProgress() -> MigrationProgress? {
        let progress = migration.withLock { $0?.progress.withLock { $0 } }
        if progress?.phase == .completed { migrationReported.store(true, ordering: .releasing) }
        return progress
    }

    /// After a completed migration: waits (up to `seconds`) until someone asked for its progress
    /// and saw it completed, so the client that started it learns the result before this
    /// process and its API socket go away.
    public func awaitMigrationReport(seconds: Double) {
        let deadline = Clocks.monotonicSeconds() + seconds
        while !migrationReported.load(ordering: .acquiring) && Clocks.monotonicSeconds() < deadline { usleep(10_000) }
    }
}
