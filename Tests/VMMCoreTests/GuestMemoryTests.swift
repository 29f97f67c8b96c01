import Testing
@testable import VMMCore

@Suite struct GuestMemoryTests {
    let memory = try! GuestMemory(ranges: [(start: 0, size: 0x10000), (start: 0x100000, size: 0x2000)])

    @Test func storesAndLoadsLittleEndianAtAnyAlignment() throws {
        try memory.store(UInt64(0x1122_3344_5566_7788), at: 0x103)
        #expect(try memory.load(UInt64.self, at: 0x103) == 0x1122_3344_5566_7788)
        #expect(try memory.read(0x103, length: 2) == [0x88, 0x77])
        try memory.store(UInt16(0xBEEF), at: 0x101FFE)
        #expect(try memory.load(UInt16.self, at: 0x101FFE) == 0xBEEF)
    }

    @Test func rejectsAccessesOutsideOrAcrossRegions() {
        #expect(throws: GuestMemoryError.outOfBounds(address: 0xFFFF, length: 2)) {
            try memory.store(UInt16(1), at: 0xFFFF)
        }
        #expect(throws: GuestMemoryError.outOfBounds(address: 0x20000, length: 1)) {
            _ = try memory.read(0x20000, length: 1)
        }
        #expect(throws: GuestMemoryError.outOfBounds(address: 0x102000, length: 8)) {
            _ = try memory.load(UInt64.self, at: 0x102000)
        }
        #expect(throws: GuestMemoryError.outOfBounds(address: UInt64.max - 1, length: 4)) {
            _ = try memory.load(UInt32.self, at: UInt64.max - 1)
        }
        #expect(memory.contains(0xF000, length: 0x1000))
        #expect(!memory.contains(0xF000, length: 0x1001))
    }

    @Test func discardedPagesReadAsZero() throws {
        try memory.fill(0x1000, length: 0x2000, with: 0xAB)
        try memory.discard(0x1000, length: 0x1000)
        #expect(try memory.read(0x1000, length: 4) == [0, 0, 0, 0])
        #expect(try memory.read(0x2000, length: 1) == [0xAB])
        #expect(throws: GuestMemoryError.self) { try memory.discard(0x1001, length: 0x1000) }
    }

    @Test func rejectsBadLayouts() {
        #expect(throws: GuestMemoryError.self) { try GuestMemory(ranges: [(start: 0, size: 0x2000), (start: 0x1000, size: 0x1000)]) }
        #expect(throws: GuestMemoryError.self) { try GuestMemory(ranges: [(start: 0x10, size: 0x1000)]) }
        #expect(throws: GuestMemoryError.self) { try GuestMemory(ranges: [(start: 0, size: 0)]) }
    }

    @Test func totalSizeAddsRegions() {
        #expect(memory.totalSize == 0x12000)
        #expect(memory.region(containing: 0x100FFF)?.guestStart == 0x100000)
    }
}

@Suite struct ResidentMemoryTests {
    @Test func countsTouchedPagesAndForgetsDiscardedOnes() throws {
        let memory = try GuestMemory(ranges: [(start: 0, size: 64 << 20)])
        #expect(memory.residentBytes() == 0)
        try memory.fill(0x10000, length: 8 << 20, with: 1)
        #expect(memory.residentBytes() == 8 << 20)
        try memory.discard(0x10000, length: 4 << 20)
        #expect(memory.residentBytes() == 4 << 20)
    }
}
