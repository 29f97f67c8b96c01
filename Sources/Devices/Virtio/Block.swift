import VMMCore

/// virtio-blk feature bits (virtio 1.x, section 5.2.3).
public enum BlockFeature {
    public static let segmentMaximum: UInt64 = 1 << 2
    public static let readOnly: UInt64 = 1 << 5
    public static let blockSize: UInt64 = 1 << 6
    public static let flush: UInt64 = 1 << 9
    public static let discard: UInt64 = 1 << 13
    public static let writeZeroes: UInt64 = 1 << 14
}

/// Request types and status values of a virtio-blk request.
public enum BlockRequestType {
    public static let read: UInt32 = 0, write: UInt32 = 1, flush: UInt32 = 4, getID: UInt32 = 8
    public static let discard: UInt32 = 11, writeZeroes: UInt32 = 13
}

public enum BlockStatus {
    public static let ok: UInt8 = 0, ioError: UInt8 = 1, unsupported: UInt8 = 2
}

/// The bytes of a descriptor chain in one direction, as one logical stream: the spec lets a
/// driver split a request's header, data and status across descriptors any way it likes.
public struct ScatterList: Sendable, Equatable {
    public private(set) var segments: [VirtqueueBuffer]

    public init(_ segments: [VirtqueueBuffer]) { self.segments = segments.filter { $0.length > 0 } }

    /// Total bytes (each segment is at most 4 GiB and a chain at most a queue long: no overflow).
    public var count: UInt64 { segments.reduce(0) { $0 + UInt64($1.length) } }

    /// The stream from byte `start` for `length` bytes (clipped to what there is).
    public func slice(from start: UInt64, length: UInt64) -> ScatterList {
        var result: [VirtqueueBuffer] = [], offset: UInt64 = 0
        let end = start.saturatingAdd(length)
        for segment in segments {
            let segmentEnd = offset + UInt64(segment.length)
            defer { offset = segmentEnd }
            let lower = max(offset, start), upper = min(segmentEnd, end)
            guard lower < upper else { continue }
            result.append(VirtqueueBuffer(address: segment.address + (lower - offset), length: UInt32(upper - lower),
                                          writable: segment.writable))
        }
        return ScatterList(result)
    }

    /// Writes `bytes` from the start of the stream (what does not fit is not written).
    func write(_ bytes: [UInt8], memory: GuestMemory) throws(GuestMemoryError) {
        var done = 0
        for segment in slice(from: 0, length: UInt64(bytes.count)).segments {
            try memory.write(bytes[done..<done + Int(segment.length)], at: segment.address)
            done += Int(segment.length)
        }
    }

    /// Reads the first `length` bytes (or fewer when the stream is shorter).
    func read(_ length: Int, memory: GuestMemory) throws(GuestMemoryError) -> [UInt8] {
        var bytes: [UInt8] = []
        for segment in slice(from: 0, length: UInt64(length)).segments {
            bytes += try memory.read(segment.address, length: Int(segment.length))
        }
        return bytes
    }
}

/// One request the driver made, taken apart and checked on the vCPU thread: what the I/O
/// worker executes.
public struct BlockRequest: Sendable, Equatable {
    public let head: UInt16
    public let type: UInt32
    public let sector: UInt64
    /// The data: device-readable bytes after the header (write, discard, write-zeroes) or
    /// device-writable bytes before the status byte (read, get-ID).
    public let data: ScatterList
    /// Where the status byte goes.
    public let statusAddress: UInt64
    /// The device reset this many times before the request was made: a completion from before
    /// the last reset is dropped, not written into rings the driver has set up again.
    let generation: UInt64
}

/// What the block device did, for `--stats` and tests.
public struct BlockCounters: Sendable, Equatable {
    public var reads: UInt64 = 0, writes: UInt64 = 0, flushes: UInt64 = 0, discards: UInt64 = 0, writeZeroes: UInt64 = 0, getIDs: UInt64 = 0
    public var bytesRead: UInt64 = 0, bytesWritten: UInt64 = 0
    /// Requests answered with IOERR (outside the disk, read-only, a failed host call) or UNSUPP.
    public var errors: UInt64 = 0, unsupported: UInt64 = 0
    /// Chains without room for a header or a status byte: returned with nothing written.
    public var malformed: UInt64 = 0
    /// Notifications, and batches handed to the worker.
    public var notifications: UInt64 = 0, batches: UInt64 = 0

    public init() {}

    static var paths: [WritableKeyPath<BlockCounters, UInt64>] { [\.reads, \.writes, \.flushes, \.discards, \.writeZeroes, \.getIDs,
                                                                  \.bytesRead, \.bytesWritten, \.errors, \.unsupported, \.malformed,
                                                                  \.notifications, \.batches] }
}

/// The disk behind a block device: a raw image, or a fake in tests.
public protocol BlockBackend: AnyObject, Sendable {
    /// Bytes the disk had when it was opened (the capacity the guest sees).
    var size: UInt64 { get }
    var readOnly: Bool { get }
    /// Whether discard (hole punching) and write-zeroes can be offered.
    var supportsDiscard: Bool { get }
    /// Reads exactly `buffer.count` bytes at `offset`; false on an error or a short read (the
    /// file shrank under the guest).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool
    func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64) -> Bool
    func flush() -> Bool
    /// Deallocates (discard) or zeroes `length` bytes at `offset`.
    func discard(at offset: UInt64, length: UInt64) -> Bool
    func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) -> Bool
}

/// virtio-blk (device type 2) over virtio-mmio: one request queue, a raw disk. Requests are
/// checked here on the vCPU thread (under the device lock) and executed by an I/O worker
/// (`BlockExecutor`), which completes them with `complete`: no disk I/O ever runs under the
/// device lock or on a vCPU thread.
public struct BlockModel: VirtioModel {
    public static var deviceType: UInt32 { 2 }
    public static let sectorSize: UInt64 = 512
    public static let queueSize: UInt16 = 256
    /// The most data segments a request may have (config seg_max): the chain less the header
    /// and the status descriptor.
    public static let segmentMaximum: UInt32 = UInt32(queueSize) - 2
    /// Bounds of one discard or write-zeroes request (config max_*_sectors and max_*_seg).
    public static let discardSectorsMaximum: UInt32 = 1 << 22 // 2 GiB
    public static let discardSegmentsMaximum: UInt32 = 64
    public static let idLength = 20

    public let capacitySectors: UInt64
    public let readOnly: Bool
    public let discardable: Bool
    /// The disk's serial number (GET_ID), at most 20 bytes.
    public let serial: [UInt8]
    public private(set) var counters = BlockCounters()
    /// Checked requests the worker has not taken yet.
    private var pending: [BlockRequest] = []
    /// Requests the worker took and has not completed.
    public private(set) var inFlight = 0
    private var generation: UInt64 = 0
    /// Called (under the device lock: it must not block) when requests wait for the worker.
    private let wake: @Sendable () -> Void

    public init(capacityBytes: UInt64, readOnly: Bool, discardable: Bool, serial: String, wake: @escaping @Sendable () -> Void) {
        capacitySectors = capacityBytes / Self.sectorSize
        self.readOnly = readOnly
        self.discardable = discardable && !readOnly
        self.serial = Array(serial.utf8.prefix(Self.idLength))
        self.wake = wake
    }

    public var offeredFeatures: UInt64 {
        BlockFeature.segmentMaximum | BlockFeature.blockSize | BlockFeature.flush | (readOnly ? BlockFeature.readOnly : 0)
            | (discardable ? BlockFeature.discard | BlockFeature.writeZeroes : 0)
    }
    public var queueMaxSizes: [UInt16] { [Self.queueSize] }

    /// Whether a request is waiting for the worker or executing.
    public var busy: Bool { !pending.isEmpty || inFlight > 0 }

    // MARK: config space (virtio 1.x, 5.2.4)

    var configBytes: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 60)
        LittleEndian.store(capacitySectors, into: &bytes, at: 0)
        LittleEndian.store(Self.segmentMaximum, into: &bytes, at: 12)
        LittleEndian.store(UInt32(Self.sectorSize), into: &bytes, at: 20)
        if discardable {
            LittleEndian.store(Self.discardSectorsMaximum, into: &bytes, at: 36)
            LittleEndian.store(Self.discardSegmentsMaximum, into: &bytes, at: 40)
            LittleEndian.store(UInt32(1), into: &bytes, at: 44) // discard_sector_alignment
            LittleEndian.store(Self.discardSectorsMaximum, into: &bytes, at: 48)
            LittleEndian.store(Self.discardSegmentsMaximum, into: &bytes, at: 52)
            bytes[56] = 1 // write_zeroes_may_unmap
        }
        return bytes
    }

    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        let bytes = configBytes
        guard offset < UInt64(bytes.count), [1, 2, 4, 8].contains(size) else { return 0 }
        return LittleEndian.load(bytes, at: Int(offset), size: size)
    }

    public mutating func writeConfig(offset: UInt64, size: Int, value: UInt64, context: inout VirtioContext) {} // all read-only

    public mutating func reset() {
        pending = []
        generation &+= 1 // what is in flight completes into nothing
    }

    public func nextDeadline() -> UInt64? { nil }
    public mutating func timerFired(now: UInt64, context: inout VirtioContext) throws(VirtqueueError) {}

    // MARK: requests

    public mutating func queueNotified(_ index: Int, context: inout VirtioContext) throws(VirtqueueError) {
        counters.notifications &+= 1
        try takeAvailable(&context)
    }

    /// Takes what the driver made available, as long as fewer requests than the queue holds are
    /// outstanding: a driver cannot have more in flight, so a hostile one that publishes heads
    /// again and again only waits until the worker completes some (`complete` looks again) and
    /// can never make the pending list outgrow the queue.
    private mutating func takeAvailable(_ context: inout VirtioContext) throws(VirtqueueError) {
        let index = 0
        var used = false, queued = false
        while pending.count + inFlight < Int(context.queues[index].size),
              let chain = try context.queues[index].popChain(memory: context.memory) {
            switch parse(chain, memory: context.memory) {
            case .request(let request):
                pending.append(request)
                queued = true
            case .answer(let status, let address):
                counters.malformed &+= 1
                if let address { try? context.memory.store(status, at: address) }
                try context.queues[index].pushUsed(head: chain.head, written: address == nil ? 0 : 1, memory: context.memory)
                used = true
            }
        }
        if used { context.signalUsed() }
        if queued { wake() }
    }

    enum Parsed {
        case request(BlockRequest)
        /// Answered at once: a status byte (at the address, when the chain has one).
        case answer(UInt8, UInt64?)
    }

    func parse(_ chain: DescriptorChain, memory: GuestMemory) -> Parsed {
        let readable = ScatterList(chain.readable), writable = ScatterList(chain.writable)
        // The status byte is the chain's last writable byte; the header its first 16 readable ones.
        guard writable.count >= 1, let last = writable.segments.last else {
            return .answer(BlockStatus.ioError, nil)
        }
        let statusAddress = last.address + UInt64(last.length) - 1
        guard readable.count >= 16, let header = try? readable.read(16, memory: memory) else {
            return .answer(BlockStatus.ioError, statusAddress)
        }
        let type = UInt32(truncatingIfNeeded: LittleEndian.load(header, at: 0, size: 4))
        let sector = LittleEndian.load(header, at: 8, size: 8)
        let out = readable.slice(from: 16, length: readable.count - 16)
        let into = writable.slice(from: 0, length: writable.count - 1)
        let data: ScatterList
        switch type {
        case BlockRequestType.read, BlockRequestType.getID: data = into
        case BlockRequestType.write, BlockRequestType.discard, BlockRequestType.writeZeroes: data = out
        default: data = ScatterList([])
        }
        return .request(BlockRequest(head: chain.head, type: type, sector: sector, data: data, statusAddress: statusAddress,
                                     generation: generation))
    }

    /// Hands the waiting requests to the worker. While it executes them the driver is told not to
    /// notify (VIRTQ_USED_F_NO_NOTIFY): `complete` looks at the ring itself, so a driver that keeps
    /// adding requests meanwhile costs no exits.
    public mutating func takePending(context: inout VirtioContext) -> [BlockRequest] {
        let taken = pending
        pending = []
        inFlight += taken.count
        if !taken.isEmpty {
            counters.batches &+= 1
            try? context.queues[0].suppressNotifications(true, memory: context.memory)
        }
        return taken
    }

    /// What the worker did with one request.
    public struct Completion: Sendable, Equatable {
        public let request: BlockRequest
        public let status: UInt8
        /// Bytes written into the driver's buffers, the status byte included.
        public let written: UInt32
        /// Data bytes moved (reads and writes that succeeded).
        public let bytes: UInt64
    }

    /// Returns the worker's finished requests to the driver (status byte, used ring, interrupt).
    /// Requests from before a reset are dropped.
    public mutating func complete(_ completions: [Completion], context: inout VirtioContext) throws(VirtqueueError) {
        inFlight = max(0, inFlight - completions.count)
        var used = false
        for completion in completions where completion.request.generation == generation {
            count(completion)
            guard context.driverReady, context.queues[0].ready else { continue }
            try? context.memory.store(completion.status, at: completion.request.statusAddress)
            try context.queues[0].pushUsed(head: completion.request.head, written: completion.written, memory: context.memory)
            used = true
        }
        if used { context.signalUsed() }
        // Notifications back on, then what was added while they were off (or while a queue's
        // worth was outstanding).
        if context.driverReady, context.queues[0].ready {
            if inFlight == 0 { try context.queues[0].suppressNotifications(false, memory: context.memory) }
            try takeAvailable(&context)
        }
    }

    private mutating func count(_ completion: Completion) {
        switch completion.request.type {
        case BlockRequestType.read:
            counters.reads &+= 1
            counters.bytesRead &+= completion.bytes
        case BlockRequestType.write:
            counters.writes &+= 1
            counters.bytesWritten &+= completion.bytes
        case BlockRequestType.flush: counters.flushes &+= 1
        case BlockRequestType.getID: counters.getIDs &+= 1
        case BlockRequestType.discard: counters.discards &+= 1
        case BlockRequestType.writeZeroes: counters.writeZeroes &+= 1
        default: break
        }
        switch completion.status {
        case BlockStatus.ok: break
        case BlockStatus.unsupported: counters.unsupported &+= 1
        default: counters.errors &+= 1
        }
    }
}

extension BlockModel: VirtioModelState {
    /// Saved only when nothing is pending or in flight (the machine drains its disks before a
    /// snapshot); counters and the reset generation are the model's only state of its own.
    public func save(into out: inout StateWriter, now: UInt64) {
        for path in BlockCounters.paths { out.u64(counters[keyPath: path]) }
        out.u64(capacitySectors)
        out.bool(readOnly)
    }

    public mutating func restore(from input: inout StateReader, now: UInt64) throws(StateError) {
        var counters = BlockCounters()
        for path in BlockCounters.paths { counters[keyPath: path] = min(try input.u64("counter"), counterLimit) }
        let capacity = try input.u64("capacity")
        let readOnly = try input.bool("read-only")
        // The driver sized its disk from the capacity and features it read: the restored disk
        // must show the same, or the guest's file system would run past its end.
        guard capacity == capacitySectors, readOnly == self.readOnly else {
            throw .invalid("virtio-blk: the snapshot's disk had \(capacity) sectors\(readOnly ? ", read-only" : ""), this one has \(capacitySectors)\(self.readOnly ? ", read-only" : "")")
        }
        self.counters = counters
        pending = []
        inFlight = 0
    }
}

/// Executes block requests against a backend, moving data straight between the disk and guest
/// RAM (no copy through the VMM). Runs on the I/O worker; KVM-free, so tests run it with fakes.
public struct BlockExecutor: Sendable {
    public let backend: any BlockBackend
    public let memory: GuestMemory
    public let serial: [UInt8]

    public init(backend: any BlockBackend, memory: GuestMemory, serial: [UInt8]) {
        (self.backend, self.memory, self.serial) = (backend, memory, serial)
    }

    public func execute(_ request: BlockRequest) -> BlockModel.Completion {
        let (status, written, bytes) = run(request)
        return .init(request: request, status: status, written: written, bytes: status == BlockStatus.ok ? bytes : 0)
    }

    /// Status, bytes written into the driver's buffers (status included), data bytes moved.
    private func run(_ request: BlockRequest) -> (UInt8, UInt32, UInt64) {
        let length = request.data.count
        switch request.type {
        case BlockRequestType.read:
            guard length % BlockModel.sectorSize == 0, let offset = range(request.sector, length) else { return (BlockStatus.ioError, 1, 0) }
            let ok = transfer(request.data, offset: offset, toGuest: true)
            return (ok ? BlockStatus.ok : BlockStatus.ioError, ok ? UInt32(clamping: length + 1) : 1, length)
        case BlockRequestType.write:
            guard !backend.readOnly, length % BlockModel.sectorSize == 0, let offset = range(request.sector, length) else {
                return (BlockStatus.ioError, 1, 0)
            }
            return (transfer(request.data, offset: offset, toGuest: false) ? BlockStatus.ok : BlockStatus.ioError, 1, length)
        case BlockRequestType.flush:
            return (backend.readOnly || backend.flush() ? BlockStatus.ok : BlockStatus.ioError, 1, 0)
        case BlockRequestType.getID:
            // The serial, NUL-padded when shorter than the 20 bytes (and the buffer allows).
            let id = Array((serial + [UInt8](repeating: 0, count: BlockModel.idLength)).prefix(min(BlockModel.idLength, Int(length))))
            var done = 0
            for segment in request.data.segments where done < id.count {
                let part = Array(id[done..<min(id.count, done + Int(segment.length))])
                guard (try? memory.write(part, at: segment.address)) != nil else { return (BlockStatus.ioError, 1, 0) }
                done += part.count
            }
            return (BlockStatus.ok, UInt32(done + 1), 0)
        case BlockRequestType.discard, BlockRequestType.writeZeroes:
            let zeroes = request.type == BlockRequestType.writeZeroes
            guard backend.supportsDiscard, !backend.readOnly else { return (BlockStatus.unsupported, 1, 0) }
            return (discard(request.data, zeroes: zeroes) ? BlockStatus.ok : BlockStatus.ioError, 1, 0)
        default:
            return (BlockStatus.unsupported, 1, 0)
        }
    }

    /// The byte offset of `sector` when [sector, sector + length) lies on the disk.
    private func range(_ sector: UInt64, _ length: UInt64) -> UInt64? {
        let (offset, overflow) = sector.multipliedReportingOverflow(by: BlockModel.sectorSize)
        guard !overflow, offset <= backend.size, length <= backend.size - offset else { return nil }
        return offset
    }

    private func transfer(_ data: ScatterList, offset: UInt64, toGuest: Bool) -> Bool {
        var position = offset
        for segment in data.segments {
            let ok = (try? memory.withRAM(segment.address, length: Int(segment.length), filling: toGuest) { bytes in
                toGuest ? backend.read(into: bytes, at: position) : backend.write(from: UnsafeRawBufferPointer(bytes), at: position)
            }) ?? false
            guard ok else { return false }
            position += UInt64(segment.length)
        }
        return true
    }

    /// Discard and write-zeroes carry 16-byte segments: u64 sector, u32 sectors, u32 flags
    /// (bit 0: unmap). Every segment is checked before any is executed.
    private func discard(_ data: ScatterList, zeroes: Bool) -> Bool {
        let count = data.count / 16
        guard data.count % 16 == 0, count >= 1, count <= UInt64(BlockModel.discardSegmentsMaximum),
              let bytes = try? data.read(Int(data.count), memory: memory) else { return false }
        var ranges: [(UInt64, UInt64, Bool)] = []
        for index in 0..<Int(count) {
            let sector = LittleEndian.load(bytes, at: 16 * index, size: 8)
            let sectors = LittleEndian.load(bytes, at: 16 * index + 8, size: 4)
            let flags = LittleEndian.load(bytes, at: 16 * index + 12, size: 4)
            guard sectors <= UInt64(BlockModel.discardSectorsMaximum), flags & ~1 == 0, zeroes || flags == 0,
                  let offset = range(sector, sectors * BlockModel.sectorSize) else { return false }
            ranges.append((offset, sectors * BlockModel.sectorSize, flags & 1 != 0))
        }
        for (offset, length, unmap) in ranges where length > 0 {
            guard zeroes ? backend.writeZeroes(at: offset, length: length, unmap: unmap) : backend.discard(at: offset, length: length) else {
                return false
            }
        }
        return true
    }
}
