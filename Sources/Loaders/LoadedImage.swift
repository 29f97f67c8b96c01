import VMMCore
/// A piece of an image to place in guest memory.
public struct ImageSegment: Sendable, Equatable {
    /// Guest-physical address of the first byte.
    public let address: UInt64
    /// Bytes from the file.
    public let bytes: ArraySlice<UInt8>
    /// Size in memory (>= bytes.count; the rest is zero-filled, like .bss).
    public let memorySize: UInt64

    public init(address: UInt64, bytes: ArraySlice<UInt8>, memorySize: UInt64) {
        self.address = address
        self.bytes = bytes
        self.memorySize = memorySize
    }

    /// [address, address + memorySize).
    public var range: Range<UInt64> { address..<(address + memorySize) }
}

/// A parsed image: what to copy where, and where execution starts.
public struct LoadedImage: Sendable {
    public enum Format: String, Sendable { case flat, elf64, multiboot, linux }

    public let format: Format
    public let segments: [ImageSegment]
    public let entry: UInt64

    public init(format: Format, segments: [ImageSegment], entry: UInt64) {
        self.format = format
        self.segments = segments
        self.entry = entry
    }

    /// Checks every segment against guest RAM and a reserved list, then returns the image.
    /// `isRAM(address, size)` says whether a range is wholly inside guest RAM.
    public func validated(isRAM: (UInt64, UInt64) -> Bool,
                          reserved: [(name: String, range: Range<UInt64>)] = []) throws(LoaderError) -> LoadedImage {
        for segment in segments {
            guard isRAM(segment.address, segment.memorySize) else {
                throw .segmentOutsideRAM(address: segment.address, size: segment.memorySize)
            }
            for area in reserved where segment.memorySize > 0 && segment.range.overlaps(area.range) {
                throw .segmentOverlapsReserved(address: segment.address, size: segment.memorySize, area: area.name)
            }
        }
        return self
    }
}

/// Why an image cannot be loaded. Each case names what is wrong with the values involved.
public enum LoaderError: Error, Equatable, CustomStringConvertible {
    case empty
    case truncated(what: String)
    case badMagic
    case unsupportedClass(UInt8)
    case unsupportedEncoding(UInt8)
    case unsupportedMachine(UInt16)
    case unsupportedType(UInt16)
    case badProgramHeader(index: Int, why: String)
    case noLoadableSegments
    case segmentOutsideRAM(address: UInt64, size: UInt64)
    case segmentOverlapsReserved(address: UInt64, size: UInt64, area: String)
    case tooLarge(size: Int, room: UInt64)
    case multiboot(String)
    case linux(String)

    public var description: String {
        switch self {
        case .empty: return "image is empty"
        case .truncated(let what): return "image is truncated (\(what))"
        case .badMagic: return "not an ELF file (bad magic)"
        case .unsupportedClass(let value):
            return "ELF class \(value) is not supported (need ELFCLASS64; 32-bit kernels need a multiboot header)"
        case .unsupportedEncoding(let value): return "ELF data encoding \(value) is not supported (need little-endian)"
        case .unsupportedMachine(let value): return "ELF machine \(value) is not supported (need x86-64, 62, or i386, 3, for ELF32)"
        case .unsupportedType(let value): return "ELF type \(value) is not supported (need an executable, ET_EXEC)"
        case .badProgramHeader(let index, let why): return "ELF program header \(index): \(why)"
        case .noLoadableSegments: return "ELF has no PT_LOAD segments"
        case .segmentOutsideRAM(let address, let size):
            return "segment 0x\(hex(address))-0x\(hex(address &+ size)) lies outside guest RAM"
        case .segmentOverlapsReserved(let address, let size, let area):
            return "segment 0x\(hex(address))-0x\(hex(address &+ size)) overlaps the \(area)"
        case .multiboot(let why): return "multiboot: \(why)"
        case .linux(let why): return "Linux kernel: \(why)"
        case .tooLarge(let size, let room):
            return "image (\(size) bytes) is larger than the \(room) bytes of guest RAM available at its load address"
        }
    }
}

