import VMMCore

/// What a command line asks for.
public enum Invocation: Sendable {
    /// A command with its arguments (`path` names it: ["swiftvmm", "run"]).
    case command(ParsedArguments)
    /// `--help`, `-h` or `help [COMMAND]`: the help of the command named by the path.
    case help(path: [String], text: String)
    /// `--version` at the top level.
    case version(String)
}

/// Reads a command line (without the program name) against a root `CommandSpec`.
///
/// Subcommand names come first (`swiftvmm run ...`); then options may come in any order among
/// the positional arguments. An option's value is the next argument or follows `=`; `--` ends the
/// options (what follows goes to the command's `terminated` arguments). Every argument is looked
/// at once, and nothing is allocated beyond the parsed values, so any input, however long or
/// strange, costs time in proportion to its length and ends in a value or a `UsageError`.
public enum ArgumentScanner {
    public static func parse(_ arguments: [String], root: CommandSpec) throws(UsageError) -> Invocation {
        var command = root
        var path = [root.name]
        var index = 0
        // Subcommands, and `help [COMMAND...]`.
        while index < arguments.count, !command.subcommands.isEmpty {
            let word = arguments[index]
            if word == "help" {
                var target = command, targetPath = path
                for name in arguments[(index + 1)...] {
                    guard let sub = target.subcommand(named: name) else {
                        throw UsageError("no command '\(name)' in \(targetPath.joined(separator: " "))", path: targetPath)
                    }
                    target = sub
                    targetPath.append(name)
                }
                return .help(path: targetPath, text: HelpRenderer.render(target, path: targetPath))
            }
            guard let sub = command.subcommand(named: word) else { break }
            command = sub
            path.append(word)
            index += 1
        }
        var parsed = ParsedArguments(path: path)
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            // A passthrough command's options come before its request: the first other word
            // after the positionals (or what follows `--`) starts it.
            let passthroughStarts = command.passthrough != nil && parsed.positionals.count == command.positionals.count
            if passthroughStarts && (argument == "--" || !argument.hasPrefix("-")) {
                parsed.passthrough = Array(arguments[(argument == "--" ? index : index - 1)...])
                break
            }
            if argument == "--" {
                guard command.terminated != nil else { throw UsageError("'--' is not accepted here", path: path) }
                parsed.terminated = Array(arguments[index...])
                break
            }
            if argument == "--help" || argument == "-h" {
                return .help(path: path, text: HelpRenderer.render(command, path: path))
            }
            if argument == "--version", let version = command.version { return .version(version) }
            if argument.hasPrefix("--") {
                let body = argument.dropFirst(2)
                let name: String, inline: String?
                if let equals = body.firstIndex(of: "=") {
                    name = String(body[..<equals])
                    inline = String(body[body.index(after: equals)...])
                } else {
                    name = String(body)
                    inline = nil
                }
                guard let option = command.option(named: name) else {
                    throw UsageError("unknown option '--\(Self.printable(name))'", path: path)
                }
                switch option.kind {
                case .flag:
                    guard inline == nil else { throw UsageError("--\(name) takes no value", path: path) }
                    parsed.flags.insert(name)
                case .optionalValue(let bare):
                    parsed.values[name, default: []] = [inline ?? bare]
                case .value, .repeated:
                    let value: String
                    if let inline {
                        value = inline
                    } else {
                        guard index < arguments.count else { throw UsageError("missing a value for --\(name)", path: path) }
                        value = arguments[index]
                        index += 1
                    }
                    if option.kind == .repeated { parsed.values[name, default: []].append(value) } else { parsed.values[name] = [value] }
                }
                continue
            }
            if argument.hasPrefix("-"), argument.count > 1 {
                throw UsageError("unknown option '\(Self.printable(argument))'", path: path)
            }
            if !command.subcommands.isEmpty { // a command of commands runs none itself
                throw UsageError("no command '\(Self.printable(argument))'", path: path)
            }
            if parsed.positionals.count < command.positionals.count {
                parsed.positionals.append(argument)
                continue
            }
            throw UsageError("unexpected argument '\(Self.printable(argument))'", path: path)
        }
        if !command.subcommands.isEmpty {
            throw UsageError("missing a command (\(command.subcommands.map(\.name).joined(separator: ", ")))", path: path)
        }
        if let missing = command.positionals.dropFirst(parsed.positionals.count).first(where: { !$0.optional }) {
            throw UsageError("missing <\(missing.name)>", path: path)
        }
        return .command(parsed)
    }

    /// At most 64 characters of a user's argument, control characters replaced, for an error line.
    static func printable(_ text: String) -> String { text.printableExcerpt() }
}
