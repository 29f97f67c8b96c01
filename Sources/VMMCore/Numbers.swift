/// Little-endian integers in byte arrays: guest structures, device registers, image headers and
/// the gdb protocol all use this one set. Sizes and offsets may come from a guest or an image:
/// bytes outside the array read as zero and are not written, widths past 8 bytes are zero.
public enum LittleEndian {
    /// The low `size` bytes of `value`, least significant first.
    @inlinable
    public static func bytes<Value: FixedWidthInteger>(_ value: Value, size: Int = MemoryLayout<Value>.size) -> [UInt8] {
        let wide = UInt64(truncatingIfNeeded: value)
        return (0..<max(0, size)).map { $0 < 8 ? UInt8(truncatingIfNeeded: wide >> (8 &* UInt64($0))) : 0 }
    }

    /// Stores the low `size` bytes of `value` at `offset`; bytes that would fall outside are dropped.
    @inlinable
    public static func store<Value: FixedWidthInteger>(_ value: Value, size: Int = MemoryLayout<Value>.size,
                                                       into bytes: inout [UInt8], at offset: Int) {
        for (index, byte) in Self.bytes(value, size: size).enumerated() {
            let (at, overflow) = offset.addingReportingOverflow(index)
            if !overflow, at >= 0, at < bytes.count { bytes[at] = byte }
        }
    }

    /// Up to 8 bytes from `offset` (default: all of `bytes`) as one value; missing bytes are zero.
    /// Indexes the array directly: loaders read every header field and scan images through this.
    @inlinable
    public static func load(_ bytes: [UInt8], at offset: Int = 0, size: Int = 8) -> UInt64 {
        guard offset >= 0, offset < bytes.count else { return 0 }
        let end = offset + min(max(0, min(size, 8)), bytes.count - offset)
        var value: UInt64 = 0
        var shift: UInt64 = 0
        for index in offset..<end {
            value |= UInt64(bytes[index]) << shift
            shift &+= 8
        }
        return value
    }

    /// The same for any collection (slices count from their own start).
    @inlinable
    public static func load(_ bytes: some Collection<UInt8>, at offset: Int = 0, size: Int = 8) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        for byte in bytes.dropFirst(max(0, offset)).prefix(max(0, min(size, 8))) {
            value |= UInt64(byte) << shift
            shift &+= 8
        }
        return value
    }
}

/// Lower-case hexadecimal without a prefix.
public func hex(_ value: UInt64) -> String { String(value, radix: 16) }

/// Decimal or 0x-prefixed hexadecimal (any case); nil for anything else or a value past 2^64.
public func parseNumber(_ text: some StringProtocol) -> UInt64? {
    let lower = text.lowercased()
    if lower.hasPrefix("0x") { return UInt64(lower.dropFirst(2), radix: 16) }
    return UInt64(lower)
}

/// `value` with one decimal ("12.5"); "-" for a value that is not finite or too large to count.
public func formatOneDecimal(_ value: Double) -> String {
    guard value.isFinite, abs(value) < 1e15 else { return "-" }
    let tenths = Int((value * 10).rounded())
    return (tenths < 0 ? "-" : "") + "\(abs(tenths) / 10).\(abs(tenths) % 10)"
}

extension String {
    /// At most `limit` unicode scalars of text a client or user supplied, control characters
    /// replaced by "?" and "..." added when cut: safe to put in a one-line error.
    public func printableExcerpt(limit: Int = 64) -> String {
        let scalars = unicodeScalars
        let cleaned = String(String.UnicodeScalarView(scalars.prefix(limit).map { $0.value < 0x20 || $0.value == 0x7F ? "?" : $0 }))
        return scalars.count > limit ? cleaned + "..." : cleaned
    }
}
