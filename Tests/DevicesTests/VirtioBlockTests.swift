import Synchronization
import Testing
import VMMCore
@testable import Devices

final class WakeCounter: Sendable {
    let count = Atomic<Int>(0)
    func wake() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

/// A virtio-blk device with a driver, and the worker's half run by hand.
struct BlockRig {
    var driver: VirtioTestDriver<BlockModel>
    let disk: MemoryBlockBackend
    let wakes = WakeCounter()
    let executor: BlockExecutor
    static let header: UInt64 = 0x30000, data: UInt64 = 0x31000, status: UInt64 = 0x38000

    init(sectors: Int = 64, readOnly: Bool = false, features: UInt64? = nil) throws {
        disk = MemoryBlockBackend(sectors: sectors, readOnly: readOnly)
        let wakes = self.wakes
        let model = BlockModel(capacityBytes: disk.size, readOnly: readOnly, discardable: disk.supportsDiscard, serial: "unit-disk",
                               wake: { wakes.wake() })
        driver = try VirtioTestDriver(model: model, features: features ?? model.offeredFeatures | VirtioFeature.version1, queues: 1)
        executor = BlockExecutor(backend: disk, memory: driver.memory, serial: model.serial)
    }

    var memory: GuestMemory { driver.memory }

    /// A request as three descriptors (header, data, status) at descriptor 0.
    mutating func submit(type: UInt32, sector: UInt64, length: UInt32, deviceWrites: Bool? = nil) throws {
        try memory.store(type, at: Self.header)
        try memory.store(UInt32(0), at: Self.header + 4)
        try memory.store(sector, at: Self.header + 8)
        try memory.store(UInt8(0xFF), at: Self.status)
        let writes = deviceWrites ?? (type == BlockRequestType.read || type == BlockRequestType.getID)
        try driver.descriptor(0, 0, address: Self.header, length: 16, flags: 1, next: length > 0 ? 1 : 2)
        if length > 0 { try driver.descriptor(0, 1, address: Self.data, length: length, flags: 1 | (writes ? 2 : 0), next: 2) }
        try driver.descriptor(0, 2, address: Self.status, length: 1, flags: 2)
        try driver.submit(0, head: 0)
    }

    /// What the disk's worker does: take the queued requests, execute them, complete them.
    func work() -> Int {
        let requests = driver.device.withModel { model, context in model.takePending(context: &context) }
        let completions = requests.map(executor.execute)
        driver.device.withQueues("test") { model, context throws(VirtqueueError) in try model.complete(completions, context: &context) }
        return requests.count
    }

    func status() throws -> UInt8 { try memory.load(UInt8.self, at: Self.status) }
    func usedLength(_ slot: UInt16 = 0) throws -> UInt32 { try memory.load(UInt32.self, at: VirtioTestDriver<BlockModel>.rings(0).used + 8 + 8 * UInt64(slot)) }
}

@Suite struct VirtioBlockTests {
    @Test func configSpaceShowsCapacitySegmentsAndBlockSize() throws {
        let rig = try BlockRig(sectors: 100)
        #expect(rig.driver.read(VirtioMMIORegister.deviceID) == 2)
        #expect(rig.driver.device.read(offset: VirtioMMIORegister.config, size: 8) == 100)
        #expect(rig.driver.device.read(offset: VirtioMMIORegister.config + 12, size: 4) == UInt64(BlockModel.segmentMaximum))
        #expect(rig.driver.device.read(offset: VirtioMMIORegister.config + 20, size: 4) == 512)
        #expect(rig.driver.device.read(offset: VirtioMMIORegister.config + 0x1000, size: 4) == 0)
        #expect(rig.driver.read(VirtioMMIORegister.status) & VirtioStatus.featuresOK != 0)
    }

    @Test func aWriteWaitsForTheWorkerThenLandsOnTheDisk() throws {
        var rig = try BlockRig()
        let pattern = (0..<1024).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 5) }
        try rig.memory.write(pattern, at: BlockRig.data)
        try rig.submit(type: BlockRequestType.write, sector: 3, length: 1024)
        // The vCPU's notification only queued it: nothing used, the worker woken once.
        #expect(try rig.driver.usedIndex(0) == 0)
        #expect(rig.wakes.value == 1)
        #expect(rig.driver.model.busy)
        #expect(rig.work() == 1)
        #expect(try rig.driver.usedIndex(0) == 1)
        #expect(try rig.status() == BlockStatus.ok)
        #expect(try rig.usedLength() == 1)
        #expect(rig.driver.line.level)
        #expect(rig.disk.bytes(3 * 512..<5 * 512) == pattern)
        #expect(!rig.driver.model.busy)
        #expect(rig.driver.model.counters.writes == 1 && rig.driver.model.counters.bytesWritten == 1024)
    }

    @Test func aReadSplitAcrossDescriptorsFillsEveryPiece() throws {
        var rig = try BlockRig()
        // Header in two 8-byte pieces, data in two 512-byte pieces far apart, then the status.
        try rig.memory.store(BlockRequestType.read, at: BlockRig.header)
        try rig.memory.store(UInt64(5), at: BlockRig.header + 0x100) // header bytes 8-15: the second piece
        try rig.memory.store(UInt32(0), at: BlockRig.header + 4)
        try rig.driver.descriptor(0, 0, address: BlockRig.header, length: 8, flags: 1, next: 1)
        try rig.driver.descriptor(0, 1, address: BlockRig.header + 0x100, length: 8, flags: 1, next: 2)
        try rig.driver.descriptor(0, 2, address: BlockRig.data + 0x2000, length: 512, flags: 3, next: 3)
        try rig.driver.descriptor(0, 3, address: BlockRig.data, length: 512, flags: 3, next: 4)
        try rig.driver.descriptor(0, 4, address: BlockRig.status, length: 1, flags: 2)
        try rig.driver.submit(0, head: 0)
        #expect(rig.work() == 1)
        #expect(try rig.status() == BlockStatus.ok)
        #expect(try rig.usedLength() == 1025)
        #expect(try rig.memory.read(BlockRig.data + 0x2000, length: 512) == rig.disk.bytes(5 * 512..<6 * 512))
        #expect(try rig.memory.read(BlockRig.data, length: 512) == rig.disk.bytes(6 * 512..<7 * 512))
    }

    static let offTheDisk: [(UInt64, UInt32)] = [(64, 512), (63, 1024), (1 << 60, 512), (.max, 512), (0, 100)]

    @Test(arguments: offTheDisk)
    func requestsOffTheDiskOrOfOddLengthFail(_ sector: UInt64, _ length: UInt32) throws {
        var rig = try BlockRig(sectors: 64)
        let before = rig.disk.bytes(0..<64 * 512)
        for type in [BlockRequestType.read, BlockRequestType.write] {
            try rig.submit(type: type, sector: sector, length: length)
            _ = rig.work()
            #expect(try rig.status() == BlockStatus.ioError)
        }
        #expect(rig.disk.calls("read") == 0 && rig.disk.calls("write") == 0)
        #expect(rig.disk.bytes(0..<64 * 512) == before)
        #expect(rig.driver.model.counters.errors == 2)
    }

    @Test func aReadOnlyDiskRefusesWritesDiscardsAndZeroes() throws {
        var rig = try BlockRig(readOnly: true)
        #expect(rig.driver.model.offeredFeatures & BlockFeature.readOnly != 0)
        #expect(rig.driver.model.offeredFeatures & (BlockFeature.discard | BlockFeature.writeZeroes) == 0)
        try rig.submit(type: BlockRequestType.write, sector: 0, length: 512)
        _ = rig.work()
        #expect(try rig.status() == BlockStatus.ioError)
        for type in [BlockRequestType.discard, BlockRequestType.writeZeroes] {
            try rig.memory.store(UInt64(0), at: BlockRig.data)
            try rig.memory.store(UInt32(8), at: BlockRig.data + 8)
            try rig.memory.store(UInt32(0), at: BlockRig.data + 12)
            try rig.submit(type: type, sector: 0, length: 16)
            _ = rig.work()
            #expect(try rig.status() == BlockStatus.unsupported)
        }
        #expect(rig.disk.calls("write") == 0 && rig.disk.calls("zeroes") == 0)
        try rig.submit(type: BlockRequestType.flush, sector: 0, length: 0)
        _ = rig.work()
        #expect(try rig.status() == BlockStatus.ok)
    }

    @Test func getIDReturnsTheSerialPadded() throws {
        var rig = try BlockRig()
        try rig.memory.fill(BlockRig.data, length: 20, with: 0xEE)
        try rig.submit(type: BlockRequestType.getID, sector: 0, length: 20)
        _ = rig.work()
        #expect(try rig.status() == BlockStatus.ok)
        #expect(try rig.memory.read(BlockRig.data, length: 20) == Array("unit-disk".utf8) + [UInt8](repeating: 0, count: 11))
        try rig.memory.fill(BlockRig.data, length: 20, with: 0xEE)
        try rig.submit(type: BlockRequestType.getID, sector: 0, length: 4)
        _ = rig.work()
        #expect(try rig.memory.read(BlockRig.data, length: 5) == Array("unit".utf8) + [0xEE])
        #expect(try rig.usedLength(1) == 5)
    }

    @Test func malformedChainsAreAnsweredAtOnceWithoutTheWorker() throws {
        var rig = try BlockRig()
        // No device-writable byte: nowhere to put a status, used with nothing written.
        try rig.driver.descriptor(0, 0, address: BlockRig.header, length: 16)
        try rig.driver.submit(0, head: 0)
        #expect(try rig.driver.usedIndex(0) == 1)
        #expect(try rig.usedLength() == 0)
        // A header shorter than 16 bytes: IOERR in its status byte.
        try rig.memory.store(UInt8(0xFF), at: BlockRig.status)
        try rig.driver.descriptor(0, 0, address: BlockRig.header, length: 8, flags: 1, next: 1)
        try rig.driver.descriptor(0, 1, address: BlockRig.status, length: 1, flags: 2)
        try rig.driver.submit(0, head: 0)
        #expect(try rig.driver.usedIndex(0) == 2)
        #expect(try rig.status() == BlockStatus.ioError)
        #expect(rig.wakes.value == 0)
        #expect(rig.driver.model.counters.malformed == 2)
        // An unknown type goes to the worker and comes back UNSUPP.
        try rig.submit(type: 99, sector: 0, length: 0)
        _ = rig.work()
        #expect(try rig.status() == BlockStatus.unsupported)
    }

    @Test func completionsFromBeforeAResetAreDropped() throws {
        var rig = try BlockRig()
        try rig.submit(type: BlockRequestType.read, sector: 0, length: 512)
        let requests = rig.driver.device.withModel { model, context in model.takePending(context: &context) }
        #expect(requests.count == 1)
        // The driver resets and sets the device up again before the worker finishes.
        let features = rig.driver.model.offeredFeatures | VirtioFeature.version1
        rig.driver.write(VirtioMMIORegister.status, 0)
        rig.driver.write(VirtioMMIORegister.status, VirtioStatus.acknowledge | VirtioStatus.driver)
        rig.driver.write(VirtioMMIORegister.driverFeaturesSel, 1)
        rig.driver.write(VirtioMMIORegister.driverFeatures, UInt32(truncatingIfNeeded: features >> 32))
        rig.driver.write(VirtioMMIORegister.driverFeaturesSel, 0)
        rig.driver.write(VirtioMMIORegister.driverFeatures, UInt32(truncatingIfNeeded: features))
        rig.driver.write(VirtioMMIORegister.status, VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK)
        let r = VirtioTestDriver<BlockModel>.rings(0)
        try rig.memory.fill(r.desc, length: 0x1000)
        rig.driver.write(VirtioMMIORegister.queueSel, 0)
        rig.driver.write(VirtioMMIORegister.queueNum, UInt32(VirtioTestDriver<BlockModel>.queueSize))
        rig.driver.write(VirtioMMIORegister.queueDescLow, UInt32(r.desc))
        rig.driver.write(VirtioMMIORegister.queueDriverLow, UInt32(r.avail))
        rig.driver.write(VirtioMMIORegister.queueDeviceLow, UInt32(r.used))
        rig.driver.write(VirtioMMIORegister.queueReady, 1)
        rig.driver.setDriverOK()
        let completions = requests.map(rig.executor.execute)
        rig.driver.device.withQueues("test") { model, context throws(VirtqueueError) in try model.complete(completions, context: &context) }
        #expect(try rig.driver.usedIndex(0) == 0)
        #expect(!rig.driver.model.busy)
        #expect(rig.driver.read(VirtioMMIORegister.status) & VirtioStatus.needsReset == 0)
    }

    @Test func aDriverPublishingMoreThanTheQueueHoldsWaitsForTheWorker() throws {
        var rig = try BlockRig()
        let size = Int(VirtioTestDriver<BlockModel>.queueSize)
        // The same head made available a queue's worth of times (each taken), then a queue's
        // worth more while none completed: the device leaves those in the ring.
        try rig.submit(type: BlockRequestType.read, sector: 0, length: 512)
        for _ in 1..<(2 * size) { try rig.driver.submit(0, head: 0) }
        let taken = rig.driver.device.withModel { model, context in model.takePending(context: &context) }
        #expect(taken.count == size)
        #expect(rig.driver.device.withModel { model, context in model.takePending(context: &context) }.isEmpty, "nothing more until some complete")
        // Completing them takes the rest from the ring; the worker's next turn executes those.
        let completions = taken.map(rig.executor.execute)
        rig.driver.device.withQueues("test") { model, context throws(VirtqueueError) in try model.complete(completions, context: &context) }
        #expect(rig.work() == size)
        #expect(rig.work() == 0)
        #expect(try rig.driver.usedIndex(0) == UInt16(2 * size))
        #expect(rig.driver.read(VirtioMMIORegister.status) & VirtioStatus.needsReset == 0)
        #expect(!rig.driver.model.busy)
    }

    @Test func discardChecksEverySegmentBeforeExecutingAny() throws {
        var rig = try BlockRig(sectors: 64)
        func segment(_ index: UInt64, sector: UInt64, sectors: UInt32, flags: UInt32 = 0) throws {
            try rig.memory.store(sector, at: BlockRig.data + 16 * index)
            try rig.memory.store(sectors, at: BlockRig.data + 16 * index + 8)
            try rig.memory.store(flags, at: BlockRig.data + 16 * index + 12)
        }
        try segment(0, sector: 0, sectors: 8)
        try segment(1, sector: 60, sectors: 8) // runs past the end
        try rig.submit(type: BlockRequestType.discard, sector: 0, length: 32)
        _ = rig.work()
        #expect(try rig.status() == BlockStatus.ioError)
        #expect(rig.disk.calls("discard") == 0)
        try segment(1, sector: 56, sectors: 8, flags: 1) // unmap is for write-zeroes only
        try rig.submit(type: BlockRequestType.discard, sector: 0, length: 32)
        _ = rig.work()
        #expect(try rig.status() == BlockStatus.ioError)
        try rig.submit(type: BlockRequestType.writeZeroes, sector: 0, length: 32)
        _ = rig.work()
        #expect(try rig.status() == BlockStatus.ok)
        #expect(rig.disk.bytes(0..<8 * 512).allSatisfy { $0 == 0 } && rig.disk.bytes(56 * 512..<64 * 512).allSatisfy { $0 == 0 })
        #expect(rig.disk.bytes(8 * 512..<9 * 512).contains { $0 != 0 })
    }

    @Test func aSnapshotOfTheDeviceNeedsTheSameDisk() throws {
        var rig = try BlockRig(sectors: 64)
        try rig.submit(type: BlockRequestType.read, sector: 0, length: 512)
        _ = rig.work()
        let saved = rig.driver.device.saveState(now: 0)
        let same = try BlockRig(sectors: 64)
        try same.driver.device.restoreState(saved, now: 0)
        #expect(same.driver.model.counters.reads == 1)
        let bigger = try BlockRig(sectors: 128)
        #expect(throws: StateError.self) { try bigger.driver.device.restoreState(saved, now: 0) }
        let readOnly = try BlockRig(sectors: 64, readOnly: true)
        #expect(throws: StateError.self) { try readOnly.driver.device.restoreState(saved, now: 0) }
    }

    @Test func scatterListsSliceAcrossSegments() {
        let list = ScatterList([VirtqueueBuffer(address: 0x1000, length: 10, writable: false), VirtqueueBuffer(address: 0x5000, length: 0, writable: false),
                                VirtqueueBuffer(address: 0x2000, length: 6, writable: false)])
        #expect(list.count == 16)
        #expect(list.slice(from: 8, length: 4).segments == [VirtqueueBuffer(address: 0x1008, length: 2, writable: false),
                                                            VirtqueueBuffer(address: 0x2000, length: 2, writable: false)])
        #expect(list.slice(from: 16, length: 4).segments.isEmpty)
        #expect(list.slice(from: 3, length: .max).count == 13)
    }
}
