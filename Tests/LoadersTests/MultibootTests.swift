import Testing
@testable import Loaders

/// A flat multiboot kernel: padding, then a header (with address fields when `addresses` is set).
func makeMultiboot(at offset: Int = 0, flags: UInt32 = 0x1_0000, checksumDelta: UInt32 = 0,
                   addresses: [UInt32]? = [0x100000, 0x100000, 0, 0x104000, 0x100020], size: Int = 64) -> [UInt8] {
    var bytes = [UInt8](repeating: 0x90, count: max(size, offset + 32))
    func put(_ value: UInt32, _ at: Int) { for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) } }
    put(Multiboot.headerMagic, offset)
    put(flags, offset + 4)
    put(0 &- Multiboot.headerMagic &- flags &+ checksumDelta, offset + 8)
    for (index, value) in (addresses ?? []).enumerated() { put(value, offset + 12 + 4 * index) }
    return bytes
}

@Suite struct MultibootTests {
    @Test func findsAValidHeaderAndLoadsThroughTheAddressFields() throws {
        let bytes = makeMultiboot(at: 8, addresses: [0x100008, 0x100000, 0, 0x104000, 0x100020])
        guard case .header(let header) = Multiboot.scan(bytes) else { Issue.record("no header"); return }
        #expect(header.offset == 8 && header.addresses?.count == 5)
        let image = try Multiboot.load(bytes, header: header)
        #expect(image.format == .multiboot && image.entry == 0x100020)
        #expect(image.segments.count == 1)
        #expect(image.segments[0].address == 0x100000 && image.segments[0].bytes.count == bytes.count)
        #expect(image.segments[0].memorySize == 0x4000) // up to bss_end_addr
    }

    @Test func badCandidatesAreReportedWithTheirReason() {
        #expect(Multiboot.scan(makeMultiboot(checksumDelta: 1)) == .invalid(.multiboot("the header at offset 0x0 has a bad checksum")))
        #expect(Multiboot.scan(makeMultiboot(at: 8192)) == .invalid(.multiboot("the header at offset 0x2000 lies past the first 8 KiB")))
        #expect(Multiboot.scan([UInt8](repeating: 0, count: 100)) == .none)
        // A misaligned magic is not a header.
        #expect(Multiboot.scan([0] + makeMultiboot()) == .none)
    }

    @Test func unsupportedRequirementsAndBadFieldsAreRejected() {
        func load(_ bytes: [UInt8]) throws(LoaderError) {
            guard case .header(let header) = Multiboot.scan(bytes) else { throw .badMagic }
            _ = try Multiboot.load(bytes, header: header)
        }
        #expect(throws: LoaderError.self) { try load(makeMultiboot(flags: 0x1_0004)) } // video mode
        #expect(throws: LoaderError.multiboot("the kernel requires header flags 0x20, which swiftvmm does not support")) {
            try load(makeMultiboot(flags: 0x1_0020))
        }
        // header_addr below load_addr, load_end past the file, bss_end inside the data.
        #expect(throws: LoaderError.self) { try load(makeMultiboot(addresses: [0x100000, 0x100010, 0, 0, 0x100000])) }
        #expect(throws: LoaderError.self) { try load(makeMultiboot(addresses: [0x100000, 0x100000, 0x200000, 0, 0x100000])) }
        #expect(throws: LoaderError.self) { try load(makeMultiboot(addresses: [0x100000, 0x100000, 0, 0x100010, 0x100000])) }
        // Without address fields the kernel must be ELF.
        #expect(throws: LoaderError.multiboot("the header has no address fields (flag 16) and the image is not ELF")) {
            try load(makeMultiboot(flags: 0, addresses: nil))
        }
    }

    @Test func elf32KernelsLoadTheirSegments() throws {
        // An ELF32 i386 executable with one PT_LOAD and a multiboot header in its payload.
        var bytes = [UInt8](repeating: 0, count: 52 + 32)
        func put(_ value: UInt32, _ at: Int, _ width: Int) { for i in 0..<width { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) } }
        bytes[0...3] = [0x7F, 0x45, 0x4C, 0x46]
        (bytes[4], bytes[5], bytes[6]) = (1, 1, 1)
        put(2, 16, 2); put(3, 18, 2); put(0x10000C, 24, 4); put(52, 28, 4); put(32, 42, 2); put(1, 44, 2)
        put(1, 52, 4); put(84, 56, 4); put(0x100000, 60, 4); put(0x100000, 64, 4)
        let payload = makeMultiboot(flags: 0x3, addresses: nil, size: 32)
        put(UInt32(payload.count), 68, 4); put(0x2000, 72, 4)
        bytes += payload
        guard case .header(let header) = Multiboot.scan(bytes) else { Issue.record("no header"); return }
        let image = try Multiboot.load(bytes, header: header)
        #expect(image.entry == 0x10000C)
        #expect(image.segments.map(\.address) == [0x100000] && image.segments[0].memorySize == 0x2000)
    }

    @Test func infoBlockPointsAtItsOwnParts() {
        let info = MultibootInfo(memoryLowerKiB: 639, memoryUpperKiB: 1024, commandLine: "kernel.elf a=1",
                                 modules: [.init(start: 0x200000, end: 0x200010, string: "mod")],
                                 memoryMap: [.init(base: 0, length: 0x9FC00, type: 1), .init(base: 0x100000, length: 0x100000, type: 1)])
        let base: UInt32 = 0x300000
        let blob = info.bytes(at: base)
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(blob[at + $1]) << (8 * UInt32($1)) } }
        func string(_ address: UInt32) -> String {
            let start = Int(address - base)
            return String(decoding: blob[start..<blob[start...].firstIndex(of: 0)!], as: UTF8.self)
        }
        #expect(u32(0) == MultibootInfo.flags)
        #expect(u32(4) == 639 && u32(8) == 1024)
        #expect(string(u32(16)) == "kernel.elf a=1")
        #expect(u32(20) == 1)
        let module = Int(u32(24) - base)
        #expect(u32(module) == 0x200000 && u32(module + 4) == 0x200010 && string(u32(module + 8)) == "mod")
        #expect(u32(44) == 48)
        let map = Int(u32(48) - base)
        #expect(u32(map) == 20 && u32(map + 24 + 4) == 0x100000 && u32(map + 24 + 20) == 1)
        #expect(string(u32(64)) == "swiftvmm")
        // The GDT: flat 32-bit code at 0x08.
        let gdt = Int(MultibootInfo.gdtAddress(base: base) - base)
        #expect(u32(gdt + 8) == 0x0000_FFFF && u32(gdt + 12) == 0x00CF_9A00)
    }
}

@Suite struct SymbolTableTests {
    @Test func namesResolveAndAddressesDescribe() throws {
        let table = SymbolTable([.init(name: "main", address: 0x100010, size: 0x20), .init(name: "_start", address: 0x100000, size: 0),
                                 .init(name: "data", address: 0x200000, size: 8)])
        #expect(table["main"]?.address == 0x100010)
        #expect(table.describe(0x100010) == "main")
        #expect(table.describe(0x100013) == "main+0x3")
        #expect(table.describe(0x100004) == "_start+0x4") // size 0: nearest below, within a page
        #expect(table.describe(0x100030) == nil) // just past main, whose size is known
        #expect(table.describe(0x200008) == nil) // past data's 8 bytes
        #expect(table.describe(0xFFFFF) == nil)
        #expect(try SymbolTable.parse([1, 2, 3]) == .empty)
    }
}

/// A bzImage-shaped file: boot sector with the setup header, `setupSectors` sectors of setup, code.
func makeBzImage(version: UInt16 = 0x020F, xloadflags: UInt16 = 0x7F, loadFlags: UInt8 = 1, setupSectors: UInt8 = 4,
                 preferred: UInt64 = 0x1000000, initSize: UInt32 = 0x400000, code: [UInt8] = [0xF4, 0x90, 0x90, 0x90]) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: (Int(setupSectors) + 1) * 512)
    func put(_ value: UInt64, _ at: Int, _ width: Int) { for i in 0..<width { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) } }
    bytes[0x1F1] = setupSectors
    put(0xAA55, 0x1FE, 2)
    bytes[0x201] = 0x6A // jump: the header ends at 0x202 + 0x6A
    bytes.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
    put(UInt64(version), 0x206, 2)
    bytes[0x211] = loadFlags
    put(0x7FFF_FFFF, 0x22C, 4)
    put(0x200000, 0x230, 4)
    bytes[0x234] = 1
    put(UInt64(xloadflags), 0x236, 2)
    put(0x7FF, 0x238, 4)
    put(preferred, 0x258, 8)
    put(UInt64(initSize), 0x260, 4)
    return bytes + code
}

@Suite struct LinuxKernelTests {
    @Test func bzImageLoadsAtItsPreferredAddressAndEntersAt0x200() throws {
        let bytes = makeBzImage()
        #expect(LinuxKernel.isBzImage(bytes))
        let image = try LinuxKernel.loadBzImage(bytes)
        #expect(image.header.version == 0x020F && image.header.commandLineSize == 0x7FF && image.header.relocatable)
        #expect(image.kernel.entry == 0x1000200)
        #expect(image.kernel.segments.count == 1 && image.kernel.segments[0].address == 0x1000000)
        #expect(Array(image.kernel.segments[0].bytes) == [0xF4, 0x90, 0x90, 0x90])
        #expect(image.kernel.segments[0].memorySize == 0x400000) // init_size
        #expect(image.headerBytes.count == 0x202 + 0x6A - 0x1F1)
    }

    @Test func oldOr32BitOnlyOrTruncatedKernelsAreRefused() {
        #expect(throws: LoaderError.linux("boot protocol 2.11 is too old (need 2.12 or later)")) {
            try LinuxKernel.loadBzImage(makeBzImage(version: 0x020B))
        }
        #expect(throws: LoaderError.linux("the kernel has no 64-bit entry point (XLF_KERNEL_64)")) {
            try LinuxKernel.loadBzImage(makeBzImage(xloadflags: 0))
        }
        #expect(throws: LoaderError.self) { try LinuxKernel.loadBzImage(makeBzImage(loadFlags: 0)) }
        #expect(throws: LoaderError.truncated(what: "Linux protected-mode code")) {
            try LinuxKernel.loadBzImage(Array(makeBzImage().prefix(5 * 512)))
        }
        #expect(throws: LoaderError.self) { try LinuxKernel.loadBzImage(Array(makeBzImage().prefix(0x250))) }
        var short = makeBzImage()
        short[0x1F4] = 1 // syssize: 16 bytes of code declared, 4 present
        #expect(throws: LoaderError.truncated(what: "Linux protected-mode code (syssize)")) { try LinuxKernel.loadBzImage(short) }
        var corrupted = makeBzImage()
        corrupted[0x203] = 0
        #expect(!LinuxKernel.isBzImage(corrupted))
    }

    /// A vmlinux is an ELF with a PT_NOTE segment holding a "Linux" note; our guests have none.
    @Test func vmlinuxIsRecognisedByItsLinuxNote() {
        func note(_ owner: String, descriptor: [UInt8] = [1, 2, 3, 4, 5]) -> [UInt8] {
            let name = Array(owner.utf8) + [0]
            func le32(_ value: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
            func padded(_ bytes: [UInt8]) -> [UInt8] { bytes + [UInt8](repeating: 0, count: (4 - bytes.count % 4) % 4) }
            return le32(name.count) + le32(descriptor.count) + le32(0x100) + padded(name) + padded(descriptor)
        }
        func kernel(notes: [UInt8]) -> [UInt8] {
            // makeELF's one program header turned into PT_NOTE over the payload.
            makeELF(payload: notes, address: 0x1000000, programType: 4)
        }
        #expect(LinuxKernel.isVmlinux(kernel(notes: note("GNU") + note("Linux"))))
        #expect(!LinuxKernel.isVmlinux(kernel(notes: note("GNU") + note("Xen"))))
        #expect(!LinuxKernel.isVmlinux(makeELF()))
        #expect(!LinuxKernel.isVmlinux(makeELF(class: 1)))
        // A note whose sizes run past its segment, or a segment past the file, is no match.
        var broken = kernel(notes: note("Linux"))
        broken[120] = 0xFF; broken[121] = 0xFF; broken[122] = 0xFF; broken[123] = 0x7F
        #expect(!LinuxKernel.isVmlinux(broken))
        var outside = kernel(notes: note("Linux"))
        outside[64 + 32 + 7] = 0x40 // p_filesz near 2^62
        #expect(!LinuxKernel.isVmlinux(outside))
        #expect(!LinuxKernel.isVmlinux(Array(kernel(notes: note("Linux")).prefix(100))))
    }

    @Test func zeroPageCarriesHeaderCommandLineInitrdE820AndRSDP() throws {
        let image = try LinuxKernel.loadBzImage(makeBzImage())
        let page = ZeroPage(headerBytes: image.headerBytes, commandLineAddress: 0x20000, commandLineSize: 0x7FF,
                            initrd: (0x7F00_0000, 0x12345), e820: [.init(base: 0, size: 0x9FC00, type: 1), .init(base: 0x100000, size: 0x1F00000, type: 1)],
                            rsdpAddress: 0xE0000).bytes
        func u32(_ at: Int) -> UInt64 { (0..<4).reduce(0) { $0 | UInt64(page[at + $1]) << (8 * UInt64($1)) } }
        #expect(page.count == 4096)
        #expect(Array(page[0x202..<0x206]) == Array("HdrS".utf8) && u32(0x206) & 0xFFFF == 0x020F)
        #expect(page[0x210] == 0xFF && page[0x211] & 1 == 1)
        #expect(u32(0x228) == 0x20000 && u32(0x218) == 0x7F00_0000 && u32(0x21C) == 0x12345)
        #expect(u32(0x70) == 0xE0000 && page[0x1E8] == 2)
        #expect(u32(0x2D0 + 20 + 0) == 0x100000 && u32(0x2D0 + 20 + 8) == 0x1F00000 && u32(0x2D0 + 20 + 16) == 1)
    }
}
