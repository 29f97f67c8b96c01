/// A size written for people: "128M", "2G", "4096", "512K" (binary units, case-insensitive).
public struct ByteSize: Sendable, Equatable, CustomStringConvertible {
    public let bytes: UInt64

    public init(bytes: UInt64) { self.bytes = bytes }

    /// Parses digits with an optional K, M, G or T suffix (an optional trailing "B"/"iB" is allowed).
    public init?(parsing text: String) {
        var digits = Substring(text.trimmingCharacters())
        var shift: UInt64 = 0
        for suffix in ["ib", "b"] where digits.lowercased().hasSuffix(suffix) && digits.count > suffix.count {
            let candidate = digits.dropLast(suffix.count)
            if let last = candidate.last, "kmgtKMGT".contains(last) { digits = candidate; break }
        }
        if let last = digits.last, let unit = "kmgt".firstIndex(of: Character(last.lowercased())) {
            shift = UInt64("kmgt".distance(from: "kmgt".startIndex, to: unit) + 1) * 10
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let value = UInt64(digits) else {
            return nil
        }
        let (scaled, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow else { return nil }
        bytes = scaled
    }

    public var description: String {
        for (unit, shift) in [("G", 30), ("M", 20), ("K", 10)] where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift)\(unit)"
        }
        return "\(bytes)"
    }
}

extension String {
    func trimmingCharacters() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
