/// One request of `swiftvmm control SOCKET REQUEST`, each carried out through the HTTP API
/// (ControlClient says which calls). Sizes stay text here; ControlClient converts them.
public enum ControlCommand: Sendable, Equatable {
    /// `info`: the instance (GET /).
    case info
    /// `balloon`: the balloon's target, actual size, counters and the guest's last statistics.
    case balloonStatus
    /// `balloon SIZE`: ask the guest to hold SIZE in its balloon.
    case balloonTarget(String)
    /// `memory`: the VMM process's memory and how much of it is guest RAM.
    case memory
    /// `vcpus`: each vCPU thread: host CPU, affinity, exits by reason, run and wait time.
    case vcpus
    /// `pin N CPUS`: let vCPU N run only on host CPUs CPUS (a list such as 0,2-3).
    case pin(vcpu: String, cpus: String)
    /// `stats`: exit counts per vCPU, balloon and memory (what `--stats` prints at the end).
    case stats
    case pause
    case resume
    /// `power-button`: press the ACPI power button (wakes a guest suspended to RAM).
    case powerButton
    /// `stop`: end the run (status 72, as for any stop by the host).
    case stop
    /// `snapshot STATE MEMORY`: pause (if running), write the snapshot's two files, resume the
    /// VM if this paused it, or end it when `thenStop` (`swiftvmm snapshot --stop`).
    case snapshot(state: String, memory: String, thenStop: Bool, diff: Bool)
    case help
    /// An empty request: nothing to send.
    case nothing

    public static let summary = """
    info                     the instance: id, state (Not started, Running, Paused), version
    balloon                  balloon target, actual size, counters, the guest's statistics
    balloon SIZE             set the balloon target (a whole number of MiB: bytes, or with K, M or G)
    memory                   VMM memory: peak and current RSS, guest RAM resident
    vcpus                    each vCPU thread: host CPU, affinity, exits by reason, run and wait time
    pin N CPUS               let vCPU N run only on host CPUs CPUS (e.g. 1 or 0,2-3)
    stats                    exit counts per vCPU, balloon and memory
    pause | resume           park every vCPU / let them run again
    power-button             press the ACPI power button (wakes a guest sleeping in S3)
    stop                     end the run (exit status 72)
    snapshot STATE MEMORY    save the VM to a state file and a memory file (paused meanwhile)
    help                     this list
    """

    /// Parses one request's words (joined by blanks); the error says what is wrong.
    public static func parse(_ line: String) throws(ControlCommandError) -> ControlCommand {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }).map(String.init)
        guard let head = words.first?.lowercased() else { return .nothing }
        let arguments = Array(words.dropFirst())
        func noArguments(_ command: ControlCommand) throws(ControlCommandError) -> ControlCommand {
            guard arguments.isEmpty else { throw .usage(head) }
            return command
        }
        switch head {
        case "info": return try noArguments(.info)
        case "balloon":
            switch arguments.count {
            case 0: return .balloonStatus
            case 1: return .balloonTarget(arguments[0])
            default: throw .usage("balloon [SIZE]")
            }
        case "memory": return try noArguments(.memory)
        case "vcpus": return try noArguments(.vcpus)
        case "pin":
            guard arguments.count == 2 else { throw .usage("pin VCPU CPUS") }
            return .pin(vcpu: arguments[0], cpus: arguments[1])
        case "stats": return try noArguments(.stats)
        case "pause": return try noArguments(.pause)
        case "resume": return try noArguments(.resume)
        case "power-button": return try noArguments(.powerButton)
        case "stop", "quit": return try noArguments(.stop)
        case "snapshot":
            guard arguments.count == 2 else { throw .usage("snapshot STATE MEMORY") }
            return .snapshot(state: arguments[0], memory: arguments[1], thenStop: false, diff: false)
        case "help", "?": return try noArguments(.help)
        default: throw .unknown(head.printableExcerpt())
        }
    }
}

public enum ControlCommandError: Error, Equatable, CustomStringConvertible {
    case unknown(String)
    case usage(String)

    public var description: String {
        switch self {
        case .unknown(let word): return "unknown request '\(word)' (try 'help')"
        case .usage(let form): return "usage: \(form)"
        }
    }
}

/// Why a control request got no answer: the socket cannot be reached, or said nothing in time.
public enum ControlError: Error, Equatable, CustomStringConvertible {
    case unreachable(String)
    case noReply

    public var description: String {
        switch self {
        case .unreachable(let why): return why
        case .noReply: return "no reply"
        }
    }
}
