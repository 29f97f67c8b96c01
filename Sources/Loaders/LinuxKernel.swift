import VMMCore
/// Linux kernels for the x86 boot protocol's 64-bit entry: a bzImage (setup header, protected-mode
/// code loaded at its preferred address, entered at +0x200) or an uncompressed vmlinux ELF64.
public enum LinuxKernel {
    /// The setup header fields this loader reads (Documentation/arch/x86/boot.rst).
    public struct SetupHeader: Sendable, Equatable {
        public var setupSectors: Int
        public var version: UInt16
        public var loadFlags: UInt8
        public var initrdAddressMax: UInt32
        public var kernelAlignment: UInt32
        public var relocatable: Bool
        public var xloadflags: UInt16
        public var commandLineSize: UInt32
        public var preferredAddress: UInt64
        public var initSize: UInt32
    }

    /// A kernel ready to place: its code, its entry and the header bytes the zero page carries.
    public struct Image: Sendable {
        public let header: SetupHeader
        public let kernel: LoadedImage
        /// Bytes 0x1F1 up to the end of the setup header, copied into the zero page.
        public let headerBytes: [UInt8]
    }

    static let headerMagic = Array("HdrS".utf8)
    /// Protocol 2.12 added xloadflags, which says whether the 64-bit entry exists.
    public static let minimumVersion: UInt16 = 0x020C
    static let kernel64 = UInt16(1) // XLF_KERNEL_64
    static let loadedHigh = UInt8(1) // LOADED_HIGH

    /// True when `bytes` carry a boot-protocol setup header (0xAA55 at 0x1FE and "HdrS" at 0x202).
    public static func isBzImage(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 0x264 && bytes[0x1FE] == 0x55 && bytes[0x1FF] == 0xAA && Array(bytes[0x202..<0x206]) == headerMagic
    }

    /// True when `bytes` are an x86-64 ELF64 with a PT_NOTE segment holding a note owned by
    /// "Linux" (every vmlinux since 4.20 carries its build-salt note there): an uncompressed kernel,
    /// not one of our ELF guests. At most 64 program headers and 64 notes are looked at.
    public static func isVmlinux(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= 64, ELF64.isELF(bytes), bytes[4] == 2, bytes[5] == 1,
              LittleEndian.load(bytes, at: 18, size: 2) == 62 else { return false } // ELFCLASS64, LSB, EM_X86_64
        let tableOffset = LittleEndian.load(bytes, at: 32), entrySize = LittleEndian.load(bytes, at: 54, size: 2)
        let count = min(LittleEndian.load(bytes, at: 56, size: 2), 64)
        guard entrySize >= 56 else { return false }
        for index in 0..<count {
            let (entry, overflow) = tableOffset.addingReportingOverflow(index * entrySize)
            guard !overflow, entry <= UInt64(bytes.count), UInt64(bytes.count) - entry >= 56 else { return false }
            let base = Int(entry)
            guard LittleEndian.load(bytes, at: base, size: 4) == 4 else { continue } // PT_NOTE
            let offset = LittleEndian.load(bytes, at: base + 8), size = LittleEndian.load(bytes, at: base + 32)
            guard offset <= UInt64(bytes.count), size <= UInt64(bytes.count) - offset else { continue }
            if notesName("Linux", in: bytes[Int(offset)..<Int(offset + size)]) { return true }
        }
        return false
    }

    /// Whether a note in `notes` (ELF note records: namesz, descsz, type, name, desc, each
    /// padded to 4 bytes) has owner `owner`.
    static func notesName(_ owner: String, in notes: ArraySlice<UInt8>) -> Bool {
        let wanted = Array(owner.utf8) + [0]
        var cursor = notes.startIndex
        for _ in 0..<64 {
            guard notes.endIndex - cursor >= 12 else { return false }
            let nameSize = Int(LittleEndian.load(notes, at: cursor - notes.startIndex, size: 4))
            let descSize = Int(LittleEndian.load(notes, at: cursor - notes.startIndex + 4, size: 4))
            let name = cursor + 12
            let paddedName = (nameSize + 3) & ~3, paddedDesc = (descSize + 3) & ~3
            guard paddedName <= notes.endIndex - name, paddedDesc <= notes.endIndex - name - paddedName else { return false }
            if nameSize == wanted.count, Array(notes[name..<name + nameSize]) == wanted { return true }
            cursor = name + paddedName + paddedDesc
        }
        return false
    }

    public static func parseHeader(_ bytes: [UInt8]) throws(LoaderError) -> SetupHeader {
        guard bytes.count >= 0x264 else { throw .truncated(what: "Linux setup header") }
        guard isBzImage(bytes) else { throw .linux("no boot-protocol setup header (0xAA55 at 0x1FE, \"HdrS\" at 0x202)") }
        let reader = LittleEndianReader(bytes)
        let header = SetupHeader(
            setupSectors: bytes[0x1F1] == 0 ? 4 : Int(bytes[0x1F1]), version: reader.u16(0x206), loadFlags: bytes[0x211],
            initrdAddressMax: reader.u32(0x22C), kernelAlignment: reader.u32(0x230), relocatable: bytes[0x234] != 0,
            xloadflags: reader.u16(0x236), commandLineSize: reader.u32(0x238), preferredAddress: reader.u64(0x258),
            initSize: reader.u32(0x260))
        guard header.version >= minimumVersion else {
            throw .linux("boot protocol \(header.version >> 8).\(header.version & 0xFF) is too old (need 2.12 or later)")
        }
        guard header.xloadflags & kernel64 != 0 else { throw .linux("the kernel has no 64-bit entry point (XLF_KERNEL_64)") }
        guard header.loadFlags & loadedHigh != 0 else { throw .linux("the kernel does not load at 1 MiB (a zImage)") }
        return header
    }

    /// Parses a bzImage; its protected-mode code goes to the preferred address (relocatable kernels
    /// may go elsewhere, but there they need not relocate), entered at +0x200.
    public static func loadBzImage(_ bytes: [UInt8]) throws(LoaderError) -> Image {
        let header = try parseHeader(bytes)
        let codeOffset = (header.setupSectors + 1) * 512
        guard codeOffset < bytes.count else { throw .truncated(what: "Linux protected-mode code") }
        // syssize (0x1F4): the protected-mode code's size in 16-byte units, as the build wrote it.
        let declared = Int(LittleEndianReader(bytes).u32(0x1F4)) * 16
        guard bytes.count - codeOffset >= declared else { throw .truncated(what: "Linux protected-mode code (syssize)") }
        let address = header.preferredAddress >= 0x10_0000 ? header.preferredAddress : 0x10_0000
        // pref_address is the image's to choose: beyond 52 bits no machine has RAM (and the entry
        // at +0x200 must not wrap).
        guard address < 1 << 52 else { throw .linux("the preferred load address 0x\(hex(address)) is beyond any RAM") }
        let code = bytes[codeOffset...]
        // init_size covers the decompressor's whole working area from the load address.
        let memorySize = max(UInt64(header.initSize), UInt64(code.count))
        let kernel = LoadedImage(format: .linux, segments: [ImageSegment(address: address, bytes: code, memorySize: memorySize)],
                                 entry: address + 0x200)
        let headerEnd = min(0x202 + Int(bytes[0x201]), bytes.count, 0x1000)
        return Image(header: header, kernel: kernel, headerBytes: Array(bytes[0x1F1..<headerEnd]))
    }

    /// An uncompressed vmlinux: its PT_LOAD segments at their physical addresses, entered at
    /// e_entry (x86 vmlinux links its entry, startup_64, as a physical address).
    public static func loadVmlinux(_ bytes: [UInt8]) throws(LoaderError) -> Image {
        let elf = try ELFExecutable.load(bytes, classes: [.elf64])
        guard elf.entry < 1 << 32 else {
            throw .linux("vmlinux entry 0x\(hex(elf.entry)) is not a physical address below 4 GiB")
        }
        let header = SetupHeader(setupSectors: 0, version: 0x020F, loadFlags: loadedHigh, initrdAddressMax: 0x7FFF_FFFF,
                                 kernelAlignment: 0x20_0000, relocatable: false, xloadflags: kernel64, commandLineSize: 2047,
                                 preferredAddress: 0, initSize: 0)
        return Image(header: header, kernel: LoadedImage(format: .linux, segments: elf.segments, entry: elf.entry), headerBytes: [])
    }
}

/// The boot_params block ("zero page") the 64-bit entry receives in RSI.
public struct ZeroPage: Sendable {
    /// One e820 entry (1 RAM, 2 reserved, 3 ACPI data).
    public struct E820Entry: Sendable, Equatable {
        public let base: UInt64, size: UInt64, type: UInt32
        public init(base: UInt64, size: UInt64, type: UInt32) { (self.base, self.size, self.type) = (base, size, type) }
    }

    public var headerBytes: [UInt8]
    public var commandLineAddress: UInt64
    public var commandLineSize: UInt32
    public var initrd: (address: UInt64, size: UInt64)?
    public var e820: [E820Entry]
    public var rsdpAddress: UInt64

    public static let maxE820Entries = 128

    public init(headerBytes: [UInt8], commandLineAddress: UInt64, commandLineSize: UInt32, initrd: (address: UInt64, size: UInt64)?,
                e820: [E820Entry], rsdpAddress: UInt64) {
        self.headerBytes = headerBytes
        self.commandLineAddress = commandLineAddress
        self.commandLineSize = commandLineSize
        self.initrd = initrd
        self.e820 = e820
        self.rsdpAddress = rsdpAddress
    }

    public var bytes: [UInt8] {
        var page = [UInt8](repeating: 0, count: 4096)
        func put(_ value: UInt64, _ offset: Int, _ width: Int) { LittleEndian.store(value, size: width, into: &page, at: offset) }
        page.replaceSubrange(0x1F1..<(0x1F1 + headerBytes.count), with: headerBytes)
        if headerBytes.isEmpty { // vmlinux: the fields a kernel checks, filled in by the loader
            put(0xAA55, 0x1FE, 2)
            page.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
            put(0x020F, 0x206, 2)
        }
        put(0xFF, 0x210, 1) // type_of_loader: undefined boot loader
        page[0x211] |= 0x01 // LOADED_HIGH
        put(commandLineAddress & 0xFFFF_FFFF, 0x228, 4)
        put(commandLineAddress >> 32, 0x0C8, 4)
        put(UInt64(commandLineSize), 0x238, 4)
        if let initrd {
            put(initrd.address & 0xFFFF_FFFF, 0x218, 4)
            put(initrd.size & 0xFFFF_FFFF, 0x21C, 4)
            put(initrd.address >> 32, 0x0C0, 4)
            put(initrd.size >> 32, 0x0C4, 4)
        }
        put(rsdpAddress, 0x070, 8)
        let entries = e820.prefix(Self.maxE820Entries)
        put(UInt64(entries.count), 0x1E8, 1)
        for (index, entry) in entries.enumerated() {
            put(entry.base, 0x2D0 + 20 * index, 8)
            put(entry.size, 0x2D0 + 20 * index + 8, 8)
            put(UInt64(entry.type), 0x2D0 + 20 * index + 16, 4)
        }
        return page
    }
}
