/// A command line read against a `CommandSpec`: which options were given with what values, and
/// the positional arguments. Typed values come from `value(_:as:)` and friends, which turn a value
/// that does not convert into a `UsageError` naming the option.
public struct ParsedArguments: Sendable {
    /// The command's names from the root down (["swiftvmm", "run"]).
    public let path: [String]
    var values: [String: [String]] = [:]
    var flags: Set<String> = []
    public internal(set) var positionals: [String] = []
    /// What followed `--`.
    public internal(set) var terminated: [String] = []
    /// What followed the last positional of a passthrough command.
    public internal(set) var passthrough: [String] = []

    init(path: [String]) { self.path = path }

    public func flag(_ name: String) -> Bool { flags.contains(name) }

    /// The last value given for `--name`, nil when it was not given.
    public func value(_ name: String) -> String? { values[name]?.last }

    /// Every value given for a repeatable `--name`, in order.
    public func values(_ name: String) -> [String] { values[name] ?? [] }

    /// The value of `--name` converted by `convert`; a value it refuses is a usage error that
    /// names the option and, when given, what it expects.
    public func value<T>(_ name: String, expecting: @autoclosure () -> String? = nil, _ convert: (String) -> T?) throws(UsageError) -> T? {
        guard let text = value(name) else { return nil }
        guard let converted = convert(text) else { throw invalid(text, name, expecting()) }
        return converted
    }

    /// Every value of a repeatable `--name`, converted.
    public func values<T>(_ name: String, expecting: @autoclosure () -> String? = nil, _ convert: (String) -> T?) throws(UsageError) -> [T] {
        var result: [T] = []
        for text in values(name) {
            guard let converted = convert(text) else { throw invalid(text, name, expecting()) }
            result.append(converted)
        }
        return result
    }

    /// The value of `--name` as one of an enumeration's cases, by raw value; the error lists them.
    public func choice<T: RawRepresentable & CaseIterable>(_ name: String, of type: T.Type = T.self) throws(UsageError) -> T?
    where T.RawValue == String {
        try value(name, expecting: "one of " + T.allCases.map(\.rawValue).joined(separator: ", ")) { T(rawValue: $0) }
    }

    /// A usage error for this command (it points at this command's help).
    public func error(_ message: String) -> UsageError { UsageError(message, path: path) }

    private func invalid(_ text: String, _ name: String, _ expecting: String?) -> UsageError {
        error("invalid value '\(text)' for --\(name)" + (expecting.map { ": expected \($0)" } ?? ""))
    }
}

/// A command line that does not parse: one line, and the command whose help to point at.
public struct UsageError: Error, Sendable, CustomStringConvertible {
    public let message: String
    /// The command's names from the root down.
    public let path: [String]

    public init(_ message: String, path: [String]) {
        self.message = message
        self.path = path
    }

    /// The command that shows this command's help.
    public var helpCommand: String { (path + ["--help"]).joined(separator: " ") }

    public var description: String { "\(message) (see '\(helpCommand)')" }
}
