import CHost
import Glibc
import Testing
@testable import Sandbox

/// Runs a classic-BPF seccomp program the way the kernel does, over a made-up seccomp_data, so
/// the allow-lists are checked without installing anything.
struct BPFMachine {
    let program: [sock_filter]

    func run(number: Int32, arguments: [UInt64] = [], arch: UInt32 = SeccompProgram.auditArchX86_64) -> UInt32 {
        func word(_ offset: UInt32) -> UInt32 {
            switch offset {
            case 0: return UInt32(bitPattern: number)
            case 4: return arch
            default:
                let index = Int(offset - 16) / 8, high = (offset - 16) % 8 == 4
                let value = index < arguments.count ? arguments[index] : 0
                return UInt32(truncatingIfNeeded: high ? value >> 32 : value)
            }
        }
        var accumulator: UInt32 = 0, pc = 0
        while pc < program.count {
            let instruction = program[pc]
            switch instruction.code {
            case SeccompProgram.ldWordAbsolute: accumulator = word(instruction.k); pc += 1
            case SeccompProgram.returnConstant: return instruction.k
            case SeccompProgram.jumpEqual:
                pc += 1 + Int(accumulator == instruction.k ? instruction.jt : instruction.jf)
            case SeccompProgram.jumpGreaterEqual:
                pc += 1 + Int(accumulator >= instruction.k ? instruction.jt : instruction.jf)
            case SeccompProgram.jumpSet:
                pc += 1 + Int(accumulator & instruction.k != 0 ? instruction.jt : instruction.jf)
            default: Issue.record("unexpected opcode \(instruction.code)"); return 0
            }
        }
        Issue.record("fell off the end of the program")
        return 0
    }

    func run(_ name: String, _ arguments: UInt64...) -> UInt32 { run(number: Syscalls.number(name)!, arguments: arguments) }
}

@Suite struct SeccompProgramTests {
    let machine = BPFMachine(program: try! SeccompProgram(rules: [
        .allow("read"),
        .allow("ioctl", argument: 1, in: [0xAE80, 0x8090AE81]),
        .allow("clone", argument: 0, allOf: 0x10000 | 0x100),
        .fail("clone3", errno: 38),
    ]).instructions)

    @Test func allowsListedCallsAndTrapsTheRest() {
        #expect(machine.run("read") == SeccompProgram.retAllow)
        #expect(machine.run("write") == SeccompProgram.retTrap)
        #expect(machine.run("openat") == SeccompProgram.retTrap)
    }

    @Test func checksArguments() {
        #expect(machine.run("ioctl", 5, 0xAE80) == SeccompProgram.retAllow)
        #expect(machine.run("ioctl", 5, 0x8090AE81) == SeccompProgram.retAllow)
        #expect(machine.run("ioctl", 5, 0x5401) == SeccompProgram.retTrap, "TCGETS is not on this list")
        #expect(machine.run("clone", 0x10000 | 0x100 | 0x200) == SeccompProgram.retAllow)
        #expect(machine.run("clone", 0x100) == SeccompProgram.retTrap, "a clone without CLONE_THREAD is a new process")
        #expect(machine.run("clone3") == SeccompProgram.retErrno | 38)
    }

    @Test func killsOtherArchitecturesAndTheX32ABI() {
        #expect(machine.run(number: 0, arch: 0x4000_0003) == SeccompProgram.retKillProcess, "i386")
        #expect(machine.run(number: 0x4000_0000) == SeccompProgram.retKillProcess, "x32 read")
    }

    @Test func refusesUnknownNames() {
        #expect(throws: SeccompProgram.BuildError.unknownCall("frobnicate")) { try SeccompProgram(rules: [.allow("frobnicate")]) }
    }

    @Test func theSyscallTableMatchesTheKernelsNumbers() {
        #expect(Syscalls.number("read") == 0 && Syscalls.number("ioctl") == 16 && Syscalls.number("seccomp") == 317)
        #expect(Syscalls.name(231) == "exit_group")
    }

    @Test(arguments: ThreadKind.allCases)
    func everyAllowListBuildsAndKeepsWhatEveryThreadNeeds(_ kind: ThreadKind) throws {
        let machine = BPFMachine(program: try SeccompProgram(rules: AllowLists.rules(for: kind)).instructions)
        // The violation reporter's own calls, a thread's end and the futexes of every lock.
        for name in ["write", "exit_group", "exit", "rt_sigreturn", "futex", "munmap", "madvise"] {
            #expect(machine.run(name) == SeccompProgram.retAllow, "\(kind.rawValue): \(name)")
        }
        // What no thread of a VMM has a use for.
        for name in ["execve", "ptrace", "process_vm_writev", "kexec_load", "init_module", "mount", "bpf", "setuid"] {
            #expect(machine.run(name) == SeccompProgram.retTrap, "\(kind.rawValue): \(name)")
        }
    }

    /// A child process installs a filter without `getppid` and calls it: the reporter prints the
    /// thread's kind and the call, and the process ends with 159.
    @Test func aViolationEndsTheProcessWithOneLineAndStatus159() throws {
        let program = try SeccompProgram(rules: [.allow("write"), .allow("exit_group"), .allow("rt_sigreturn")]).instructions
        var pipeEnds: [Int32] = [0, 0]
        #expect(pipe(&pipeEnds) == 0)
        let child = fork()
        if child == 0 {
            // The child runs C only (the parent's other threads are gone here).
            dup2(pipeEnds[1], STDERR_FILENO)
            chost_set_thread_kind("vcpu")
            _ = chost_install_violation_reporter()
            _ = program.withUnsafeBufferPointer { chost_install_seccomp($0.baseAddress, UInt16($0.count)) }
            _ = getppid()
            _exit(0)
        }
        close(pipeEnds[1])
        var status: Int32 = 0
        waitpid(child, &status, 0)
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = read(pipeEnds[0], &buffer, buffer.count)
        close(pipeEnds[0])
        let message = String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self)
        #expect((status >> 8) & 0xFF == 159 && status & 0x7F == 0, "status \(status)")
        #expect(message.hasPrefix("swiftvmm: seccomp: the vcpu thread made system call getppid (110)"), "\(message)")
    }
}
