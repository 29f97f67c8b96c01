@testable import Boot
import Testing
@testable import VMM

@Suite struct AMLTests {
    @Test func integersStringsAndNames() {
        #expect(AML.integer(0).bytes == [0x00])
        #expect(AML.integer(1).bytes == [0x01])
        #expect(AML.integer(0x10).bytes == [0x0A, 0x10])
        #expect(AML.integer(0x1234).bytes == [0x0B, 0x34, 0x12])
        #expect(AML.integer(0xC000_0000).bytes == [0x0C, 0, 0, 0, 0xC0])
        #expect(AML.integer(1 << 40).bytes == [0x0E, 0, 0, 0, 0, 0, 1, 0, 0])
        #expect(AML.string("AB").bytes == [0x0D, 0x41, 0x42, 0x00])
        #expect(AML.nameString("\\_SB_") == [0x5C] + Array("_SB_".utf8))
        #expect(AML.nameString("_S5") == Array("_S5_".utf8))
        #expect(AML.nameString("\\_SB_.VR00") == [0x5C, 0x2E] + Array("_SB_VR00".utf8))
        #expect(AML.name("_UID", .integer(0)).bytes == [0x08] + Array("_UID".utf8) + [0x00])
    }

    @Test func packageLengthsCountThemselves() {
        #expect(AML.withPackageLength([UInt8](repeating: 0, count: 62)).prefix(1) == [63])
        // 63 bytes of body: 65 with a two-byte PkgLength: lead 0x41 (1 extra byte, low nibble 1), then 65 >> 4.
        #expect(Array(AML.withPackageLength([UInt8](repeating: 0, count: 63)).prefix(2)) == [0x41, 0x04])
        let big = AML.withPackageLength([UInt8](repeating: 0, count: 5000))
        #expect(big.count == 5003 && big[0] >> 6 == 2)
        #expect(Int(big[0] & 0xF) | Int(big[1]) << 4 | Int(big[2]) << 12 == 5003)
        #expect(AML.package([.integer(5), .integer(0)]).bytes == [0x12, 0x05, 0x02, 0x0A, 0x05, 0x00])
    }

    @Test func resourceTemplates() {
        let template = AML.resources([.memory32Fixed(base: 0xC000_0000, length: 0x200, writable: true),
                                      .interrupt(5, levelTriggered: true, activeLow: false)])
        // Buffer(size) { Memory32Fixed (12 bytes), extended interrupt (9 bytes), end tag (2 bytes) }
        #expect(template.bytes == [0x11, 0x1A, 0x0A, 0x17,
                                   0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xC0, 0x00, 0x02, 0x00, 0x00,
                                   0x89, 0x06, 0x00, 0x01, 0x01, 0x05, 0x00, 0x00, 0x00,
                                   0x79, 0x00])
    }
}

@Suite struct ACPITablesTests {
    var tables: ACPITables {
        var tables = ACPITables(cpus: 3, virtioDevices: [Platform.virtio(0)])
        tables.isaDevices = [Platform.com1]
        return tables
    }
    let base: UInt64 = 0xE0000

    func u32(_ blob: [UInt8], _ at: Int) -> UInt64 { (0..<4).reduce(0) { $0 | UInt64(blob[at + $1]) << (8 * UInt64($1)) } }
    func u64(_ blob: [UInt8], _ at: Int) -> UInt64 { u32(blob, at) | u32(blob, at + 4) << 32 }
    func table(_ blob: [UInt8], at address: UInt64) -> ArraySlice<UInt8> {
        let start = Int(address - base)
        return blob[start..<(start + Int(u32(blob, start + 4)))]
    }

    @Test func tablesLinkUpAndChecksumsHold() {
        let (blob, rsdp) = tables.bytes(at: base)
        #expect(rsdp == base)
        #expect(Array(blob[0..<8]) == Array("RSD PTR ".utf8) && blob[15] == 2)
        #expect(blob[0..<20].reduce(UInt8(0), &+) == 0 && blob[0..<36].reduce(UInt8(0), &+) == 0)
        let xsdt = table(blob, at: u64(blob, 24))
        #expect(Array(xsdt.prefix(4)) == Array("XSDT".utf8) && xsdt.count == 36 + 16)
        var found: [String: ArraySlice<UInt8>] = [:]
        for entry in 0..<2 {
            let address = u64(Array(xsdt), 36 + 8 * entry)
            let child = table(blob, at: address)
            found[String(decoding: child.prefix(4), as: UTF8.self)] = child
        }
        #expect(Set(found.keys) == ["FACP", "APIC"])
        let fadt = Array(found["FACP"]!)
        #expect(fadt.count == 276 && u32(fadt, 112) & (1 << 20) != 0) // HW_REDUCED_ACPI
        #expect(Array(fadt[244..<248]) == [1, 8, 0, 1] && u64(fadt, 248) == 0x600)
        let dsdt = Array(table(blob, at: u64(fadt, 140)))
        #expect(Array(dsdt.prefix(4)) == Array("DSDT".utf8) && u32(fadt, 40) == u64(fadt, 140))
        let aml = Array(dsdt[36...])
        #expect(aml.firstRange(of: Array("LNRO0005".utf8)) != nil)
        #expect(aml.firstRange(of: [0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xC0]) != nil)
        // The UART: PNP0501 with IO(Decode16, 0x3F8, 0x3F8, 1, 8) and an edge, active-high GSI 4.
        #expect(aml.firstRange(of: Array("PNP0501".utf8)) != nil)
        #expect(aml.firstRange(of: [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08, 0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0, 0, 0]) != nil)
        #expect(aml.firstRange(of: [0x08, 0x5C] + Array("_S5_".utf8) + [0x12, 0x05, 0x02, 0x0A, 0x05, 0x00]) != nil)
        let madt = Array(found["APIC"]!)
        #expect(u32(madt, 36) == 0xFEE0_0000)
        // Three processor local APIC entries (type 0), one IOAPIC (type 1), one override (type 2).
        var types: [UInt8] = []
        var offset = 44
        while offset < madt.count { types.append(madt[offset]); offset += Int(madt[offset + 1]) }
        #expect(types == [0, 0, 0, 1, 2])
        for child in [fadt, dsdt, madt, Array(xsdt)] { #expect(child.reduce(UInt8(0), &+) == 0) }
    }
}

@Suite struct PVMCompatTests {
    /// An emulation-failure report as KVM fills it: flags, then the length and bytes packed in words.
    func report(_ bytes: [UInt8]) -> [UInt64] {
        let raw = [UInt8(bytes.count)] + bytes + [UInt8](repeating: 0, count: 16 - bytes.count)
        return [1] + (0..<2).map { word in (0..<8).reduce(UInt64(0)) { $0 | UInt64(raw[word * 8 + $1]) << (8 * UInt64($1)) } }
    }

    @Test func decodesOnlyTheInstructionsItCompletes() {
        #expect(PVMCompat.instructionBytes(report([0xCC, 0x90])) == [0xCC, 0x90])
        #expect(PVMCompat.instructionBytes([0, 0xCC]) == []) // no instruction bytes flag
        #expect(PVMCompat.decode([0xCC, 0x83, 0xEC])?.0 == .int3)
        #expect(PVMCompat.decode([0xCC])?.length == 1)
        #expect(PVMCompat.decode([0x9B])?.0 == .fwait)
        #expect(PVMCompat.decode([0x0F, 0x01, 0xCA])?.0 == .clac)
        #expect(PVMCompat.decode([0x0F, 0x01, 0xCB])?.length == 3)
        #expect(PVMCompat.decode([0x66, 0x0F, 0x01, 0xCB])?.length == 4) // prefixes count
        #expect(PVMCompat.decode([0xF0, 0x48, 0x0F, 0xC7, 0x4D, 0x20]) == nil) // lock cmpxchg16b: not completed
        #expect(PVMCompat.decode([0xCF]) == nil) // iret
        // popcnt rax, rdi (what Linux's hweight64 alternative executes), and popcnt r9d, ecx.
        let popcnt = PVMCompat.decodeWithOperands([0xF3, 0x48, 0x0F, 0xB8, 0xC7, 0x41])
        #expect(popcnt?.0 == .popcnt && popcnt?.length == 5)
        #expect(popcnt?.operands == PVMCompat.RegisterOperands(destination: 0, source: 7, size: 8))
        #expect(PVMCompat.decodeWithOperands([0xF3, 0x44, 0x0F, 0xB8, 0xC9])?.operands == .init(destination: 9, source: 1, size: 4))
        #expect(PVMCompat.decode([0xF3, 0x48, 0x0F, 0xB8, 0x07]) == nil) // memory operand: not completed
        #expect(PVMCompat.decode([0x48, 0x0F, 0xB8, 0xC7]) == nil) // no F3: not popcnt
    }

    @Test func decodesMemoryOperandsOfLdmxcsrAndStmxcsr() {
        // ldmxcsr [rsp+4], the instruction Debian's kernel stopped at.
        let load = PVMCompat.decodeAll([0x0F, 0xAE, 0x54, 0x24, 0x04, 0x83])
        #expect(load?.0 == .ldmxcsr && load?.length == 5)
        #expect(load?.memory == PVMCompat.MemoryOperand(base: 4, index: nil, scale: 1, displacement: 4))
        // stmxcsr [rip+0x10]
        let store = PVMCompat.decodeAll([0x0F, 0xAE, 0x1D, 0x10, 0x00, 0x00, 0x00])
        #expect(store?.0 == .stmxcsr && store?.length == 7)
        #expect(store?.memory == PVMCompat.MemoryOperand(displacement: 0x10, ripRelative: true))
        // gs:[0x1000] through a SIB with no base and no index, and [r8 + r9*8 - 8] with REX.B and REX.X.
        let gs = PVMCompat.decodeAll([0x65, 0x0F, 0xAE, 0x14, 0x25, 0x00, 0x10, 0x00, 0x00])
        #expect(gs?.length == 9 && gs?.memory == PVMCompat.MemoryOperand(displacement: 0x1000, segmentPrefix: 0x65))
        let indexed = PVMCompat.decodeAll([0x43, 0x0F, 0xAE, 0x54, 0xC8, 0xF8])
        #expect(indexed?.memory == PVMCompat.MemoryOperand(base: 8, index: 9, scale: 8, displacement: -8))
        // Register forms (lfence, xrstor's register encodings) and other /r values are not completed.
        #expect(PVMCompat.decodeAll([0x0F, 0xAE, 0xE8]) == nil)
        #expect(PVMCompat.decodeAll([0x0F, 0xAE, 0x2F]) == nil) // xrstor [rdi]
        #expect(PVMCompat.decodeAll([0x0F, 0xAE, 0x54, 0x24]) == nil) // truncated
        #expect(PVMCompat.decode([]) == nil)
    }
}
