/// ELF64 executables for x86-64: PT_LOAD segments at their physical addresses, and the entry point.
public enum ELF64 {
    static let magic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46]
    static let headerSize = 64
    static let programHeaderSize = 56
    static let maxProgramHeaders = 256
    static let loadType: UInt32 = 1 // PT_LOAD

    /// True when `bytes` start with the ELF magic (so the caller can choose a loader).
    public static func isELF(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 4 && Array(bytes[0..<4]) == magic
    }

    /// Parses an ELF64 x86-64 executable. Segment placement against RAM is checked by
    /// `LoadedImage.validated`.
    public static func load(_ bytes: [UInt8]) throws(LoaderError) -> LoadedImage {
        guard !bytes.isEmpty else { throw .empty }
        guard bytes.count >= 16 else { throw .truncated(what: "ELF identification") }
        guard Array(bytes[0..<4]) == magic else { throw .badMagic }
        guard bytes[4] == 2 else { throw .unsupportedClass(bytes[4]) }
        guard bytes[5] == 1 else { throw .unsupportedEncoding(bytes[5]) }
        guard bytes.count >= headerSize else { throw .truncated(what: "ELF header") }
        let reader = LittleEndianReader(bytes)
        let type = reader.u16(16), machine = reader.u16(18)
        guard type == 2 else { throw .unsupportedType(type) }
        guard machine == 62 else { throw .unsupportedMachine(machine) }
        let entry = reader.u64(24)
        let phoff = reader.u64(32)
        let phentsize = Int(reader.u16(54)), phnum = Int(reader.u16(56))
        guard phnum > 0 else { throw .noLoadableSegments }
        guard phentsize >= programHeaderSize, phnum <= maxProgramHeaders else {
            throw .badProgramHeader(index: 0, why: "entry size \(phentsize) or count \(phnum) is invalid")
        }
        guard phoff <= UInt64(bytes.count), UInt64(phentsize * phnum) <= UInt64(bytes.count) - phoff else {
            throw .truncated(what: "program headers")
        }
        var segments: [ImageSegment] = []
        for index in 0..<phnum {
            let base = Int(phoff) + index * phentsize
            guard reader.u32(base) == loadType else { continue }
            let offset = reader.u64(base + 8), paddr = reader.u64(base + 24)
            let filesz = reader.u64(base + 32), memsz = reader.u64(base + 40)
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

    private func value(_ offset: Int, _ width: Int) -> UInt64 {
        var result: UInt64 = 0
        for index in 0..<width { result |= UInt64(bytes[offset + index]) << (8 * index) }
        return result
    }
}
