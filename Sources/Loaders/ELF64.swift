import VMMCore
/// ELF64 executables for x86-64: PT_LOAD segments at their physical addresses, and the entry point.
public enum ELF64 {
    static let magic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46]
    static let headerSize = 64
    static let maxProgramHeaders = 256
    static let loadType: UInt32 = 1 // PT_LOAD

    /// True when `bytes` start with the ELF magic (so the caller can choose a loader).
    public static func isELF(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 4 && Array(bytes[0..<4]) == magic
    }

    /// Parses an ELF64 x86-64 executable. Segment placement against RAM is checked by
    /// `LoadedImage.validated`.
    public static func load(_ bytes: [UInt8]) throws(LoaderError) -> LoadedImage {
        try ELFExecutable.load(bytes, classes: [.elf64])
    }
}

/// ELF executables of either class, for loaders that accept both (multiboot kernels).
public enum ELFExecutable {
    /// Where the fields this loader reads sit in each class.
    public struct Class: Sendable, Equatable {
        let identifier: UInt8
        let machine: UInt16
        let headerSize: Int
        let programHeaderSize: Int
        let wordSize: Int
        let entry: Int, phoff: Int, phentsize: Int, phnum: Int
        /// Program header field offsets: p_offset, p_paddr, p_filesz, p_memsz.
        let offset: Int, paddr: Int, filesz: Int, memsz: Int

        public static let elf64 = Class(identifier: 2, machine: 62, headerSize: 64, programHeaderSize: 56, wordSize: 8,
                                        entry: 24, phoff: 32, phentsize: 54, phnum: 56, offset: 8, paddr: 24, filesz: 32, memsz: 40)
        public static let elf32 = Class(identifier: 1, machine: 3, headerSize: 52, programHeaderSize: 32, wordSize: 4,
                                        entry: 24, phoff: 28, phentsize: 42, phnum: 44, offset: 4, paddr: 12, filesz: 16, memsz: 20)
    }

    /// Parses an executable of one of `classes` (x86-64 for ELF64, i386 for ELF32).
    public static func load(_ bytes: [UInt8], classes: [Class]) throws(LoaderError) -> LoadedImage {
        guard !bytes.isEmpty else { throw .empty }
        guard bytes.count >= 16 else { throw .truncated(what: "ELF identification") }
        guard ELF64.isELF(bytes) else { throw .badMagic }
        guard let elfClass = classes.first(where: { $0.identifier == bytes[4] }) else { throw .unsupportedClass(bytes[4]) }
        guard bytes[5] == 1 else { throw .unsupportedEncoding(bytes[5]) }
        guard bytes.count >= elfClass.headerSize else { throw .truncated(what: "ELF header") }
        let reader = LittleEndianReader(bytes)
        func word(_ offset: Int) -> UInt64 { elfClass.wordSize == 8 ? reader.u64(offset) : UInt64(reader.u32(offset)) }
        let type = reader.u16(16), machine = reader.u16(18)
        guard type == 2 else { throw .unsupportedType(type) }
        guard machine == elfClass.machine else { throw .unsupportedMachine(machine) }
        let entry = word(elfClass.entry)
        let phoff = word(elfClass.phoff)
        let phentsize = Int(reader.u16(elfClass.phentsize)), phnum = Int(reader.u16(elfClass.phnum))
        guard phnum > 0 else { throw .noLoadableSegments }
        guard phentsize >= elfClass.programHeaderSize, phnum <= ELF64.maxProgramHeaders else {
            throw .badProgramHeader(index: 0, why: "entry size \(phentsize) or count \(phnum) is invalid")
        }
        guard phoff <= UInt64(bytes.count), UInt64(phentsize * phnum) <= UInt64(bytes.count) - phoff else {
            throw .truncated(what: "program headers")
        }
        var segments: [ImageSegment] = []
        for index in 0..<phnum {
            let base = Int(phoff) + index * phentsize
            guard reader.u32(base) == ELF64.loadType else { continue }
            let offset = word(base + elfClass.offset), paddr = word(base + elfClass.paddr)
            let filesz = word(base + elfClass.filesz), memsz = word(base + elfClass.memsz)
            guard filesz <= memsz else {
                throw .badProgramHeader(index: index, why: "file size \(filesz) exceeds memory size \(memsz)")
            }
            guard offset <= UInt64(bytes.count), filesz <= UInt64(bytes.count) - offset else {
                throw .badProgramHeader(index: index, why: "file data 0x\(hex(offset))+\(filesz) lies past the end of the file")
            }
            guard paddr <= UInt64.max - memsz else {
                throw .badProgramHeader(index: index, why: "address 0x\(hex(paddr)) + \(memsz) wraps")
            }
            let start = Int(offset)
            segments.append(ImageSegment(address: paddr, bytes: bytes[start..<(start + Int(filesz))], memorySize: memsz))
        }
        guard !segments.isEmpty else { throw .noLoadableSegments }
        return LoadedImage(format: .elf64, segments: segments, entry: entry)
    }
}

/// Little-endian field reads from a byte array; callers check bounds first.
struct LittleEndianReader {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func u16(_ offset: Int) -> UInt16 { UInt16(truncatingIfNeeded: value(offset, 2)) }
    func u32(_ offset: Int) -> UInt32 { UInt32(truncatingIfNeeded: value(offset, 4)) }
    func u64(_ offset: Int) -> UInt64 { value(offset, 8) }

    private func value(_ offset: Int, _ width: Int) -> UInt64 { LittleEndian.load(bytes, at: offset, size: width) }
}
