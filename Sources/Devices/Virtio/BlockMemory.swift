import Synchronization

/// A disk held in memory, counting each call: the backend of the fuzz target and the unit tests
/// (the VMM serves image files through FileBlockBackend).
public final class MemoryBlockBackend: BlockBackend {
    public let contents: Mutex<[UInt8]>
    private let callCounts = Mutex<[String: Int]>([:])
    public let size: UInt64
    public let readOnly: Bool
    public let supportsDiscard: Bool

    /// `sectors` sectors of a fixed pattern (byte i is i * 7 + i / 512).
    public init(sectors: Int, readOnly: Bool = false, discard: Bool = true) {
        let bytes = max(0, sectors) * 512
        contents = Mutex(Self.pattern(bytes: bytes))
        size = UInt64(bytes)
        (self.readOnly, supportsDiscard) = (readOnly, discard)
    }

    /// The pattern, computed once for the largest disk asked for and copied from then on: the
    /// fuzz target makes a disk per input, and computing it byte by byte was half its time.
    private static let patterns = Mutex<[UInt8]>([])

    private static func pattern(bytes: Int) -> [UInt8] {
        patterns.withLock { pattern in
            if pattern.count < bytes { pattern = (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 / 512) } }
            return Array(pattern.prefix(bytes))
        }
    }

    /// How often `call` (read, write, flush, discard, zeroes) was made.
    public func calls(_ call: String) -> Int { callCounts.withLock { $0[call] ?? 0 } }
    public func bytes(_ range: Range<Int>) -> [UInt8] { contents.withLock { Array($0[range]) } }

    private func count(_ call: String) { callCounts.withLock { $0[call, default: 0] += 1 } }

    /// Whether [offset, offset + length) lies on the disk.
    private func holds(_ offset: UInt64, _ length: Int) -> Bool { offset <= size && UInt64(length) <= size - offset }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        count("read")
        guard holds(offset, buffer.count) else { return false }
        contents.withLock { disk in for index in 0..<buffer.count { buffer[index] = disk[Int(offset) + index] } }
        return true
    }

    public func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64) -> Bool {
        count("write")
        guard !readOnly, holds(offset, buffer.count) else { return false }
        contents.withLock { disk in for index in 0..<buffer.count { disk[Int(offset) + index] = buffer[index] } }
        return true
    }

    public func flush() -> Bool {
        count("flush")
        return true
    }

    public func discard(at offset: UInt64, length: UInt64) -> Bool {
        count("discard")
        return zero(offset, length)
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) -> Bool {
        count("zeroes")
        return zero(offset, length)
    }

    private func zero(_ offset: UInt64, _ length: UInt64) -> Bool {
        guard !readOnly, length <= UInt64(Int.max), holds(offset, Int(length)) else { return false }
        contents.withLock { disk in for index in Int(offset)..<Int(offset + length) { disk[index] = 0 } }
        return true
    }
}
