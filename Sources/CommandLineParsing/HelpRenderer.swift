/// A command's help text, rendered from its `CommandSpec` and wrapped to 80 columns.
public enum HelpRenderer {
    static let width = 80
    static let labelColumn = 28

    public static func render(_ command: CommandSpec, path: [String]) -> String {
        var text = wrap("OVERVIEW: \(command.abstract)", indent: 0)
        if !command.discussion.isEmpty { text += "\n" + wrap(command.discussion, indent: 0) }
        text += "\nUSAGE: \(usage(command, path: path))\n"
        let arguments = command.positionals + [command.terminated, command.passthrough].compactMap { $0 }
        if !arguments.isEmpty {
            text += "\nARGUMENTS:\n"
            for argument in arguments { text += entry("<\(argument.name)>", argument.help) }
        }
        text += "\nOPTIONS:\n"
        for option in command.options {
            switch option.kind {
            case .flag: text += entry("--\(option.name)", option.help)
            case .value: text += entry("--\(option.name) <\(option.valueName)>", option.help)
            case .repeated: text += entry("--\(option.name) <\(option.valueName)> ...", option.help)
            case .optionalValue: text += entry("--\(option.name)[=<\(option.valueName)>]", option.help)
            }
        }
        if command.version != nil { text += entry("--version", "Show the version.") }
        text += entry("-h, --help", "Show help information.")
        if !command.subcommands.isEmpty {
            text += "\nSUBCOMMANDS:\n"
            for sub in command.subcommands { text += entry(sub.name, sub.abstract) }
            text += "\n  See '\(path.joined(separator: " ")) help <subcommand>' for detailed help.\n"
        }
        return text
    }

    static func usage(_ command: CommandSpec, path: [String]) -> String {
        var words = path
        if !command.subcommands.isEmpty {
            words.append("<subcommand>")
            return words.joined(separator: " ")
        }
        if !command.options.isEmpty { words.append("[<options>]") }
        for argument in command.positionals { words.append(argument.optional ? "[<\(argument.name)>]" : "<\(argument.name)>") }
        if let passthrough = command.passthrough { words.append("<\(passthrough.name)> ...") }
        if let terminated = command.terminated { words.append("[-- <\(terminated.name)> ...]") }
        return words.joined(separator: " ")
    }

    /// "  LABEL   help wrapped in the right column", the help on the next line when LABEL is long.
    static func entry(_ label: String, _ help: String) -> String {
        let head = "  " + label
        let body = wrap(help, indent: labelColumn)
        if head.count + 2 <= labelColumn {
            return head + String(repeating: " ", count: labelColumn - head.count) + body.dropFirst(labelColumn)
        }
        return head + "\n" + body
    }

    /// `text` in lines of at most `width` columns (a longer word stays whole), each indented.
    static func wrap(_ text: String, indent: Int) -> String {
        let pad = String(repeating: " ", count: indent)
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ", omittingEmptySubsequences: true) {
            if !line.isEmpty, indent + line.count + 1 + word.count > width {
                lines.append(pad + line)
                line = ""
            }
            line += (line.isEmpty ? "" : " ") + word
        }
        if !line.isEmpty || lines.isEmpty { lines.append(pad + line) }
        return lines.joined(separator: "\n") + "\n"
    }
}
