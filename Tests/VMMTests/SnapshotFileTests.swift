import Testing
import VMMCore
@testable import KVM
@testable import VMM

@Suite struct SnapshotFileTests {
    @Test func crc32IsZlibs() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([]) == 0)
    }

    @Test func sectionsRoundTripAndAreFoundByTagAndIndex() throws {
        let file = SnapshotFile(sections: [.init("CONF", [1, 2, 3]), .init("VCPU", index: 1, [9]), .init("VCPU", index: 0, [])])
        let decoded = try SnapshotFile(decoding: file.encoded)
        #expect(decoded == file)
        #expect(try decoded.section("VCPU", index: 1) == [9])
        #expect(throws: StateError.self) { try decoded.section("DEVS") }
        let twice = SnapshotFile(sections: [.init("CONF", [1]), .init("CONF", [2])])
        #expect(throws: StateError.self) { try twice.section("CONF") }
    }

    @Test func everyDamagedByteIsCaught() {
        let bytes = SnapshotFile(sections: [.init("CONF", Array(repeating: 7, count: 40)), .init("DEVS", [1, 2])]).encoded
        for index in bytes.indices {
            var damaged = bytes
            damaged[index] ^= 0x01
            #expect(throws: StateError.self, "byte \(index)") { try SnapshotFile(decoding: damaged) }
        }
        for length in 0..<bytes.count {
            #expect(throws: StateError.self) { try SnapshotFile(decoding: Array(bytes.prefix(length))) }
        }
    }

    @Test func lengthsAreBoundedBeforeAnythingIsAllocated() {
        var out = StateWriter()
        out.raw(SnapshotFile.magic)
        out.u32(SnapshotFile.version)
        out.u32(1)
        out.u32(0)
        out.u32(CRC32.checksum(out.bytes))
        out.raw(Array("HUGE".utf8))
        out.u32(0)
        out.u64(UInt64.max) // a section claiming 16 EiB
        out.u32(0)
        #expect(throws: StateError.invalid("section HUGE is \(UInt64.max) bytes, more than \(SnapshotFile.maximumSectionSize)")) {
            try SnapshotFile(decoding: out.bytes)
        }
        var reader = StateReader([0xFF, 0xFF, 0xFF, 0xFF], context: "test")
        #expect(throws: StateError.self) { try reader.blob("x", maximum: 16) }
    }

    @Test func aGuestThatSawAFeatureTheHostLacksIsRefused() {
        let saved = [CPUIDEntry(function: 1, ecx: 0x8000_0001 | 1 << 27, edx: 0x10), CPUIDEntry(function: 7, flags: CPUIDEntry.significantIndex, ebx: 0x20)]
        let same = [CPUIDEntry(function: 1, ecx: 0x8000_0001, edx: 0x10), CPUIDEntry(function: 7, flags: CPUIDEntry.significantIndex, ebx: 0x20)]
        #expect(CPUFeatures.missing(saved: saved, here: same) == nil, "OSXSAVE follows CR4 and is not a feature")
        let lacking = [CPUIDEntry(function: 1, ecx: 0x8000_0001, edx: 0x10), CPUIDEntry(function: 7, flags: CPUIDEntry.significantIndex, ebx: 0)]
        #expect(CPUFeatures.missing(saved: saved, here: lacking) == "CPUID 0x7.0 ebx bits 0x20")
        #expect(CPUFeatures.missing(saved: [], here: lacking) == nil)
    }

    @Test func deviceTimesAreAgesAndNeverIsKept() throws {
        var out = StateWriter()
        out.age(of: 900, now: 1000)
        out.age(of: 0, now: 1000)
        out.age(of: 2000, now: 1000) // a time ahead of now is saved as now
        var input = StateReader(out.bytes, context: "ages")
        #expect(try input.age("a", now: 50_000) == 49_900)
        #expect(try input.age("never", now: 50_000) == 0)
        #expect(try input.age("ahead", now: 50_000) == 50_000)
        try input.finish()
    }
}
