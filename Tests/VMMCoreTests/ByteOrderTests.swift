import Testing
import VMMCore

@Suite struct ByteOrderTests {
    @Test func bytesAreLeastSignificantFirstAndWidthsPast8AreZero() {
        #expect(LittleEndian.bytes(UInt32(0x1234_5678)) == [0x78, 0x56, 0x34, 0x12])
        #expect(LittleEndian.bytes(UInt64(0xAABB), size: 3) == [0xBB, 0xAA, 0x00])
        #expect(LittleEndian.bytes(UInt64.max, size: 10) == Array(repeating: 0xFF, count: 8) + [0, 0])
        #expect(LittleEndian.bytes(UInt8(1), size: -1) == [])
    }

    @Test func storeDropsWhatFallsOutside() {
        var bytes = [UInt8](repeating: 0, count: 4)
        LittleEndian.store(UInt32(0x0403_0201), into: &bytes, at: 2)
        #expect(bytes == [0, 0, 0x01, 0x02])
        LittleEndian.store(UInt16(0xFFFF), into: &bytes, at: -1)
        #expect(bytes == [0xFF, 0, 0x01, 0x02])
        LittleEndian.store(UInt64.max, into: &bytes, at: Int.max) // no overflow trap
        #expect(bytes == [0xFF, 0, 0x01, 0x02])
    }

    @Test func loadReadsMissingBytesAsZero() {
        let bytes: [UInt8] = [0x01, 0x02, 0x03]
        #expect(LittleEndian.load(bytes) == 0x030201)
        #expect(LittleEndian.load(bytes, at: 1, size: 1) == 0x02)
        #expect(LittleEndian.load(bytes, at: 2, size: 4) == 0x03)
        #expect(LittleEndian.load(bytes, at: 9) == 0)
        #expect(LittleEndian.load(bytes[1...]) == 0x0302) // slices count from their own start
    }

    @Test func numbersInDecimalOrHex() {
        #expect(parseNumber("0x3F8") == 0x3F8)
        #expect(parseNumber("1016") == 1016)
        #expect(parseNumber("0x1_0000_0000_0000_0000") == nil)
        #expect(parseNumber("0x10000000000000000") == nil)
        #expect(parseNumber("-1") == nil)
        #expect(hex(0xBEEF) == "beef")
    }
}
