@testable import Boot
import KVM
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

extension ACPITablesTests {
    @Test func aFullFADTNamesThePMBlocksTheFACSAndTheResetRegister() {
        var full = tables
        full.mode = .full
        let (blob, _) = full.bytes(at: base)
        let rsdt = table(blob, at: u32(blob, 16))
        #expect(Array(rsdt.prefix(4)) == Array("RSDT".utf8) && rsdt.count == 36 + 8 && rsdt.reduce(UInt8(0), &+) == 0)
        let fadt = Array(table(blob, at: u32(Array(rsdt), 36)))
        #expect(Array(fadt.prefix(4)) == Array("FACP".utf8) && fadt.reduce(UInt8(0), &+) == 0)
        #expect(u32(fadt, 112) & (1 << 20) == 0) // not hardware-reduced
        #expect(u32(fadt, 112) & (1 << 8 | 1 << 10) == 1 << 8 | 1 << 10) // TMR_VAL_EXT, RESET_REG_SUP
        #expect(u32(fadt, 56) == 0x620 && u32(fadt, 64) == 0x624 && u32(fadt, 76) == 0x628)
        #expect(fadt[88] == 4 && fadt[89] == 2 && fadt[91] == 4 && fadt[46] == 9 && fadt[108] == 0x32)
        #expect(Array(fadt[116..<120]) == [1, 8, 0, 1] && u64(fadt, 120) == 0xCF9 && fadt[128] == 6)
        #expect(Array(fadt[208..<212]) == [1, 32, 0, 3] && u64(fadt, 212) == 0x628) // X_PM_TMR_BLK
        let facs = u32(fadt, 36)
        #expect(facs == ACPITables.facsAddress(base: base) && facs % 64 == 0 && u64(fadt, 132) == facs)
        let facsBytes = Array(blob[Int(facs - base)..<Int(facs - base + 64)])
        #expect(Array(facsBytes.prefix(4)) == Array("FACS".utf8) && u32(facsBytes, 4) == 64 && u32(facsBytes, 12) == 0)
        let dsdt = Array(table(blob, at: u32(fadt, 40)))
        #expect(dsdt.firstRange(of: [0x08, 0x5C] + Array("_S3_".utf8) + [0x12, 0x04, 0x02, 0x01, 0x00]) != nil)
        // The MADT gains the SCI's override: ISA IRQ 9 to GSI 9, level, active high.
        let madt = Array(table(blob, at: u32(Array(rsdt), 40)))
        #expect(madt.firstRange(of: [2, 10, 0, 9, 9, 0, 0, 0, 0x0D, 0]) != nil)
        // The reduced FADT names no FACS and its DSDT has no \_S3.
        let reduced = tables.bytes(at: base).blob
        let reducedFADT = Array(table(reduced, at: u32(Array(table(reduced, at: u32(reduced, 16))), 36)))
        #expect(u32(reducedFADT, 36) == 0 && u64(reducedFADT, 132) == 0)
        #expect(Array(table(reduced, at: u32(reducedFADT, 40))).firstRange(of: Array("_S3_".utf8)) == nil)
    }

    @Test func theCPUIDVendorDecidesWhoseLeavesComeFirst() {
        let kvm = [CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4B4D_564B, ecx: 0x564B_4D56, edx: 0x4D),
                   CPUIDEntry(function: 0x4000_0001, eax: 0x1234)]
        let ours = CPUIDTable.build(supported: kvm, vcpu: 0, cpuCount: 1)
        #expect(ours.first { $0.function == 0x4000_0000 }?.ebx == CPUIDTable.signature.0)
        #expect(ours.first { $0.function == 0x4000_0101 }?.eax == 0x1234)
        let kvmFirst = CPUIDTable.build(supported: kvm, vcpu: 0, cpuCount: 1, vendor: .kvm)
        #expect(kvmFirst.first { $0.function == 0x4000_0000 } == kvm[0])
        #expect(kvmFirst.first { $0.function == 0x4000_0001 }?.eax == 0x1234)
        let moved = kvmFirst.first { $0.function == 0x4000_0100 }
        #expect(moved?.ebx == CPUIDTable.signature.0 && moved?.eax == 0x4000_0100)
        #expect(kvmFirst.filter { $0.function == 0x4000_0100 }.count == 1)
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
        #expect(PVMCompat.decode([0xCF])?.0 == .iret32) // completed only in 32-bit mode, to the same segment
        #expect(PVMCompat.decode([0x48, 0xCF]) == nil) // iretq runs
        #expect(PVMCompat.decode([0x66, 0xCF]) == nil) // 16-bit iret
        // int imm8, and the instructions answered with #UD.
        #expect(PVMCompat.decode([0xCD, 0x40])?.0 == .softwareInterrupt && PVMCompat.decode([0xCD, 0x40])?.length == 2)
        #expect(PVMCompat.decode([0x0F, 0x38, 0xF0, 0xC0])?.0 == .undefinedMOVBE)
        #expect(PVMCompat.decode([0x0F, 0x38, 0xF0, 0x00]) == nil) // movbe from memory exists
        #expect(PVMCompat.decode([0xF2, 0x0F, 0x38, 0xF0, 0xC0]) == nil) // crc32
        #expect(PVMCompat.decode([0x0F, 0x01, 0xD0])?.0 == .undefinedXGETBV)
        #expect(PVMCompat.decode([0x66, 0x0F, 0x38, 0x82, 0x00])?.0 == .undefinedINVPCID)
        #expect(PVMCompat.decode([0x0F, 0x01, 0xFD])?.0 == .undefinedRDPRU)
        #expect(PVMCompat.decode([0x66, 0x0F, 0xAE, 0x30])?.0 == .undefinedCLWB)
        #expect(PVMCompat.decode([0x66, 0x0F, 0xAE, 0xF0]) == nil) // register form: not clwb
        // popcnt rax, rdi (what Linux's hweight64 alternative executes), and popcnt r9d, ecx.
        let popcnt = PVMCompat.decodeWithOperands([0xF3, 0x48, 0x0F, 0xB8, 0xC7, 0x41])
        #expect(popcnt?.0 == .popcnt && popcnt?.length == 5)
        #expect(popcnt?.operands == PVMCompat.RegisterOperands(destination: 0, source: 7, size: 8))
        #expect(PVMCompat.decodeWithOperands([0xF3, 0x44, 0x0F, 0xB8, 0xC9])?.operands == .init(destination: 9, source: 1, size: 4))
        #expect(PVMCompat.decode([0xF3, 0x48, 0x0F, 0xB8, 0x07]) == nil) // memory operand: not completed
        #expect(PVMCompat.decode([0x48, 0x0F, 0xB8, 0xC7]) == nil) // no F3: not popcnt
    }

    @Test func undefinedOnlyWhereTheCPUWouldRefuse() {
        let none = PVMCompat.Features(), all = PVMCompat.Features(invpcid: true, rdpru: true, clwb: true)
        #expect(PVMCompat.raisesUndefined(.undefinedMOVBE, features: all, osxsave: true))
        #expect(PVMCompat.raisesUndefined(.undefinedXGETBV, features: all, osxsave: false))
        #expect(!PVMCompat.raisesUndefined(.undefinedXGETBV, features: none, osxsave: true))
        for case let completion in [PVMCompat.Completion.undefinedINVPCID, .undefinedRDPRU, .undefinedCLWB] {
            #expect(PVMCompat.raisesUndefined(completion, features: none, osxsave: false))
            #expect(!PVMCompat.raisesUndefined(completion, features: all, osxsave: false))
        }
        let table = [CPUIDEntry(function: 7, ebx: 1 << 10 | 1 << 24), CPUIDEntry(function: 0x8000_0008, ebx: 1 << 4)]
        #expect(PVMCompat.Features(cpuid: table) == all)
        #expect(PVMCompat.Features(cpuid: []) == none)
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
