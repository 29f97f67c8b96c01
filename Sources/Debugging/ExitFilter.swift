import VMMCore
/// Which VM exits a trace or an exit breakpoint selects: `io`, `io:0x3f8-0x3ff`, `mmio`,
/// `mmio:0xc0000000-0xc00001ff`, `hlt`, `shutdown`, `debug`, ... joined by commas; `all` (or an
/// empty filter) selects every exit except `intr` (KVM_RUN interrupted by a signal, not a guest exit),
/// which must be named.
public struct ExitFilter: Sendable, Equatable, CustomStringConvertible {
    /// One term: a family of exits, optionally limited to an inclusive port or address range.
    public struct Rule: Sendable, Equatable, CustomStringConvertible {
        public let family: String
        public let range: ClosedRange<UInt64>?

        public init(family: String, range: ClosedRange<UInt64>? = nil) {
            self.family = family
            self.range = range
        }

        public func matches(_ event: ExitEvent) -> Bool {
            guard family == "all" ? event.kind != .interrupted : event.kind.family == family else { return false }
            guard let range else { return true }
            // A multi-byte access matches when any byte it touches is inside the range.
            let last = event.address &+ UInt64(max(event.size, 1) - 1)
            return event.address <= range.upperBound && last >= range.lowerBound
        }

        public var description: String {
            guard let range else { return family }
            let low = "0x" + hex(range.lowerBound)
            return range.lowerBound == range.upperBound ? "\(family):\(low)" : "\(family):\(low)-0x\(hex(range.upperBound))"
        }

        /// Every family a rule may name, sorted, computed once.
        public static let knownFamilies: [String] = Set(ExitEvent.Kind.allCases.map(\.family)).union(["all"]).sorted()

        /// Parses `family[:LOW[-HIGH]]`.
        public static func parse(_ text: String) throws(ExitFilterError) -> Rule {
            let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let family = parts[0].lowercased()
            guard knownFamilies.contains(family) else { throw .unknownReason(parts[0], known: knownFamilies) }
            guard parts.count == 2 else { return Rule(family: family) }
            guard family == "io" || family == "mmio" else { throw .rangeNotAllowed(family) }
            let bounds = parts[1].split(separator: "-", omittingEmptySubsequences: false).map(String.init)
            guard bounds.count <= 2, let low = parseNumber(bounds[0]), let high = bounds.count == 2 ? parseNumber(bounds[1]) : low else {
                throw .badRange(parts[1])
            }
            guard low <= high else { throw .badRange(parts[1]) }
            if family == "io" && high > 0xFFFF { throw .badRange(parts[1]) }
            return Rule(family: family, range: low...high)
        }
    }

    public let rules: [Rule]

    public init(rules: [Rule]) { self.rules = rules }

    /// Every guest exit.
    public static let all = ExitFilter(rules: [Rule(family: "all")])

    public func matches(_ event: ExitEvent) -> Bool { rules.contains { $0.matches(event) } }

    public var description: String { rules.map(\.description).joined(separator: ",") }

    public static func parse(_ text: String) throws(ExitFilterError) -> ExitFilter {
        let terms = text.split(separator: ",").map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
        guard !terms.isEmpty else { return .all }
        var rules: [Rule] = []
        for term in terms { rules.append(try Rule.parse(term)) }
        return ExitFilter(rules: rules)
    }
}

/// Why a filter did not parse.
public enum ExitFilterError: Error, Equatable, CustomStringConvertible {
    case unknownReason(String, known: [String])
    case rangeNotAllowed(String)
    case badRange(String)

    public var description: String {
        switch self {
        case .unknownReason(let name, let known): return "unknown exit reason '\(name)' (known: \(known.joined(separator: ", ")))"
        case .rangeNotAllowed(let family): return "'\(family)' takes no port or address range"
        case .badRange(let text): return "bad range '\(text)' (want LOW or LOW-HIGH, decimal or 0x-hex; ports up to 0xffff)"
        }
    }
}


extension StringProtocol {
    /// Without leading blanks and tabs, and without trailing blanks, tabs and carriage returns.
    func trimmingWhitespace() -> String {
        guard let first = firstIndex(where: { $0 != " " && $0 != "\t" }),
              let last = lastIndex(where: { $0 != " " && $0 != "\t" && $0 != "\r" }), first <= last else { return "" }
        return String(self[first...last])
    }
}
