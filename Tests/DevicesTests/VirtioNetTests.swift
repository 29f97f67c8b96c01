import Synchronization
import Testing
import VMMCore
@testable import Devices

/// A virtio-net device with a driver: receive buffers at 0x40000 + 0x800 i, frames to send at 0x50000.
struct NetRig {
    var driver: VirtioTestDriver<NetModel>
    let wakes = WakeCounter()
    static let mac: [UInt8] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
    typealias Driver = VirtioTestDriver<NetModel>

    init(features: UInt64 = NetFeature.mac | NetFeature.status | VirtioFeature.version1) throws {
        let wakes = self.wakes
        driver = try VirtioTestDriver(model: NetModel(mac: Self.mac, wake: { wakes.wake() }), features: features, queues: 3)
    }

    var memory: GuestMemory { driver.memory }

    /// Makes receive buffer `slot` (of `length` bytes) available.
    mutating func giveReceiveBuffer(_ slot: UInt16, length: UInt32 = 0x800) throws {
        try driver.descriptor(0, slot, address: 0x40000 + UInt64(slot) * 0x800, length: length, flags: 2)
        try driver.submit(0, head: slot)
    }

    /// Sends `frame` (with a zero header) from descriptor `slot` of the transmit queue.
    mutating func send(_ frame: [UInt8], slot: UInt16 = 0) throws {
        let address = 0x50000 + UInt64(slot) * 0x800
        try memory.write([UInt8](repeating: 0, count: NetModel.headerSize) + frame, at: address)
        try driver.descriptor(1, slot, address: address, length: UInt32(NetModel.headerSize + frame.count))
        try driver.submit(1, head: slot)
    }

    func deliver(_ frame: [UInt8]) -> Bool {
        var delivered = false
        driver.device.withQueues("test") { model, context throws(VirtqueueError) in delivered = try model.deliver(frame, context: &context) }
        return delivered
    }

    func outbox() -> [[UInt8]] { driver.device.withModel { model, _ in model.takeOutbox() } }

    /// An ARP reply from the guest's MAC claiming `ip`.
    static func arp(from ip: [UInt8]) -> [UInt8] {
        [UInt8](repeating: 0xFF, count: 6) + mac + [0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2] + mac + ip + [UInt8](repeating: 0, count: 10) + [UInt8](repeating: 0, count: 18)
    }
}

@Suite struct VirtioNetTests {
    @Test func configSpaceShowsTheMACAndTheLink() throws {
        let rig = try NetRig()
        #expect(rig.driver.read(VirtioMMIORegister.deviceID) == 1)
        #expect((0..<6).map { UInt8(rig.driver.device.read(offset: VirtioMMIORegister.config + UInt64($0), size: 1)) } == NetRig.mac)
        #expect(rig.driver.device.read(offset: VirtioMMIORegister.config + 6, size: 2) == 1)
        rig.driver.device.withModel { model, context in model.setLink(up: false, context: &context) }
        #expect(rig.driver.device.read(offset: VirtioMMIORegister.config + 6, size: 2) == 0)
        #expect(rig.driver.read(VirtioMMIORegister.interruptStatus) & 2 != 0, "a link change is a configuration change")
    }

    @Test func framesTheGuestSendsReachTheOutboxAndBadOnesAreDropped() throws {
        var rig = try NetRig()
        let frame = NetRig.arp(from: [10, 0, 2, 15])
        let before = rig.wakes.value // DRIVER_OK served the ready queues once
        try rig.send(frame)
        #expect(rig.wakes.value == before + 1)
        try rig.send([1, 2, 3], slot: 1) // a runt
        try rig.send([UInt8](repeating: 7, count: NetModel.maximumFrame + 1), slot: 2)
        #expect(try rig.driver.usedIndex(1) == 3, "every transmit buffer comes back")
        #expect(rig.outbox() == [frame])
        let counters = rig.driver.model.counters
        #expect(counters.txFrames == 1 && counters.txDropped == 2 && counters.txBytes == UInt64(frame.count))
        #expect(rig.driver.model.learnedIPv4 == [10, 0, 2, 15])
    }

    @Test func theOutboxIsBounded() throws {
        var rig = try NetRig()
        let frame = NetRig.arp(from: [10, 0, 2, 15])
        for index in 0..<(NetModel.outboxLimit + 20) { try rig.send(frame, slot: UInt16(index % 8)) }
        #expect(rig.outbox().count == NetModel.outboxLimit)
        #expect(rig.driver.model.counters.txDropped == 20)
    }

    @Test func framesFromTheHostFillReceiveBuffersWithAHeader() throws {
        var rig = try NetRig()
        let frame = (0..<60).map { UInt8($0) }
        #expect(!rig.deliver(frame), "no buffer yet: the worker holds the frame")
        let before = rig.wakes.value
        try rig.giveReceiveBuffer(0)
        #expect(rig.wakes.value == before + 1, "new buffers wake the worker")
        #expect(rig.deliver(frame))
        #expect(try rig.driver.usedIndex(0) == 1)
        #expect(try rig.memory.read(0x40000, length: 12) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
        #expect(try rig.memory.read(0x40000 + 12, length: 60) == frame)
        #expect(try rig.memory.load(UInt32.self, at: VirtioTestDriver<NetModel>.rings(0).used + 8) == 72)
        #expect(rig.driver.line.level)
        // Too big for the buffer, or for any buffer: dropped, counted.
        try rig.giveReceiveBuffer(1, length: 40)
        #expect(rig.deliver(frame))
        #expect(rig.deliver([UInt8](repeating: 0, count: NetModel.maximumFrame + 1)))
        #expect(rig.driver.model.counters.rxDropped == 2 && rig.driver.model.counters.rxFrames == 1)
    }

    @Test func announcementsAskTheGuestOrComeAsAGratuitousARP() throws {
        // Without GUEST_ANNOUNCE: the VMM's own gratuitous ARP, once the guest's address is known.
        var plain = try NetRig()
        #expect(plain.driver.device.withModel { model, context in model.announce(context: &context) } == nil)
        try plain.send(NetRig.arp(from: [192, 168, 1, 9]))
        let arp = plain.driver.device.withModel { model, context in model.announce(context: &context) }
        #expect(arp == NetModel.gratuitousARP(mac: NetRig.mac, ip: [192, 168, 1, 9]))
        #expect(arp?.count == 42 && Array(arp![28..<32]) == [192, 168, 1, 9] && Array(arp![38..<42]) == [192, 168, 1, 9])
        // With it: the status bit and a configuration change, until the driver acknowledges.
        var announcing = try NetRig(features: NetFeature.mac | NetFeature.status | NetFeature.controlQueue | NetFeature.guestAnnounce | VirtioFeature.version1)
        #expect(announcing.driver.device.withModel { model, context in model.announce(context: &context) } == nil)
        #expect(announcing.driver.device.read(offset: VirtioMMIORegister.config + 6, size: 2) == 3)
        try announcing.memory.write([3, 0], at: 0x60000)
        try announcing.driver.descriptor(2, 0, address: 0x60000, length: 2, flags: 1, next: 1)
        try announcing.driver.descriptor(2, 1, address: 0x60010, length: 1, flags: 2)
        try announcing.driver.submit(2, head: 0)
        #expect(try announcing.memory.load(UInt8.self, at: 0x60010) == 0)
        #expect(announcing.driver.device.read(offset: VirtioMMIORegister.config + 6, size: 2) == 1)
        // Any other command: ERR.
        try announcing.memory.write([0, 1], at: 0x60000)
        try announcing.driver.submit(2, head: 0)
        #expect(try announcing.memory.load(UInt8.self, at: 0x60010) == 1)
        #expect(announcing.driver.model.counters.controlCommands == 2 && announcing.driver.model.counters.announcements == 1)
    }

    @Test func aSnapshotNeedsTheSameMAC() throws {
        var rig = try NetRig()
        try rig.send(NetRig.arp(from: [10, 0, 2, 15]))
        let saved = rig.driver.device.saveState(now: 0)
        let same = try NetRig()
        try same.driver.device.restoreState(saved, now: 0)
        #expect(same.driver.model.learnedIPv4 == [10, 0, 2, 15] && same.driver.model.counters.txFrames == 1)
        let other = try VirtioTestDriver(model: NetModel(mac: [2, 0, 0, 0, 0, 9], wake: {}), features: NetFeature.mac | VirtioFeature.version1, queues: 3)
        #expect(throws: StateError.self) { try other.device.restoreState(saved, now: 0) }
    }
}
