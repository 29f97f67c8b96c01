/// Why saved state could not be read back: a snapshot or migration stream is hostile input, so
/// every read is checked and every count bounded before anything is allocated or restored.
public enum StateError: Error, Equatable, CustomStringConvertible {
    /// The bytes ended before `what` was complete.
    case truncated(String)
    /// A value is outside what the reader accepts.
    case invalid(String)

    public var description: String {
        switch self {
        case .truncated(let what): return "truncated state: \(what) is incomplete"
        case .invalid(let why): return "invalid state: \(why)"
        }
    }
}

/// Appends saved state as little-endian fields (the layouts are in docs/snapshot.md).
public struct StateWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func u8(_ value: UInt8) { bytes.append(value) }
    public mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }
    public mutating func u16(_ value: UInt16) { append(value) }
    public mutating func u32(_ value: UInt32) { append(value) }
    public mutating func u64(_ value: UInt64) { append(value) }
    public mutating func i64(_ value: Int64) { append(UInt64(bitPattern: value)) }

    /// A u32 byte count, then the bytes.
    public mutating func blob(_ value: some Collection<UInt8>) {
        u32(UInt32(clamping: value.count))
        bytes.append(contentsOf: value.prefix(Int(UInt32.max)))
    }

    /// A UTF-8 string as a blob.
    public mutating func string(_ value: String) { blob(Array(value.utf8)) }

    /// Bytes as they are, without a count (fixed-size fields).
    public mutating func raw(_ value: some Collection<UInt8>) { bytes.append(contentsOf: value) }

    /// A monotonic time saved as its age at `now`: restored against the new process's clock, a
    /// deadline keeps its distance from the present, and a time in the past stays in the past.
    /// Time 0 means "never" to the devices and is kept as such (UInt64.max).
    public mutating func age(of time: UInt64, now: UInt64) { u64(time == 0 ? .max : now >= time ? now - time : 0) }

    private mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Reads what StateWriter wrote, refusing anything short or out of range.
public struct StateReader: Sendable {
    private let bytes: [UInt8]
    public private(set) var offset = 0
    /// What is being read, for error messages ("UART", "vcpu1").
    public let context: String

    public init(_ bytes: [UInt8], context: String) {
        self.bytes = bytes
        self.context = context
    }

    public var remaining: Int { bytes.count - offset }
    public var isAtEnd: Bool { offset == bytes.count }

    public mutating func u8(_ what: String) throws(StateError) -> UInt8 { UInt8(try integer(1, what)) }
    public mutating func u16(_ what: String) throws(StateError) -> UInt16 { UInt16(try integer(2, what)) }
    public mutating func u32(_ what: String) throws(StateError) -> UInt32 { UInt32(try integer(4, what)) }
    public mutating func u64(_ what: String) throws(StateError) -> UInt64 { try integer(8, what) }
    public mutating func i64(_ what: String) throws(StateError) -> Int64 { Int64(bitPattern: try integer(8, what)) }

    public mutating func bool(_ what: String) throws(StateError) -> Bool {
        let value = try u8(what)
        guard value <= 1 else { throw .invalid("\(context): \(what) is \(value), not 0 or 1") }
        return value == 1
    }

    /// A u32-counted blob of at most `maximum` bytes.
    public mutating func blob(_ what: String, maximum: Int) throws(StateError) -> [UInt8] {
        let count = Int(try u32("\(what) length"))
        guard count <= maximum else { throw .invalid("\(context): \(what) is \(count) bytes, more than \(maximum)") }
        return try raw(what, count: count)
    }

    /// A blob of exactly `count` bytes.
    public mutating func blob(_ what: String, exactly count: Int) throws(StateError) -> [UInt8] {
        let bytes = try blob(what, maximum: count)
        guard bytes.count == count else { throw .invalid("\(context): \(what) is \(bytes.count) bytes, not \(count)") }
        return bytes
    }

    public mutating func string(_ what: String, maximum: Int = 4096) throws(StateError) -> String {
        String(decoding: try blob(what, maximum: maximum), as: UTF8.self)
    }

    /// `count` bytes without a length prefix.
    public mutating func raw(_ what: String, count: Int) throws(StateError) -> [UInt8] {
        guard count >= 0, count <= remaining else { throw .truncated("\(context): \(what)") }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    /// A count of items that follow, at most `maximum`.
    public mutating func count(_ what: String, maximum: Int) throws(StateError) -> Int {
        let value = try u32(what)
        guard value <= UInt32(clamping: maximum) else { throw .invalid("\(context): \(what) is \(value), more than \(maximum)") }
        return Int(value)
    }

    /// A time saved by `StateWriter.age(of:now:)`, as a time of this process's clock.
    public mutating func age(_ what: String, now: UInt64) throws(StateError) -> UInt64 {
        let age = try u64(what)
        guard age != .max else { return 0 }
        return now > age ? now - age : 1
    }

    /// Ends reading: trailing bytes mean the writer and reader disagree about the layout.
    public func finish() throws(StateError) {
        guard isAtEnd else { throw .invalid("\(context): \(remaining) unexpected bytes at the end") }
    }

    private mutating func integer(_ size: Int, _ what: String) throws(StateError) -> UInt64 {
        guard size <= remaining else { throw .truncated("\(context): \(what)") }
        defer { offset += size }
        return LittleEndian.load(bytes, at: offset, size: size)
    }
}

/// CRC-32 (IEEE 802.3, the polynomial of zlib and gzip) of each snapshot section.
public enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 != 0 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    public static func checksum(_ bytes: some Collection<UInt8>, continuing previous: UInt32 = 0) -> UInt32 {
        var crc = ~previous
        let table = Self.table
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return ~crc
    }
}

/// A device whose state a snapshot saves and a restore puts back. `now` is the monotonic clock
/// of the process saving or restoring: times are stored relative to it.
public protocol SnapshotDevice: AnyObject, Sendable {
    func saveState(now: UInt64) -> [UInt8]
    func restoreState(_ bytes: [UInt8], now: UInt64) throws(StateError)
}
