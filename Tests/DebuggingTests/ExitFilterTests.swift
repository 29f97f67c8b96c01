import Debugging
import Testing

@Suite struct ExitFilterTests {
    func io(_ port: UInt64, size: Int = 1, out: Bool = true) -> ExitEvent {
        ExitEvent(vcpu: 0, seconds: 0, kind: out ? .ioOut : .ioIn, address: port, size: size, values: [0x41], rip: 0x1000)
    }

    @Test func portRangeSelectsOnlyThosePorts() throws {
        let filter = try ExitFilter.parse("io:0x3f8-0x3ff")
        #expect(filter.matches(io(0x3f8)))
        #expect(filter.matches(io(0x3ff, out: false)))
        #expect(!filter.matches(io(0x3f7)))
        #expect(!filter.matches(io(0x400)))
        #expect(!filter.matches(ExitEvent(vcpu: 0, seconds: 0, kind: .hlt)))
        // A 2-byte access at 0x3f7 touches 0x3f8.
        #expect(filter.matches(io(0x3f7, size: 2)))
    }

    @Test func termsCombineAndAllSkipsInterruptions() throws {
        let filter = try ExitFilter.parse("mmio, hlt")
        #expect(filter.matches(ExitEvent(vcpu: 1, seconds: 0, kind: .mmioRead, address: 0xc000_0000, size: 4)))
        #expect(filter.matches(ExitEvent(vcpu: 1, seconds: 0, kind: .hlt)))
        #expect(!filter.matches(io(0x3f8)))
        #expect(ExitFilter.all.matches(io(0x80)))
        #expect(!ExitFilter.all.matches(ExitEvent(vcpu: 0, seconds: 0, kind: .interrupted)))
        #expect(try ExitFilter.parse("intr").matches(ExitEvent(vcpu: 0, seconds: 0, kind: .interrupted)))
        #expect(try ExitFilter.parse("") == .all)
        // Blanks and tabs around a term, and a trailing carriage return, are not part of it.
        #expect(try ExitFilter.parse(" \tmmio \r,\t\r, hlt\r").description == "mmio,hlt")
        #expect(try ExitFilter.parse("\t\r") == .all)
    }

    @Test func badFiltersAreRejectedWithAReason() {
        #expect(throws: ExitFilterError.self) { try ExitFilter.parse("disk") }
        #expect(throws: ExitFilterError.rangeNotAllowed("hlt")) { try ExitFilter.parse("hlt:1") }
        #expect(throws: ExitFilterError.badRange("0x400-0x3f8")) { try ExitFilter.parse("io:0x400-0x3f8") }
        #expect(throws: ExitFilterError.badRange("0x10000")) { try ExitFilter.parse("io:0x10000") }
        #expect(throws: ExitFilterError.badRange("zz")) { try ExitFilter.parse("mmio:zz") }
    }

    @Test func traceLinesCarryEveryField() {
        #expect(io(0x3f8).traceLine == "  0.000000 vcpu0 io out port=0x3f8 size=1 data=0x41 rip=0x1000")
        let read = ExitEvent(vcpu: 2, seconds: 1.5, kind: .mmioRead, address: 0xc000_0070, size: 4, values: [0x8], rip: 0x10_0123)
        #expect(read.traceLine == "  1.500000 vcpu2 mmio read addr=0xc0000070 size=4 data=0x8 rip=0x100123")
        let string = ExitEvent(vcpu: 0, seconds: 0, kind: .ioOut, address: 0x3f8, size: 1, values: [0x68, 0x69], rip: 0x2000)
        #expect(string.traceLine.contains("data=0x68,0x69"))
        #expect(ExitEvent(vcpu: 0, seconds: 0, kind: .hlt, rip: 0x10).traceLine == "  0.000000 vcpu0 hlt rip=0x10")
    }
}
