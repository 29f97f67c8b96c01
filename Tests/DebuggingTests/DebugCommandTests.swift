import Debugging
import Testing

@Suite struct DebugCommandTests {
    @Test func commandsParse() throws {
        #expect(try DebugCommand.parse("step") == .step(count: 1))
        #expect(try DebugCommand.parse("stepi 5") == .stepInstruction(count: 5))
        #expect(try DebugCommand.parse("  c ") == .continue)
        #expect(try DebugCommand.parse("break main+0x10") == .breakpoint("main+0x10"))
        #expect(try DebugCommand.parse("break-exit io 0x3f8-0x3ff") == .exitBreakpoint(.init(family: "io", range: 0x3f8...0x3ff)))
        #expect(try DebugCommand.parse("break-exit hlt") == .exitBreakpoint(.init(family: "hlt")))
        #expect(try DebugCommand.parse("break-exit mmio 0xc0000000") == .exitBreakpoint(.init(family: "mmio", range: 0xc000_0000...0xc000_0000)))
        #expect(try DebugCommand.parse("delete 2") == .delete(2))
        #expect(try DebugCommand.parse("delete") == .delete(nil))
        #expect(try DebugCommand.parse("info breakpoints") == .infoBreakpoints)
        #expect(try DebugCommand.parse("set $rax 0x10") == .set(register: "rax", value: 16))
        #expect(try DebugCommand.parse("x/4g 0x1000") == .examine(virtual: true, count: 4, unit: 8, address: "0x1000"))
        #expect(try DebugCommand.parse("xp/16b 0") == .examine(virtual: false, count: 16, unit: 1, address: "0"))
        #expect(try DebugCommand.parse("x/w main") == .examine(virtual: true, count: 1, unit: 4, address: "main"))
        #expect(try DebugCommand.parse("vcpu 1") == .selectVCPU(1))
        #expect(try DebugCommand.parse("") == .nothing)
        #expect(try DebugCommand.parse("quit") == .quit)
    }

    @Test func badLinesGiveOneLineErrors() {
        #expect(throws: DebugCommandError.unknown("frobnicate")) { try DebugCommand.parse("frobnicate") }
        #expect(throws: DebugCommandError.badNumber("-3")) { try DebugCommand.parse("stepi -3") }
        #expect(throws: DebugCommandError.badNumber("0")) { try DebugCommand.parse("stepi 0") }
        #expect(throws: DebugCommandError.self) { try DebugCommand.parse("x/4q 0x1000") }
        #expect(throws: DebugCommandError.self) { try DebugCommand.parse("break") }
        #expect(throws: DebugCommandError.self) { try DebugCommand.parse("break-exit disk 1") }
        #expect(throws: DebugCommandError.self) { try DebugCommand.parse("set rax") }
        for error in [DebugCommandError.unknown("a"), .usage("b"), .badNumber("c")] {
            #expect(!error.description.contains("\n"))
        }
    }
}
