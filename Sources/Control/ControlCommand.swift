import VMMCore
/// One request on the control socket (`run --control`), one line of text each. Replies are lines
/// of text ending with a line `ok` or `error: WHY`. Sizes stay text here: the VMM parses them
/// with its own K/M/G rules.
public enum ControlCommand: Sendable, Equatable {
    /// `balloon`: the balloon's target, actual size, counters and the guest's last statistics.
    case balloonStatus
    /// `balloon SIZE`: ask the guest to hold SIZE in its balloon.
    case balloonTarget(String)
    /// `memory`: the VMM process's memory and how much of it is guest RAM.
    case memory
    /// `stats`: exit counts per vCPU, balloon and memory (what `--stats` prints at the end).
    case stats
    case pause
    case resume
    /// `stop`: end the run (status 72, as for any stop by the host).
    case stop
    case help
    /// An empty line: no reply.
    case nothing

    public static let summary = """
    balloon                  balloon target, actual size, counters, the guest's statistics
    balloon SIZE             set the balloon target (bytes, or with K, M or G)
    memory                   VMM memory: peak and current RSS, guest RAM resident
    stats                    exit counts per vCPU, balloon and memory
    pause | resume           park every vCPU / let them run again
    stop                     end the run (exit status 72)
    help                     this list
    """

    /// Parses one line; the error is the text after `error: `.
    public static func parse(_ line: String) throws(ControlCommandError) -> ControlCommand {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
        guard let head = words.first?.lowercased() else { return .nothing }
        let arguments = Array(words.dropFirst())
        func noArguments(_ command: ControlCommand) throws(ControlCommandError) -> ControlCommand {
            guard arguments.isEmpty else { throw .usage(head) }
            return command
        }
        switch head {
        case "balloon":
            switch arguments.count {
            case 0: return .balloonStatus
            case 1: return .balloonTarget(arguments[0])
            default: throw .usage("balloon [SIZE]")
            }
        case "memory": return try noArguments(.memory)
        case "stats": return try noArguments(.stats)
        case "pause": return try noArguments(.pause)
        case "resume": return try noArguments(.resume)
        case "stop", "quit": return try noArguments(.stop)
        case "help", "?": return try noArguments(.help)
        default: throw .unknown(head)
        }
    }
}

public enum ControlCommandError: Error, Equatable, CustomStringConvertible {
    case unknown(String)
    case usage(String)

    public var description: String {
        switch self {
        case .unknown(let word): return "unknown command '\(word)' (try 'help')"
        case .usage(let form): return "usage: \(form)"
        }
    }
}
