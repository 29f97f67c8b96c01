import Synchronization
import Testing
import VMMCore
@testable import Devices

final class ErrorLog: Sendable {
    let messages = Mutex<[String]>([])
    func append(_ message: String) { messages.withLock { $0.append(message) } }
    var last: String? { messages.withLock { $0.last } }
}

/// The balloon's driver.
typealias TestDriver = VirtioTestDriver<BalloonModel>

/// A virtio driver written in Swift against in-memory guest RAM: it sets the device up through its
/// registers and builds rings and descriptors exactly as a guest would.
struct VirtioTestDriver<Model: VirtioModel> {
    typealias Device = VirtioMMIODevice<EdgeCounter, Model>
    let device: Device
    let memory: GuestMemory
    let line: EdgeCounter
    let clock: FakeClock
    let errors: ErrorLog
    static var queueSize: UInt16 { 8 }
    /// Ring areas for queue q at 0x10000 + q * 0x1000; buffers at 0x20000.
    static func rings(_ queue: Int) -> (desc: UInt64, avail: UInt64, used: UInt64) {
        let base = 0x10000 + UInt64(queue) * 0x1000
        return (base, base + 0x200, base + 0x400)
    }
    var availIndex = [UInt16](repeating: 0, count: 3)

    /// Sets up `model`'s device with `features` and its first `queues` queues (rings at
    /// `rings(q)`, size `queueSize`); `memory` defaults to 16 MiB of RAM at 0.
    init(model: Model, features: UInt64, queues: Int, memory: GuestMemory? = nil, driverOK: Bool = true) throws {
        self.memory = try memory ?? GuestMemory(ranges: [(start: 0, size: 16 << 20)])
        line = EdgeCounter()
        clock = FakeClock()
        let errors = ErrorLog()
        self.errors = errors
        device = Device(model: model, memory: self.memory,
                        interrupt: line, clock: clock, scheduler: ManualTimerScheduler(),
                        onError: { message in errors.append(message) })
        write(VirtioMMIORegister.status, 0)
        write(VirtioMMIORegister.status, VirtioStatus.acknowledge | VirtioStatus.driver)
        write(VirtioMMIORegister.driverFeaturesSel, 0)
        write(VirtioMMIORegister.driverFeatures, UInt32(truncatingIfNeeded: features))
        write(VirtioMMIORegister.driverFeaturesSel, 1)
        write(VirtioMMIORegister.driverFeatures, UInt32(truncatingIfNeeded: features >> 32))
        write(VirtioMMIORegister.status, VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK)
        for queue in 0..<queues {
            let r = Self.rings(queue)
            write(VirtioMMIORegister.queueSel, UInt32(queue))
            write(VirtioMMIORegister.queueNum, UInt32(Self.queueSize))
            write(VirtioMMIORegister.queueDescLow, UInt32(r.desc))
            write(VirtioMMIORegister.queueDriverLow, UInt32(r.avail))
            write(VirtioMMIORegister.queueDeviceLow, UInt32(r.used))
            write(VirtioMMIORegister.queueReady, 1)
        }
        if driverOK { setDriverOK() }
    }

    func setDriverOK() { write(VirtioMMIORegister.status, read(VirtioMMIORegister.status) | VirtioStatus.driverOK) }

    func read(_ register: UInt64) -> UInt32 { UInt32(device.read(offset: register, size: 4)) }
    func write(_ register: UInt64, _ value: UInt32) { device.write(offset: register, size: 4, value: UInt64(value)) }

    func descriptor(_ queue: Int, _ index: UInt16, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0) throws {
        let entry = Self.rings(queue).desc + UInt64(index) * 16
        try memory.store(address, at: entry)
        try memory.store(length, at: entry + 8)
        try memory.store(flags, at: entry + 12)
        try memory.store(next, at: entry + 14)
    }

    /// Makes descriptor `head` available on `queue` and notifies.
    mutating func submit(_ queue: Int, head: UInt16, notify: Bool = true) throws {
        let avail = Self.rings(queue).avail
        try memory.store(head, at: avail + 4 + 2 * UInt64(availIndex[queue] % Self.queueSize))
        availIndex[queue] &+= 1
        try memory.store(availIndex[queue], at: avail + 2)
        if notify { write(VirtioMMIORegister.queueNotify, UInt32(queue)) }
    }

    func usedIndex(_ queue: Int) throws -> UInt16 { try memory.load(UInt16.self, at: Self.rings(queue).used + 2) }

    /// Writes PFNs at `address` and submits them as one buffer on `queue` (0 inflate, 1 deflate).
    mutating func sendPFNs(_ pfns: [UInt32], queue: Int, address: UInt64 = 0x20000, slot: UInt16 = 0) throws {
        for (index, pfn) in pfns.enumerated() { try memory.store(pfn, at: address + UInt64(index * 4)) }
        try descriptor(queue, slot, address: address, length: UInt32(pfns.count * 4))
        try submit(queue, head: slot)
    }

    var model: Model { device.withModel { model, _ in model } }
}

extension VirtioTestDriver where Model == BalloonModel {
    init(features: UInt64 = BalloonFeature.statsQueue | BalloonFeature.mustTellHost | VirtioFeature.version1,
         target: UInt32 = 0, driverOK: Bool = true) throws {
        try self.init(model: BalloonModel(targetPages: target, statsInterval: 1_000_000_000), features: features, queues: 3, driverOK: driverOK)
    }

    var balloon: BalloonModel { model }
}

@Suite struct VirtioTransportTests {
    @Test func identifiesAsAVersion2Balloon() throws {
        let driver = try TestDriver()
        #expect(driver.read(VirtioMMIORegister.magic) == 0x7472_6976)
        #expect(driver.read(VirtioMMIORegister.version) == 2)
        #expect(driver.read(VirtioMMIORegister.deviceID) == 5)
        driver.write(VirtioMMIORegister.deviceFeaturesSel, 0)
        #expect(driver.read(VirtioMMIORegister.deviceFeatures) == 0b111)
        driver.write(VirtioMMIORegister.deviceFeaturesSel, 1)
        #expect(driver.read(VirtioMMIORegister.deviceFeatures) == 1) // VERSION_1
        #expect(driver.read(VirtioMMIORegister.status) == 0x0F)
        driver.write(VirtioMMIORegister.queueSel, 0)
        #expect(driver.read(VirtioMMIORegister.queueNumMax) == 256)
        #expect(driver.read(VirtioMMIORegister.queueReady) == 1)
        #expect(driver.device.read(offset: VirtioMMIORegister.magic, size: 2) == 0) // registers are 32-bit
    }

    @Test func refusesFeaturesItDidNotOffer() throws {
        let driver = try TestDriver(features: 1 << 10 | VirtioFeature.version1)
        #expect(driver.read(VirtioMMIORegister.status) & VirtioStatus.featuresOK == 0)
        let legacy = try TestDriver(features: BalloonFeature.statsQueue) // no VERSION_1
        #expect(legacy.read(VirtioMMIORegister.status) & VirtioStatus.featuresOK == 0)
    }

    @Test func targetChangesRaiseAConfigInterruptUntilAcknowledged() throws {
        let driver = try TestDriver()
        let generation = driver.read(VirtioMMIORegister.configGeneration)
        driver.device.withModel { model, context in model.setTarget(pages: 300, context: &context) }
        #expect(driver.device.read(offset: VirtioMMIORegister.config, size: 4) == 300)
        #expect(driver.read(VirtioMMIORegister.configGeneration) == generation + 1)
        #expect(driver.read(VirtioMMIORegister.interruptStatus) == 2)
        #expect(driver.line.level)
        driver.write(VirtioMMIORegister.interruptACK, 2)
        #expect(!driver.line.level)
        driver.device.write(offset: VirtioMMIORegister.config + 4, size: 4, value: 120)
        #expect(driver.balloon.actualPages == 120)
        driver.device.write(offset: VirtioMMIORegister.config, size: 4, value: 7) // num_pages is the device's
        #expect(driver.balloon.targetPages == 300)
    }

    @Test func invalidQueueSetupNeedsReset() throws {
        let driver = try TestDriver()
        driver.write(VirtioMMIORegister.status, 0) // reset
        #expect(driver.read(VirtioMMIORegister.queueReady) == 0)
        driver.write(VirtioMMIORegister.queueSel, 0)
        driver.write(VirtioMMIORegister.queueNum, 6) // not a power of two
        driver.write(VirtioMMIORegister.queueReady, 1)
        #expect(driver.read(VirtioMMIORegister.queueReady) == 0)
        #expect(driver.read(VirtioMMIORegister.status) & VirtioStatus.needsReset != 0)
        driver.write(VirtioMMIORegister.status, 0)
        #expect(driver.read(VirtioMMIORegister.status) == 0)
        driver.write(VirtioMMIORegister.queueNum, 8)
        driver.write(VirtioMMIORegister.queueDescLow, 0x0100_0000) // past the end of RAM
        driver.write(VirtioMMIORegister.queueReady, 1)
        #expect(driver.errors.last?.contains("outside guest RAM") == true)
    }
}

@Suite struct BalloonTests {
    @Test func inflatedPagesLeaveTheHostAndReadZero() throws {
        var driver = try TestDriver()
        try driver.memory.fill(0x100000, length: 64 * 4096, with: 0x5A)
        #expect(try driver.memory.residentBytes(0x100000, length: 64 * 4096) == 64 * 4096)
        let pfns = (0..<64).map { UInt32(0x100 + $0) }.reversed() // out of order: coalesced anyway
        try driver.sendPFNs(Array(pfns), queue: 0)
        #expect(try driver.usedIndex(0) == 1)
        #expect(driver.line.level)
        let counters = driver.balloon.counters
        #expect(counters.inflated == 64 && counters.released == 64 && counters.releaseCalls == 1)
        #expect(try driver.memory.residentBytes(0x100000, length: 64 * 4096) == 0)
        #expect(try driver.memory.read(0x100000, length: 8) == [0, 0, 0, 0, 0, 0, 0, 0])
        try driver.sendPFNs([0x100, 0x101], queue: 1, slot: 1)
        #expect(driver.balloon.counters.deflated == 2)
    }

    @Test func pfnsOutsideRAMAreRejectedButValidOnesInTheSameBufferWork() throws {
        var driver = try TestDriver()
        try driver.memory.fill(0x200000, length: 4096, with: 1)
        try driver.sendPFNs([0x200, 0xFFFF_FFFF, 0x1000, 0xFFF], queue: 0) // 0x1000 = 16 MiB: just past RAM
        let counters = driver.balloon.counters
        #expect(counters.rejectedPFNs == 2)
        #expect(counters.released == 2)
        #expect(driver.read(VirtioMMIORegister.status) & VirtioStatus.needsReset == 0)
    }

    @Test func descriptorLoopsAndLongChainsNeedReset() throws {
        var driver = try TestDriver()
        try driver.descriptor(0, 0, address: 0x20000, length: 4, flags: 1, next: 1)
        try driver.descriptor(0, 1, address: 0x20000, length: 4, flags: 1, next: 0)
        try driver.submit(0, head: 0)
        #expect(driver.read(VirtioMMIORegister.status) & VirtioStatus.needsReset != 0)
        #expect(driver.errors.last?.contains("longer than 8") == true)
        #expect(driver.device.queueErrors == 1)
        try driver.sendPFNs([0x300], queue: 0, slot: 2) // ignored until reset
        #expect(driver.balloon.counters.inflated == 0)
    }

    @Test(arguments: [
        ("outside RAM", UInt64(0x2000_0000), UInt16(0), UInt16(0), UInt16(0)),
        ("indirect", UInt64(0x20000), UInt16(4), UInt16(0), UInt16(0)),
        ("next out of range", UInt64(0x20000), UInt16(1), UInt16(200), UInt16(0)),
        ("head out of range", UInt64(0x20000), UInt16(0), UInt16(0), UInt16(9)),
    ])
    func hostileDescriptorsNeedReset(name: String, address: UInt64, flags: UInt16, next: UInt16, head: UInt16) throws {
        var driver = try TestDriver()
        try driver.descriptor(0, 0, address: address, length: 4, flags: flags, next: next)
        try driver.submit(0, head: head)
        #expect(driver.read(VirtioMMIORegister.status) & VirtioStatus.needsReset != 0, "\(name)")
        #expect(driver.balloon.counters.released == 0)
    }

    @Test func availIndexJumpsNeedReset() throws {
        var driver = try TestDriver()
        try driver.memory.store(UInt16(100), at: TestDriver.rings(0).avail + 2)
        driver.write(VirtioMMIORegister.queueNotify, 0)
        #expect(driver.errors.last?.contains("jumped") == true)
    }

    @Test func statisticsArriveAndAreRequestedAgainOnTheTimer() throws {
        var driver = try TestDriver()
        func stats(_ free: UInt64) throws {
            try driver.memory.store(UInt16(4), at: 0x30000)
            try driver.memory.store(free, at: 0x30002)
            try driver.memory.store(UInt16(5), at: 0x3000A)
            try driver.memory.store(UInt64(16 << 20), at: 0x3000C)
            try driver.memory.store(UInt16(99), at: 0x30014) // unknown tag: skipped
            try driver.memory.store(UInt64(1), at: 0x30016)
        }
        try stats(1000)
        try driver.descriptor(2, 0, address: 0x30000, length: 30)
        try driver.submit(2, head: 0)
        #expect(driver.balloon.statistics?[.freeMemory] == 1000)
        #expect(driver.balloon.statistics?[.totalMemory] == 16 << 20)
        #expect(try driver.usedIndex(2) == 0) // held until the host wants new numbers
        let deadline = try #require(driver.device.nextDeadline())
        driver.clock.time.withLock { $0 = deadline }
        driver.device.fire(now: deadline)
        #expect(try driver.usedIndex(2) == 1)
        try stats(2000)
        try driver.submit(2, head: 0)
        #expect(driver.balloon.statistics?[.freeMemory] == 2000)
        #expect(driver.balloon.counters.statsUpdates == 2)
    }

    /// Linux's driver primes the stats queue (and notifies) before it sets DRIVER_OK.
    @Test func statisticsPrimedBeforeDriverOKAreReadOnceTheDriverIsReady() throws {
        var driver = try TestDriver(driverOK: false)
        try driver.memory.store(UInt16(4), at: 0x30000)
        try driver.memory.store(UInt64(777), at: 0x30002)
        try driver.descriptor(2, 0, address: 0x30000, length: 10)
        try driver.submit(2, head: 0)
        #expect(driver.balloon.statistics == nil)
        driver.setDriverOK()
        #expect(driver.balloon.statistics?[.freeMemory] == 777)
        #expect(driver.balloon.counters.statsUpdates == 1)
        #expect(driver.errors.messages.withLock { $0 }.isEmpty)
    }

    @Test func wrongLengthStatisticsAreCountedAndIgnored() throws {
        var driver = try TestDriver()
        try driver.descriptor(2, 0, address: 0x30000, length: 15)
        try driver.submit(2, head: 0)
        #expect(driver.balloon.counters.statsRejected == 1)
        #expect(driver.balloon.statistics == nil)
        #expect(driver.read(VirtioMMIORegister.status) & VirtioStatus.needsReset == 0)
    }

    @Test func coalescesIntoRanges() {
        let ranges = BalloonModel.coalesce([0x3000, 0x1000, 0x2000, 0x5000, 0x5000])
        #expect(ranges == [0x1000..<0x4000, 0x5000..<0x6000])
    }
}
