@testable import Boot
import Host
import KVM
import Testing
import VMMCore
@testable import VMM

@Suite struct BootInfoTests {
    @Test func writesTheDocumentedLayout() throws {
        let memory = try GuestMemory(ranges: [(start: 0, size: 0x100000)])
        let info = BootInfo(ramSize: 5 * Layout.gib, cpuCount: 3, longMode: true, commandLine: "a=1 b",
                            imageStart: 0x100000, imageEnd: 0x123456, interruptControllers: true, mpTable: Layout.mpTable)
        try info.write(to: memory)
        let base = Layout.bootInfo
        #expect(try memory.load(UInt32.self, at: base) == 0x4D4D_5653)
        #expect(try memory.read(base, length: 4) == Array("SVMM".utf8))
        #expect(try memory.load(UInt16.self, at: base + 4) == 4)
        #expect(try memory.load(UInt16.self, at: base + 6) == 168)
        #expect(try memory.load(UInt64.self, at: base + 8) == 5 * Layout.gib)
        #expect(try memory.load(UInt32.self, at: base + 16) == 3)
        #expect(try memory.load(UInt32.self, at: base + 20) == 3) // long mode | interrupt controllers
        #expect(try memory.load(UInt64.self, at: base + 64) == 0x9FC00)
        #expect(try memory.load(UInt32.self, at: base + 72) == 0xFEE0_0000)
        #expect(try memory.load(UInt32.self, at: base + 76) == 0xFEC0_0000)
        #expect(try memory.read(base + 80, length: 4) == [0, 1, 2, 0])
        #expect(try memory.load(UInt64.self, at: base + 24) == Layout.commandLine)
        #expect(try memory.load(UInt32.self, at: base + 32) == 5)
        #expect(try memory.read(Layout.commandLine, length: 6) == Array("a=1 b".utf8) + [0])
        #expect(try memory.load(UInt32.self, at: base + 36) == 3)
        #expect(try memory.load(UInt64.self, at: base + 48) == 0x100000)
        #expect(try memory.load(UInt64.self, at: base + 56) == 0x123456)
        let map = try memory.load(UInt64.self, at: base + 40)
        var bases: [UInt64] = [], lengths: [UInt64] = [], types: [UInt32] = []
        for index in 0..<3 {
            let entry = map + UInt64(index * 24)
            bases.append(try memory.load(UInt64.self, at: entry))
            lengths.append(try memory.load(UInt64.self, at: entry + 8))
            types.append(try memory.load(UInt32.self, at: entry + 16))
        }
        #expect(bases == [0, Layout.lowReservedEnd, 4 * Layout.gib])
        #expect(lengths == [Layout.lowReservedEnd, 3 * Layout.gib - Layout.lowReservedEnd, 2 * Layout.gib])
        #expect(types == [2, 1, 1])
        #expect(lengths.reduce(0, +) == 5 * Layout.gib)
    }

    @Test func virtioDevicesGetTheirIRQsFromTheTable() throws {
        let memory = try GuestMemory(ranges: [(start: 0, size: 0x100000)])
        try BootInfo(ramSize: Layout.gib, cpuCount: 1, longMode: true, commandLine: "", imageStart: 0x100000,
                     imageEnd: 0x200000, interruptControllers: true, mpTable: Layout.mpTable, virtioDevices: 5).write(to: memory)
        let base = Layout.bootInfo
        #expect(try memory.load(UInt64.self, at: base + 112) == 0xC000_0000)
        #expect(try memory.load(UInt16.self, at: base + 120) == 5)
        #expect(try memory.load(UInt8.self, at: base + 122) == 5)
        #expect(try memory.read(base + 160, length: 8) == [5, 6, 7, 10, 11, 0, 0, 0])
    }

    @Test func apicIDsOfVCPUsPast32FollowTheBlocksFirstPart() throws {
        let memory = try GuestMemory(ranges: [(start: 0, size: 0x100000)])
        try BootInfo(ramSize: Layout.gib, cpuCount: 64, longMode: true, commandLine: "", imageStart: 0x100000,
                     imageEnd: 0x200000, interruptControllers: true, mpTable: Layout.mpTable).write(to: memory)
        #expect(try memory.read(Layout.bootInfo + 80, length: 32) == (0..<32).map { UInt8($0) })
        #expect(try memory.read(Layout.bootInfo + 128, length: 32) == (32..<64).map { UInt8($0) })
    }
}

@Suite struct BootStateTests {
    @Test func pageTablesIdentityMapEveryGiBWithUserPages() throws {
        let memory = try GuestMemory(ranges: [(start: 0, size: 0x100000)])
        try BootState.writeLongModeTables(to: memory, ramSize: 5 * Layout.gib)
        #expect(try memory.load(UInt64.self, at: Layout.pml4) == Layout.pdpt | 7)
        for gib in 0..<6 {
            let directory = try memory.load(UInt64.self, at: Layout.pdpt + UInt64(gib * 8))
            #expect(directory == Layout.pageDirectories + UInt64(gib) * 0x1000 | 7)
            let last = try memory.load(UInt64.self, at: (directory & ~0xFFF) + 511 * 8)
            #expect(last == UInt64(gib) * Layout.gib + 511 * 2 * Layout.mib | 0x87)
        }
        #expect(try memory.load(UInt64.self, at: Layout.pdpt + 6 * 8) == 0)
    }

    @Test func gdtHoldsFlatSegmentsAndAnAvailableTSS() throws {
        let memory = try GuestMemory(ranges: [(start: 0, size: 0x100000)])
        try BootState.writeLongModeTables(to: memory, ramSize: Layout.minimumRAM)
        #expect(try memory.load(UInt64.self, at: Layout.bootGDT + 8) == 0x00AF_9A00_0000_FFFF)
        #expect(try memory.load(UInt64.self, at: Layout.bootGDT + 16) == 0x00CF_9200_0000_FFFF)
        let tss = try memory.load(UInt64.self, at: Layout.bootGDT + 24)
        #expect(tss & 0xFFFF == 0x67)
        #expect((tss >> 16) & 0xFF_FFFF == Layout.bootTSS)
        #expect((tss >> 40) & 0xFF == 0x89)
    }

    @Test func longModeRegistersAreConsistent() {
        let sregs = BootState.longModeSpecialRegisters(from: SpecialRegisters())
        #expect(sregs.cs.l && !sregs.cs.db && sregs.cs.selector == 0x08)
        #expect(sregs.ss.selector == 0x10 && sregs.ss.present)
        #expect(sregs.cr0 & 0x8000_0001 == 0x8000_0001)
        #expect(sregs.cr4 & 0x20 != 0)
        #expect(sregs.efer & 0x500 == 0x500)
        #expect(sregs.cr3 == Layout.pml4)
        let regs = BootState.entryRegisters(entry: 0x100000, mode: .long, vcpu: 2)
        #expect(regs.rip == 0x100000 && regs.rdi == Layout.bootInfo && regs.rsi == 2)
        #expect(regs.rsp == Layout.stackTop - 2 * Layout.stackSize)
        let real = BootState.realModeSpecialRegisters(from: SpecialRegisters())
        #expect(real.cs.base == 0 && real.cs.selector == 0)
        #expect(BootState.entryRegisters(entry: 0x1000, mode: .real, vcpu: 0).rsp == 0x1000)
    }
}

@Suite struct CPUIDTableTests {
    let supported = [
        CPUIDEntry(function: 0, eax: 0xD),
        CPUIDEntry(function: 1, ebx: 0x0000_0800, ecx: 0x0000_0001),
        CPUIDEntry(function: 0xB, index: 0, flags: CPUIDEntry.significantIndex, edx: 0),
        CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4B4D_564B, ecx: 0x564B_4D56, edx: 0x4D),
        CPUIDEntry(function: 0x4000_0001, eax: 0x1234),
    ]

    @Test func namesSwiftvmmAndMovesKVMLeavesUp() {
        let table = CPUIDTable.build(supported: supported, vcpu: 1, cpuCount: 2)
        let vendor = table.first { $0.function == 0x4000_0000 }!
        let bytes = [vendor.ebx, vendor.ecx, vendor.edx].flatMap { value in (0..<4).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) } }
        #expect(bytes == Array("swiftvmm".utf8) + [0, 0, 0, 0])
        #expect(table.filter { $0.function == 0x4000_0000 }.count == 1)
        let kvm = table.first { $0.function == 0x4000_0100 }!
        #expect(kvm.ebx == 0x4B4D_564B && kvm.eax == 0x4000_0101)
        #expect(table.first { $0.function == 0x4000_0101 }?.eax == 0x1234)
    }

    @Test func marksTheHypervisorAndNumbersAPICs() {
        let table = CPUIDTable.build(supported: supported, vcpu: 3, cpuCount: 4)
        let leaf1 = table.first { $0.function == 1 }!
        #expect(leaf1.ecx & (1 << 31) != 0)
        #expect(leaf1.ebx >> 24 == 3)
        #expect((leaf1.ebx >> 16) & 0xFF == 4)
        #expect(leaf1.ebx & 0xFFFF == 0x0800)
        #expect(table.first { $0.function == 0xB }?.edx == 3)
    }
}

@Suite struct ConsoleInputTests {
    @Test func ctrlAXQuitsAndCtrlACtrlASendsOneCtrlA() {
        var pending = false
        var result = ConsoleInput.filter(Array("ab".utf8) + [1, 1, 0x63], pendingEscape: &pending)
        #expect(result.forward == Array("ab".utf8) + [1, 0x63] && !result.quit)
        result = ConsoleInput.filter([0x7A, 1], pendingEscape: &pending)
        #expect(result.forward == [0x7A] && pending)
        result = ConsoleInput.filter(Array("x".utf8), pendingEscape: &pending)
        #expect(result.quit)
        pending = false
        result = ConsoleInput.filter([1, 0x71], pendingEscape: &pending)
        #expect(result.forward == [1, 0x71] && !result.quit)
    }
}

@Suite struct ExitStatisticsTests {
    @Test func reportsReasonsAndTopPorts() {
        var stats = ExitStatistics(detailed: true)
        for _ in 0..<3 { stats.record(.ioOut); stats.recordPort(0x3f8) }
        stats.record(.ioIn)
        stats.recordPort(0x3fd)
        stats.record(.interrupted)
        stats.recordMMIO(0xD000_0000)
        stats.runSeconds = 0.5
        #expect(stats.total == 4)
        let report = stats.report(vcpu: 0)
        #expect(report.contains("vcpu0: exits=4 run_s=0.500000 exits_per_s=8"))
        #expect(report.contains("io-out=3"))
        #expect(report.contains("top ports: 0x3f8=3 0x3fd=1"))
        #expect(report.contains("top mmio: 0xd0000000=1"))
        var plain = ExitStatistics(detailed: false)
        plain.recordPort(1)
        #expect(plain.ports.isEmpty)
    }
}

@Suite struct ProcessMemoryTests {
    @Test func parsesProcStatus() {
        let status = "Name:\tswiftvmm\nVmHWM:\t   10764 kB\nVmRSS:\t   10700 kB\nRssAnon:\t    1684 kB\nRssFile:\t    9080 kB\n"
        let usage = ProcessMemory.parse(status: status)
        #expect(usage == ProcessMemory(peakResident: 10764, anonymous: 1684, fileBacked: 9080))
        #expect(usage?.report(guestResidentKiB: 684).contains("overhead_kib=10080 anon_overhead_kib=1000") == true)
        #expect(ProcessMemory.parse(status: "VmHWM: 1 kB\n") == nil)
    }

    @Test func readsThisProcess() throws {
        let usage = try #require(ProcessMemory.current())
        #expect(usage.peakResident > 0 && usage.anonymous > 0)
    }
}

@Suite struct MPTableTests {
    let configAddress = UInt32(Layout.mpConfigTable)

    func le(_ bytes: [UInt8], _ offset: Int, _ width: Int) -> UInt64 {
        (0..<width).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * $1) }
    }

    @Test func floatingPointerAndTableAreValid() {
        let (bytes, table) = MPTable(cpuCount: 4).bytes(configAt: configAddress)
        #expect(bytes.count == 16 && Array(bytes[0..<4]) == Array("_MP_".utf8))
        #expect(le(bytes, 4, 4) == UInt64(configAddress))
        #expect(bytes[0..<16].reduce(0, &+) == 0)
        #expect(Array(table[0..<4]) == Array("PCMP".utf8))
        #expect(Int(le(table, 4, 2)) == table.count)
        #expect(table.reduce(0, &+) == 0)
        #expect(le(table, 36, 4) == 0xFEE0_0000)
        let largest = MPTable(cpuCount: Layout.maximumVCPUs).bytes(configAt: configAddress).configuration
        #expect(UInt64(largest.count) <= Layout.mpConfigTableEnd - Layout.mpConfigTable) // 64 vCPUs fit
    }

    @Test func listsEveryCPUTheIOAPICAndISARouting() {
        let table = MPTable(cpuCount: 3).bytes(configAt: configAddress).configuration
        var offset = 44
        var cpus: [(id: UInt8, flags: UInt8)] = [], ioapics: [UInt8] = [], routes: [(irq: UInt8, pin: UInt8)] = [], locals = 0
        for _ in 0..<Int(le(table, 34, 2)) {
            switch table[offset] {
            case 0: cpus.append((table[offset + 1], table[offset + 3])); offset += 20
            case 2: ioapics.append(table[offset + 1]); #expect(le(table, offset + 4, 4) == 0xFEC0_0000); offset += 8
            case 3: routes.append((table[offset + 5], table[offset + 7])); #expect(table[offset + 6] == 3); offset += 8
            case 4: locals += 1; offset += 8
            default: offset += 8
            }
        }
        #expect(cpus.map(\.id) == [0, 1, 2])
        #expect(cpus.map(\.flags) == [3, 1, 1]) // vCPU 0 is the BSP
        #expect(ioapics == [3])
        #expect(routes.count == 15 && routes.allSatisfy { $0.irq == $0.pin } && !routes.contains { $0.irq == 2 })
        #expect(locals == 2)
    }
}

@Suite struct CMOSMemoryTests {
    @Test func firmwareMemorySizeBytes() {
        let small = Machine.cmosMemorySize(32 * Layout.mib)
        #expect(UInt16(small[0x31]!) << 8 | UInt16(small[0x30]!) == 31 * 1024) // KiB above 1 MiB
        #expect(UInt16(small[0x35]!) << 8 | UInt16(small[0x34]!) == 256) // 64 KiB blocks above 16 MiB
        #expect(small[0x5B] == 0 && small[0x5C] == 0 && small[0x5D] == 0)
        let large = Machine.cmosMemorySize(5 * Layout.gib)
        #expect(UInt16(large[0x31]!) << 8 | UInt16(large[0x30]!) == 0xFFFF) // the field tops out at 63 MiB
        #expect(UInt32(large[0x5D]!) << 16 | UInt32(large[0x5C]!) << 8 | UInt32(large[0x5B]!) == UInt32((2 * Layout.gib) >> 16))
    }
}
