import CHost

/// One entry of an allow-list.
public struct SyscallRule: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        /// Allowed with any arguments.
        case allow
        /// Allowed when the low 32 bits of argument `argument` are one of `values` (ioctl
        /// requests and socket domains: the kernel itself reads only those bits).
        case allowIfOneOf(argument: Int, values: [UInt32])
        /// Allowed when the low 32 bits of argument `argument` have every bit of `mask` set
        /// (clone with CLONE_THREAD: threads, never processes).
        case allowIfAllSet(argument: Int, mask: UInt32)
        /// Refused with this errno, not trapped (clone3: glibc then falls back to clone, whose
        /// flags a filter can see).
        case fail(errno: UInt32)
    }
    public let name: String
    public let action: Action

    public static func allow(_ name: String) -> SyscallRule { SyscallRule(name: name, action: .allow) }
    public static func allow(_ name: String, argument: Int, in values: [UInt32]) -> SyscallRule {
        SyscallRule(name: name, action: .allowIfOneOf(argument: argument, values: values))
    }
    public static func allow(_ name: String, argument: Int, allOf mask: UInt32) -> SyscallRule {
        SyscallRule(name: name, action: .allowIfAllSet(argument: argument, mask: mask))
    }
    public static func fail(_ name: String, errno: UInt32) -> SyscallRule { SyscallRule(name: name, action: .fail(errno: errno)) }
}

/// A classic-BPF seccomp program: checks the architecture, then walks the rules; a call no rule
/// allows traps (SIGSYS, which the violation reporter turns into one line and status 159).
public struct SeccompProgram: Sendable {
    /// struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (low word first).
    static let numberOffset: UInt32 = 0, archOffset: UInt32 = 4, argumentsOffset: UInt32 = 16
    static let auditArchX86_64: UInt32 = 0xC000_003E
    /// The x32 ABI's call numbers have this bit; none of ours do.
    static let x32Bit: UInt32 = 0x4000_0000
    public static let retKillProcess: UInt32 = 0x8000_0000, retTrap: UInt32 = 0x0003_0000
    public static let retErrno: UInt32 = 0x0005_0000, retAllow: UInt32 = 0x7FFF_0000

    // BPF opcodes (linux/bpf_common.h).
    static let ldWordAbsolute: UInt16 = 0x20, jumpEqual: UInt16 = 0x15, jumpGreaterEqual: UInt16 = 0x35
    static let jumpSet: UInt16 = 0x45, returnConstant: UInt16 = 0x06

    public let instructions: [sock_filter]

    public enum BuildError: Error, Equatable, CustomStringConvertible {
        case unknownCall(String)
        case tooLong(Int)
        public var description: String {
            switch self {
            case .unknownCall(let name): "no x86-64 system call is named \(name)"
            case .tooLong(let count): "the filter has \(count) instructions (BPF allows 4096)"
            }
        }
    }

    public init(rules: [SyscallRule]) throws(BuildError) {
        typealias I = sock_filter
        func statement(_ code: UInt16, _ k: UInt32) -> I { I(code: code, jt: 0, jf: 0, k: k) }
        func jump(_ code: UInt16, _ k: UInt32, _ jt: UInt8, _ jf: UInt8) -> I { I(code: code, jt: jt, jf: jf, k: k) }
        var program: [I] = [
            statement(Self.ldWordAbsolute, Self.archOffset),
            jump(Self.jumpEqual, Self.auditArchX86_64, 1, 0),
            statement(Self.returnConstant, Self.retKillProcess),
            statement(Self.ldWordAbsolute, Self.numberOffset),
            jump(Self.jumpGreaterEqual, Self.x32Bit, 0, 1),
            statement(Self.returnConstant, Self.retKillProcess),
        ]
        for rule in rules {
            guard let number = Syscalls.number(rule.name) else { throw .unknownCall(rule.name) }
            // Each rule is a block entered when the number matches and skipped otherwise; a
            // block that checks an argument reloads the number before falling through.
            var block: [I]
            switch rule.action {
            case .allow:
                block = [statement(Self.returnConstant, Self.retAllow)]
            case .fail(let errno):
                block = [statement(Self.returnConstant, Self.retErrno | (errno & 0xFFFF))]
            case .allowIfOneOf(let argument, let values):
                block = [statement(Self.ldWordAbsolute, Self.argumentsOffset + 8 * UInt32(argument))]
                for value in values {
                    block += [jump(Self.jumpEqual, value, 0, 1), statement(Self.returnConstant, Self.retAllow)]
                }
                block.append(statement(Self.returnConstant, Self.retTrap))
            case .allowIfAllSet(let argument, let mask):
                // jset tests any bit; each bit of the mask is tested on its own.
                block = [statement(Self.ldWordAbsolute, Self.argumentsOffset + 8 * UInt32(argument))]
                for bit in 0..<32 where mask & (1 << UInt32(bit)) != 0 {
                    block.append(jump(Self.jumpSet, 1 << UInt32(bit), 1, 0))
                    block.append(statement(Self.returnConstant, Self.retTrap))
                }
                block.append(statement(Self.returnConstant, Self.retAllow))
            }
            guard block.count < 255 else { throw .tooLong(block.count) }
            program.append(jump(Self.jumpEqual, UInt32(bitPattern: number), 0, UInt8(block.count)))
            program += block
        }
        program.append(statement(Self.returnConstant, Self.retTrap))
        guard program.count <= 4096 else { throw .tooLong(program.count) }
        instructions = program
    }
}

/// x86-64 system call numbers by name (from the kernel header, tools/gen-syscall-table.sh).
public enum Syscalls {
    static let byName: [String: Int32] = {
        var table: [String: Int32] = [:]
        for index in 0..<Int(chost_syscall_count) {
            let entry = chost_syscalls_entry(Int32(index))
            table[String(cString: entry.name)] = entry.number
        }
        return table
    }()

    public static func number(_ name: String) -> Int32? { byName[name] }

    public static func name(_ number: Int32) -> String? { byName.first { $0.value == number }?.key }
}
