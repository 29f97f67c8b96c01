import Testing
@testable import Loaders

/// Builds a minimal ELF64 executable: one PT_LOAD segment of `payload` at `address`.
func makeELF(payload: [UInt8] = [0xF4], address: UInt64 = 0x100000, memsz: UInt64? = nil,
             class elfClass: UInt8 = 2, machine: UInt16 = 62, type: UInt16 = 2, programType: UInt32 = 1) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 64 + 56)
    func put(_ value: UInt64, _ offset: Int, _ width: Int) {
        for i in 0..<width { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
    bytes[0...3] = [0x7F, 0x45, 0x4C, 0x46]
    bytes[4] = elfClass
    bytes[5] = 1
    bytes[6] = 1
    put(UInt64(type), 16, 2)
    put(UInt64(machine), 18, 2)
    put(address, 24, 8) // entry
    put(64, 32, 8) // phoff
    put(56, 54, 2)
    put(1, 56, 2)
    put(UInt64(programType), 64, 4)
    put(120, 64 + 8, 8) // p_offset
    put(address, 64 + 16, 8)
    put(address, 64 + 24, 8)
    put(UInt64(payload.count), 64 + 32, 8)
    put(memsz ?? UInt64(payload.count), 64 + 40, 8)
    return bytes + payload
}

@Suite struct ELF64Tests {
    @Test func loadsSegmentsAndEntry() throws {
        let image = try ELF64.load(makeELF(payload: [1, 2, 3], address: 0x200000, memsz: 0x1000))
        #expect(image.format == .elf64)
        #expect(image.entry == 0x200000)
        #expect(image.segments == [ImageSegment(address: 0x200000, bytes: [1, 2, 3][...], memorySize: 0x1000)])
        #expect(ELF64.isELF(makeELF()))
    }

    @Test func rejectsWrongIdentity() {
        var bad = makeELF()
        bad[3] = 0x47
        #expect(throws: LoaderError.badMagic) { try ELF64.load(bad) }
        #expect(throws: LoaderError.unsupportedClass(1)) { try ELF64.load(makeELF(class: 1)) }
        #expect(throws: LoaderError.unsupportedMachine(3)) { try ELF64.load(makeELF(machine: 3)) }
        #expect(throws: LoaderError.unsupportedType(3)) { try ELF64.load(makeELF(type: 3)) }
        #expect(throws: LoaderError.empty) { try ELF64.load([]) }
        #expect(throws: LoaderError.truncated(what: "ELF header")) { try ELF64.load(Array(makeELF().prefix(40))) }
        #expect(throws: LoaderError.truncated(what: "program headers")) { try ELF64.load(Array(makeELF().prefix(100))) }
    }

    @Test func rejectsBadProgramHeaders() {
        #expect(throws: LoaderError.noLoadableSegments) { try ELF64.load(makeELF(programType: 4)) }
        #expect(throws: LoaderError.self) { try ELF64.load(makeELF(payload: [1, 2], memsz: 1)) }
        var pastEnd = makeELF(payload: [1, 2, 3, 4])
        pastEnd[64 + 32] = 200 // filesz beyond the file
        #expect(throws: LoaderError.self) { try ELF64.load(pastEnd) }
        #expect(throws: LoaderError.self) { try ELF64.load(makeELF(address: UInt64.max - 2, memsz: 16)) }
    }

    @Test func validationChecksRAMAndReservedAreas() throws {
        let image = try ELF64.load(makeELF(address: 0x100000, memsz: 0x2000))
        let ram: (UInt64, UInt64) -> Bool = { address, size in address + size <= 0x200000 }
        _ = try image.validated(isRAM: ram)
        #expect(throws: LoaderError.segmentOutsideRAM(address: 0x100000, size: 0x2000)) {
            try image.validated(isRAM: { _, _ in false })
        }
        #expect(throws: LoaderError.segmentOverlapsReserved(address: 0x100000, size: 0x2000, area: "boot area")) {
            try image.validated(isRAM: ram, reserved: [("boot area", 0x101000..<0x102000)])
        }
    }
}

@Suite struct FlatBinaryTests {
    @Test func placesTheFileAtItsAddress() throws {
        let image = try FlatBinary.load([0x90, 0xF4], at: 0x1000, room: 0x10)
        #expect(image.entry == 0x1000)
        #expect(image.segments.first?.memorySize == 2)
    }

    @Test func rejectsEmptyAndOversizedImages() {
        #expect(throws: LoaderError.empty) { try FlatBinary.load([], at: 0, room: 10) }
        #expect(throws: LoaderError.tooLarge(size: 11, room: 10)) { try FlatBinary.load(Array(repeating: 0, count: 11), at: 0, room: 10) }
        #expect(LoaderError.tooLarge(size: 11, room: 10).description.contains("larger than"))
    }
}
