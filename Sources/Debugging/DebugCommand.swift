import VMMCore
/// One line of the interactive debugger, parsed. Addresses stay text here (`main`, `main+8`,
/// `0x100000`): the debugger resolves them against the image's symbols.
public enum DebugCommand: Sendable, Equatable {
    /// Run to the next VM exit (`count` times).
    case step(count: Int)
    /// Single-step `count` instructions.
    case stepInstruction(count: Int)
    case `continue`
    case breakpoint(String)
    /// A breakpoint in a debug register (at most four).
    case hardwareBreakpoint(String)
    case exitBreakpoint(ExitFilter.Rule)
    case delete(Int?)
    case infoBreakpoints
    case registers
    case specialRegisters
    case set(register: String, value: UInt64)
    /// `x/NU ADDR` (virtual: true) or `xp/NU ADDR`; `unit` is 1, 2, 4 or 8 bytes.
    case examine(virtual: Bool, count: Int, unit: Int, address: String)
    case selectVCPU(Int)
    case stats
    case help
    case quit
    /// An empty line: nothing to do.
    case nothing

    /// What `help` prints.
    public static let summary = """
    step [N]                 run to the next VM exit (N times) and show it
    stepi [N]                single-step N instructions (default 1)
    continue                 run until a breakpoint, an exit breakpoint or the end
    break ADDR               software breakpoint at ADDR (a number, a symbol, symbol+offset or $reg)
    hbreak ADDR              hardware breakpoint (debug registers, at most 4)
    break-exit io PORT[-PORT] | mmio ADDR[-ADDR] | hlt | shutdown | REASON
                             stop after matching VM exits
    delete [N]               delete breakpoint N (all without N)
    info breakpoints         list breakpoints and exit breakpoints
    regs | sregs             general / segment and control registers of the current vCPU
    set REG VALUE            set a general register, rip or rflags
    x/N[b|h|w|d|g] VADDR     examine guest-virtual memory (translated by the current vCPU)
    xp/N[b|h|w|d|g] PADDR    examine guest-physical memory
    vcpu N                   make vCPU N current
    stats                    exit counts per vCPU
    quit                     stop the VM and leave
    """

    /// Parses one line; the error is a one-line message for the prompt.
    public static func parse(_ line: String) throws(DebugCommandError) -> DebugCommand {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
        guard let head = words.first?.lowercased() else { return .nothing }
        let arguments = Array(words.dropFirst())
        func count(default value: Int = 1) throws(DebugCommandError) -> Int {
            guard arguments.count <= 1 else { throw .usage("\(head) [N]") }
            guard let text = arguments.first else { return value }
            guard let number = parseNumber(text), number >= 1, number <= 1_000_000 else { throw .badNumber(text) }
            return Int(number)
        }
        switch head {
        case "s", "step": return .step(count: try count())
        case "si", "stepi": return .stepInstruction(count: try count())
        case "c", "cont", "continue":
            guard arguments.isEmpty else { throw .usage("continue") }
            return .continue
        case "b", "break":
            guard arguments.count == 1 else { throw .usage("break ADDR") }
            return .breakpoint(arguments[0])
        case "hb", "hbreak":
            guard arguments.count == 1 else { throw .usage("hbreak ADDR") }
            return .hardwareBreakpoint(arguments[0])
        case "break-exit":
            guard let family = arguments.first, arguments.count <= 2 else {
                throw .usage("break-exit io PORT[-PORT] | mmio ADDR[-ADDR] | hlt | shutdown")
            }
            let term = arguments.count == 2 ? "\(family):\(arguments[1])" : family
            do { return .exitBreakpoint(try ExitFilter.Rule.parse(term)) } catch { throw .filter(error) }
        case "d", "delete":
            guard arguments.count <= 1 else { throw .usage("delete [N]") }
            guard let text = arguments.first else { return .delete(nil) }
            guard let number = parseNumber(text), number <= Int.max else { throw .badNumber(text) }
            return .delete(Int(number))
        case "info", "i":
            guard arguments.count == 1, ["breakpoints", "break", "b"].contains(arguments[0].lowercased()) else {
                throw .usage("info breakpoints")
            }
            return .infoBreakpoints
        case "regs", "registers", "info-registers": return .registers
        case "sregs": return .specialRegisters
        case "set":
            guard arguments.count == 2 else { throw .usage("set REG VALUE") }
            guard let value = parseNumber(arguments[1]) else { throw .badNumber(arguments[1]) }
            return .set(register: arguments[0].lowercased().trimmingPrefix("$"), value: value)
        case "vcpu":
            guard arguments.count == 1 else { throw .usage("vcpu N") }
            guard let number = parseNumber(arguments[0]), number < 1024 else { throw .badNumber(arguments[0]) }
            return .selectVCPU(Int(number))
        case "stats": return .stats
        case "h", "help", "?": return .help
        case "q", "quit", "exit": return .quit
        default:
            if head.hasPrefix("x") { return try examine(head, arguments) }
            throw .unknown(words[0])
        }
    }

    /// `x/4g ADDR`, `xp/16b ADDR`, `x ADDR` (one 8-byte word).
    private static func examine(_ head: String, _ arguments: [String]) throws(DebugCommandError) -> DebugCommand {
        let parts = head.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts[0] == "x" || parts[0] == "xp" else { throw .unknown(head) }
        guard arguments.count == 1 else { throw .usage("\(parts[0])/N[b|h|w|d|g] ADDR") }
        var count = 1, unit = 8
        if parts.count == 2 {
            var format = Substring(parts[1])
            let digits = format.prefix { $0.isNumber }
            format = format.dropFirst(digits.count)
            if !digits.isEmpty {
                guard let number = Int(digits), number >= 1, number <= 4096 else { throw .badNumber(String(digits)) }
                count = number
            }
            switch format {
            case "": break
            case "b": unit = 1
            case "h": unit = 2
            case "w", "d": unit = 4
            case "g": unit = 8
            default: throw .usage("\(parts[0])/N[b|h|w|d|g] ADDR (b=1, h=2, w=d=4, g=8 bytes)")
            }
        }
        return .examine(virtual: parts[0] == "x", count: count, unit: unit, address: arguments[0])
    }
}

/// A line the debugger could not take, worded for the prompt.
public enum DebugCommandError: Error, Equatable, CustomStringConvertible {
    case unknown(String)
    case usage(String)
    case badNumber(String)
    case filter(ExitFilterError)

    public var description: String {
        switch self {
        case .unknown(let word): return "unknown command '\(word)' (try 'help')"
        case .usage(let form): return "usage: \(form)"
        case .badNumber(let text): return "bad number '\(text)'"
        case .filter(let error): return error.description
        }
    }
}

extension String {
    func trimmingPrefix(_ prefix: String) -> String { hasPrefix(prefix) ? String(dropFirst(prefix.count)) : self }
}
