import Synchronization
import Testing
@testable import VMMCore

/// Records accesses; reads return the offset plus a marker.
final class RecordingDevice: BusDevice {
    let log = Mutex<[String]>([])
    func read(offset: UInt64, size: Int) -> UInt64 {
        log.withLock { $0.append("r \(offset) \(size)") }
        return 0xA0 + offset
    }
    func write(offset: UInt64, size: Int, value: UInt64) {
        log.withLock { $0.append("w \(offset) \(size) \(value)") }
    }
}

@Suite struct BusTests {
    @Test func dispatchesByRangeWithDeviceRelativeOffsets() throws {
        var bus = Bus()
        let low = RecordingDevice(), high = RecordingDevice()
        try bus.insert(high, at: BusRange(base: 0x3f8, length: 8))
        try bus.insert(low, at: BusRange(base: 0x2f8, length: 8))
        #expect(bus.read(0x3fd, size: 1) == 0xA5)
        #expect(bus.write(0x2f8, size: 1, value: 0x41))
        #expect(bus.read(0x3ff, size: 1) == 0xA7)
        #expect(low.log.withLock { $0 } == ["w 0 1 65"])
        #expect(high.log.withLock { $0 } == ["r 5 1", "r 7 1"])
    }

    @Test func unclaimedAccessesAreReported() throws {
        var bus = Bus()
        try bus.insert(RecordingDevice(), at: BusRange(base: 0x100, length: 0x10))
        #expect(bus.read(0xFF, size: 1) == nil)
        #expect(bus.read(0x110, size: 4) == nil)
        #expect(!bus.write(0, size: 1, value: 0))
        #expect(!bus.write(UInt64.max, size: 8, value: 0))
    }

    @Test func writesAreMaskedToTheAccessSize() throws {
        var bus = Bus()
        let device = RecordingDevice()
        try bus.insert(device, at: BusRange(base: 0, length: 4))
        #expect(bus.write(1, size: 2, value: 0x1_2345))
        #expect(device.log.withLock { $0 } == ["w 1 2 9029"])
    }

    @Test func rejectsOverlapsAndEmptyRanges() throws {
        var bus = Bus()
        try bus.insert(RecordingDevice(), at: BusRange(base: 0x1000, length: 0x100))
        try bus.insert(RecordingDevice(), at: BusRange(base: 0x1100, length: 0x100)) // adjacent is fine
        #expect(throws: BusError.overlap(new: BusRange(base: 0x10FF, length: 2), existing: BusRange(base: 0x1000, length: 0x100))) {
            try bus.insert(RecordingDevice(), at: BusRange(base: 0x10FF, length: 2))
        }
        #expect(throws: BusError.self) { try bus.insert(RecordingDevice(), at: BusRange(base: 0xF00, length: 0x1000)) }
        #expect(throws: BusError.emptyRange(BusRange(base: 5, length: 0))) { try bus.insert(RecordingDevice(), at: BusRange(base: 5, length: 0)) }
        #expect(throws: BusError.self) { try bus.insert(RecordingDevice(), at: BusRange(base: UInt64.max, length: 2)) }
        #expect(bus.entries.map(\.range.base) == [0x1000, 0x1100])
    }

    @Test func maskCoversEverySize() {
        #expect(Bus.mask(1) == 0xFF)
        #expect(Bus.mask(2) == 0xFFFF)
        #expect(Bus.mask(4) == 0xFFFF_FFFF)
        #expect(Bus.mask(8) == UInt64.max)
    }
}
