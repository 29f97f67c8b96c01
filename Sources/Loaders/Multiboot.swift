import VMMCore
/// Multiboot (version 1) kernels, as QEMU's `-kernel` boots them: a header within the first
/// 8 KiB, then either the ELF's own segments or the a.out-kludge address fields.
public enum Multiboot {
    public static let headerMagic: UInt32 = 0x1BAD_B002
    /// What EAX holds at entry.
    public static let bootloaderMagic: UInt32 = 0x2BAD_B002
    /// The header must start in the first 8 KiB, 4-byte aligned.
    public static let searchLimit = 8192
    /// How far a misplaced header is looked for, to name it in the error (bounds start-up work on
    /// large images).
    static let misplacedSearchLimit = 64 * 1024

    /// Header flags. Bits 0-15 are requirements the boot loader must meet or refuse the kernel.
    public enum Flag {
        public static let pageAlignModules: UInt32 = 1 << 0
        public static let memoryInfo: UInt32 = 1 << 1
        public static let videoMode: UInt32 = 1 << 2
        public static let addressFields: UInt32 = 1 << 16
        /// The required bits this loader meets.
        static let supportedRequired: UInt32 = pageAlignModules | memoryInfo
    }

    /// A valid header found in an image.
    public struct Header: Sendable, Equatable {
        /// File offset of the magic.
        public let offset: Int
        public let flags: UInt32
        /// header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr (flag 16).
        public let addresses: [UInt32]?
    }

    /// What a search of an image found.
    public enum Scan: Sendable, Equatable {
        case none
        case header(Header)
        /// A candidate that is not acceptable (bad checksum, past 8 KiB): the error says why.
        case invalid(LoaderError)
    }

    /// Looks for the header: a valid one in the first 8 KiB wins; otherwise the first bad
    /// candidate is reported, so a broken kernel gets a reason rather than "not an ELF".
    public static func scan(_ bytes: [UInt8]) -> Scan {
        let reader = LittleEndianReader(bytes)
        var firstProblem: LoaderError?
        var offset = 0
        while offset + 12 <= min(bytes.count, misplacedSearchLimit) {
            defer { offset += 4 }
            // The magic's first and last bytes first: a byte compare per word keeps the scan of
            // 64 KiB off the start-up path (the full little-endian load cost 0.2 ms per run).
            guard bytes[offset] == 0x02, bytes[offset + 3] == 0x1B, reader.u32(offset) == headerMagic else { continue }
            let flags = reader.u32(offset + 4), checksum = reader.u32(offset + 8)
            let valid = headerMagic &+ flags &+ checksum == 0
            if offset + 12 > searchLimit {
                if valid && firstProblem == nil {
                    firstProblem = .multiboot("the header at offset 0x\(hex(UInt64(offset))) lies past the first 8 KiB")
                }
                if firstProblem != nil { break }
                continue
            }
            guard valid else {
                if firstProblem == nil {
                    firstProblem = .multiboot("the header at offset 0x\(hex(UInt64(offset))) has a bad checksum")
                }
                continue
            }
            var addresses: [UInt32]?
            if flags & Flag.addressFields != 0 {
                guard offset + 32 <= bytes.count else { return .invalid(.truncated(what: "multiboot address fields")) }
                addresses = (0..<5).map { reader.u32(offset + 12 + 4 * $0) }
            }
            return .header(Header(offset: offset, flags: flags, addresses: addresses))
        }
        return firstProblem.map { .invalid($0) } ?? .none
    }

    /// The kernel's segments and 32-bit entry point.
    public static func load(_ bytes: [UInt8], header: Header) throws(LoaderError) -> LoadedImage {
        let required = header.flags & 0xFFFF
        if required & Flag.videoMode != 0 {
            throw .multiboot("the kernel requires a video mode (header flag 2); swiftvmm has a serial console only")
        }
        guard required & ~Flag.supportedRequired == 0 else {
            throw .multiboot("the kernel requires header flags 0x\(hex(UInt64(required & ~Flag.supportedRequired))), which swiftvmm does not support")
        }
        let image: LoadedImage
        if let fields = header.addresses {
            image = try loadAOutKludge(bytes, header: header, fields: fields)
        } else {
            guard ELF64.isELF(bytes) else {
                throw .multiboot("the header has no address fields (flag 16) and the image is not ELF")
            }
            let elf = try ELFExecutable.load(bytes, classes: [.elf32, .elf64])
            image = LoadedImage(format: .multiboot, segments: elf.segments, entry: elf.entry)
        }
        guard image.entry <= UInt64(UInt32.max) else {
            throw .multiboot("entry point 0x\(hex(image.entry)) is not a 32-bit address")
        }
        for segment in image.segments where segment.address + segment.memorySize > 1 << 32 {
            throw .segmentOutsideRAM(address: segment.address, size: segment.memorySize)
        }
        return image
    }

    /// Flag 16: load [load_addr, load_end_addr) from the file at the offset that puts the header
    /// at header_addr, zero up to bss_end_addr, enter at entry_addr.
    static func loadAOutKludge(_ bytes: [UInt8], header: Header, fields: [UInt32]) throws(LoaderError) -> LoadedImage {
        let (headerAddress, loadAddress, loadEnd, bssEnd, entry) =
            (UInt64(fields[0]), UInt64(fields[1]), UInt64(fields[2]), UInt64(fields[3]), UInt64(fields[4]))
        guard headerAddress >= loadAddress, headerAddress - loadAddress <= UInt64(header.offset) else {
            throw .multiboot("header_addr 0x\(hex(headerAddress)) and load_addr 0x\(hex(loadAddress)) do not match the header's file offset")
        }
        let fileOffset = UInt64(header.offset) - (headerAddress - loadAddress)
        let available = UInt64(bytes.count) - fileOffset
        let loadSize: UInt64
        if loadEnd == 0 {
            loadSize = available
        } else {
            guard loadEnd >= loadAddress, loadEnd - loadAddress <= available else {
                throw .multiboot("load_end_addr 0x\(hex(loadEnd)) lies before load_addr or past the end of the file")
            }
            loadSize = loadEnd - loadAddress
        }
        var memorySize = loadSize
        if bssEnd != 0 {
            guard bssEnd >= loadAddress + loadSize else {
                throw .multiboot("bss_end_addr 0x\(hex(bssEnd)) lies before the end of the loaded data")
            }
            memorySize = bssEnd - loadAddress
        }
        let start = Int(fileOffset)
        let segment = ImageSegment(address: loadAddress, bytes: bytes[start..<(start + Int(loadSize))], memorySize: memorySize)
        return LoadedImage(format: .multiboot, segments: [segment], entry: entry)
    }
}

/// The multiboot information block and everything it points to, laid out as one blob to place
/// at `base` (the caller picks a spot clear of the kernel and the first page).
public struct MultibootInfo: Sendable {
    /// One memory-map entry (type 1 = RAM, 2 = reserved).
    public struct Region: Sendable, Equatable {
        public let base: UInt64
        public let length: UInt64
        public let type: UInt32

        public init(base: UInt64, length: UInt64, type: UInt32) {
            self.base = base
            self.length = length
            self.type = type
        }
    }

    /// A module already placed in guest memory.
    public struct Module: Sendable, Equatable {
        public let start: UInt32
        public let end: UInt32
        public let string: String

        public init(start: UInt32, end: UInt32, string: String) {
            self.start = start
            self.end = end
            self.string = string
        }
    }

    /// The info flags this builder sets: mem_*, cmdline, mods, mmap, boot_loader_name.
    public static let flags: UInt32 = 1 << 0 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 9
    /// The structure proper (fields up to the framebuffer ones of the 0.6.96 spec).
    static let infoSize = 120
    static let gdtOffset = 0x80

    public var memoryLowerKiB: UInt32
    public var memoryUpperKiB: UInt32
    public var commandLine: String
    public var modules: [Module]
    public var memoryMap: [Region]
    public var bootLoaderName = "swiftvmm"

    public init(memoryLowerKiB: UInt32, memoryUpperKiB: UInt32, commandLine: String, modules: [Module], memoryMap: [Region]) {
        self.memoryLowerKiB = memoryLowerKiB
        self.memoryUpperKiB = memoryUpperKiB
        self.commandLine = commandLine
        self.modules = modules
        self.memoryMap = memoryMap
    }

    /// Address of the flat GDT (null, 32-bit code at 0x08, data at 0x10) inside the blob.
    public static func gdtAddress(base: UInt32) -> UInt32 { base + UInt32(gdtOffset) }

    /// The blob for `base`: info at +0, a GDT at +0x80, then the memory map, module list and
    /// strings. All pointers are absolute guest-physical addresses.
    public func bytes(at base: UInt32) -> [UInt8] {
        var blob = [UInt8](repeating: 0, count: Self.gdtOffset + 24)
        func put32(_ value: UInt32, _ offset: Int) { LittleEndian.store(value, into: &blob, at: offset) }
        func append32(_ value: UInt32) { blob += LittleEndian.bytes(value) }
        func append64(_ value: UInt64) { blob += LittleEndian.bytes(value) }
        func appendString(_ text: String) -> UInt32 {
            let address = base + UInt32(blob.count)
            blob += Array(text.utf8) + [0]
            return address
        }
        // GDT: null, flat 32-bit code (0x00cf9a000000ffff), flat data (0x00cf92000000ffff).
        for (index, descriptor) in [UInt64(0), 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF].enumerated() {
            LittleEndian.store(descriptor, into: &blob, at: Self.gdtOffset + 8 * index)
        }
        let mapAddress = base + UInt32(blob.count)
        for region in memoryMap {
            append32(20) // size of the entry after this field
            append64(region.base)
            append64(region.length)
            append32(region.type)
        }
        let mapLength = UInt32(memoryMap.count * 24)
        let modulesAddress = base + UInt32(blob.count)
        let moduleTable = blob.count
        blob += [UInt8](repeating: 0, count: 16 * modules.count)
        for (index, module) in modules.enumerated() {
            let string = appendString(module.string)
            put32(module.start, moduleTable + 16 * index)
            put32(module.end, moduleTable + 16 * index + 4)
            put32(string, moduleTable + 16 * index + 8)
        }
        let commandLineAddress = appendString(commandLine)
        let nameAddress = appendString(bootLoaderName)
        put32(Self.flags, 0)
        put32(memoryLowerKiB, 4)
        put32(memoryUpperKiB, 8)
        put32(commandLineAddress, 16)
        put32(UInt32(modules.count), 20)
        put32(modulesAddress, 24)
        put32(mapLength, 44)
        put32(mapAddress, 48)
        put32(nameAddress, 64)
        return blob
    }
}
