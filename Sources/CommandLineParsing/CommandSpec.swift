/// What a command accepts, as plain data: its options, its positional arguments and its
/// subcommands. The scanner reads a command line against it and the help text is rendered from it,
/// so the two never disagree. No reflection and no dynamic casts: a command line is parsed in
/// microseconds and touches no type metadata beyond these values.
public struct CommandSpec: Sendable {
    public let name: String
    public let abstract: String
    public let discussion: String
    public let options: [OptionSpec]
    public let positionals: [PositionalSpec]
    /// Where the arguments after `--` go (help and name), or nil when `--` is not accepted.
    public let terminated: PositionalSpec?
    /// Once every positional is filled, the rest of the line is taken as it is, dashes and all
    /// (`swiftvmm control SOCKET balloon --help` sends "balloon --help").
    public let passthrough: PositionalSpec?
    public let subcommands: [CommandSpec]
    /// Whether `--version` prints the version (the top level only).
    public let version: String?

    public init(name: String, abstract: String, discussion: String = "", options: [OptionSpec] = [],
                positionals: [PositionalSpec] = [], terminated: PositionalSpec? = nil,
                passthrough: PositionalSpec? = nil, subcommands: [CommandSpec] = [], version: String? = nil) {
        self.name = name
        self.abstract = abstract
        self.discussion = discussion
        self.options = options
        self.positionals = positionals
        self.terminated = terminated
        self.passthrough = passthrough
        self.subcommands = subcommands
        self.version = version
    }

    func option(named name: String) -> OptionSpec? { options.first { $0.name == name } }
    func subcommand(named name: String) -> CommandSpec? { subcommands.first { $0.name == name } }
}

/// One `--name` option.
public struct OptionSpec: Sendable {
    public enum Kind: Sendable, Equatable {
        /// `--name`: present or not.
        case flag
        /// `--name VALUE` or `--name=VALUE`; given twice, the last one counts.
        case value
        /// `--name VALUE`, repeatable: every value, in order.
        case repeated
        /// `--name` alone means `bare`; a value only as `--name=VALUE` (the next argument stays
        /// what it is, so `--trace-exits image.elf` does not swallow the image).
        case optionalValue(bare: String)
    }

    public let name: String
    public let kind: Kind
    /// The value's placeholder in help ("size" shows as `--memory <size>`).
    public let valueName: String
    public let help: String

    public init(_ name: String, _ kind: Kind = .value, valueName: String? = nil, help: String) {
        self.name = name
        self.kind = kind
        self.valueName = valueName ?? name
        self.help = help
    }

    public static func flag(_ name: String, help: String) -> OptionSpec { OptionSpec(name, .flag, help: help) }
}

/// A positional argument, by its name in help (`<image>`).
public struct PositionalSpec: Sendable {
    public let name: String
    public let help: String
    public let optional: Bool

    public init(_ name: String, optional: Bool = false, help: String) {
        self.name = name
        self.help = help
        self.optional = optional
    }
}
