@testable import Boot
import Foundation
import Testing

/// Exit tracing, the debugger prompt and the gdb stub against the kernel-mode debugme guest
/// (sum of 10 Fibonacci numbers = 88; status 1 when right, 3 when a debugger changed it).
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct DebugTests {
    func script(_ lines: String) throws -> String {
        let path = Harness.temporaryPath("script")
        try lines.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func traceShowsOnlyTheSelectedExits() throws {
        requireGuests("debugme.elf")
        let result = try swiftvmm(["run", Harness.guest("debugme.elf"), "--trace-exits=io:0xf4"])
        #expect(result.status == 1, "\(result)")
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(result)")
        #expect(lines.first?.contains("vcpu0 io out port=0xf4 size=1 data=0x0 rip=0x") == true, "\(result)")

        let file = Harness.temporaryPath("trace")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let traced = try swiftvmm(["run", Harness.guest("debugme.elf"), "--trace-exits=io,hlt", "--trace-file", file])
        #expect(traced.status == 1 && traced.stderr.isEmpty, "\(traced)")
        let trace = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
        // One line per character of "debugme: sum=88\n", then the debug-exit write.
        let serial = trace.filter { $0.contains("io out port=0x3f8 size=1") }
        #expect(serial.count == "debugme: sum=88\n".utf8.count, "\(trace)")
        #expect(serial.first?.contains("data=0x64") == true, "\(trace)") // 'd'
        #expect(trace.last?.contains("port=0xf4") == true, "\(trace)")
    }

    @Test func promptBreaksStepsAndChangesTheResult() throws {
        requireGuests("debugme.elf")
        let commands = try script("""
            break compute
            continue
            regs
            x/2g $rsp
            stepi 2
            break report
            info breakpoints
            continue
            set rdi 5
            continue
            """)
        let result = try swiftvmm(["debug", Harness.guest("debugme.elf"), "--script", commands])
        let out = result.stdout
        #expect(out.contains("vcpu0 stopped at 0x100000 <_start>"), "\(result)")
        #expect(out.contains("vcpu0 hit breakpoint 1 at 0x100008 <compute>"), "\(result)")
        #expect(out.contains("rdi 0x000000000000000a"), "\(result)") // compute(10)
        #expect(out.contains("rip 0x100008 <compute>"), "\(result)")
        #expect(out.contains("vcpu0 at 0x10000b <compute+0x3>"), "\(result)")
        #expect(out.contains("2  breakpoint       0x10003f <report>"), "\(result)")
        #expect(out.contains("vcpu0 hit breakpoint 2 at 0x10003f <report>"), "\(result)")
        // The debugger changed report()'s argument: the guest prints it and fails its own check.
        #expect(out.contains("debugme: sum=5\n"), "\(result)")
        #expect(out.contains("guest ended: debug exit 0x1 (status 3)"), "\(result)")
        #expect(result.status == 3, "\(result)")
    }

    @Test func exitBreakpointsAndStepsShowDecodedExits() throws {
        requireGuests("debugme.elf")
        let commands = try script("""
            break-exit io 0x3f8
            continue
            step
            delete 1
            break-exit io 0xf4
            continue
            xp/1g 0x100120
            continue
            """)
        let result = try swiftvmm(["debug", Harness.guest("debugme.elf"), "--script", commands])
        let out = result.stdout
        #expect(out.contains("hit exit breakpoint 1: io out port=0x3f8 size=1 data=0x64"), "\(result)")
        #expect(out.contains("vcpu0 exit: io out port=0x3f8 size=1 data=0x65"), "\(result)")
        // Writes stop before the device acts, so the debug-exit write is seen before the VM ends,
        // and `result` (0x100120) already holds the sum.
        #expect(out.contains("hit exit breakpoint 2: io out port=0xf4 size=1 data=0x0"), "\(result)")
        #expect(out.contains("0x100120: 0x0000000000000058"), "\(result)")
        #expect(out.contains("guest ended: debug exit 0x0 (status 1)"), "\(result)")
        #expect(result.status == 1, "\(result)")
    }

    @Test func badCommandsFromAPipeGetOneLineErrors() throws {
        requireGuests("debugme.elf")
        let input = """
            frobnicate
            x/4q 0x1000
            break no_such_symbol
            xp/4g 0x7ffffffff000
            x/1g 0xdead00000000
            vcpu 7
            stepi 0
            set xyz 1
            continue
            quit

            """
        let result = try swiftvmm(["debug", Harness.guest("debugme.elf")], input: input, waitFor: "(swiftvmm)")
        let errors = result.stdout.split(separator: "\n").filter { $0.contains("error: ") }
        #expect(errors.count == 8, "\(result)")
        #expect(result.stdout.contains("error: unknown command 'frobnicate'"), "\(result)")
        #expect(result.stdout.contains("error: no symbol 'no_such_symbol'"), "\(result)")
        #expect(result.stdout.contains("is not RAM"), "\(result)")
        #expect(result.stdout.contains("is not mapped"), "\(result)")
        #expect(result.stdout.contains("error: no vcpu 7"), "\(result)")
        #expect(result.stdout.contains("debugme: sum=88"), "\(result)")
        #expect(result.status == 1, "\(result)")
    }

    @Test func elf32MultibootKernelsHaveSymbolsToo() throws {
        requireGuests("mbcheck.elf")
        let result = try swiftvmm(["debug", Harness.guest("mbcheck.elf")], input: "break fw_cfg_read\ncontinue\nregs\nquit\n",
                                  waitFor: "(swiftvmm)")
        #expect(result.stdout.contains("vcpu0 stopped at 0x10000c <_start>"), "\(result)")
        #expect(result.stdout.contains("hit breakpoint 1 at 0x"), "\(result)")
        #expect(result.stdout.contains("<fw_cfg_read>"), "\(result)")
        #expect(result.status == 72, "\(result)")
    }

    @Test func quitStopsARunningGuest() throws {
        requireGuests("debugme.elf")
        let result = try swiftvmm(["debug", Harness.guest("debugme.elf")], input: "quit\n", waitFor: "(swiftvmm)")
        #expect(result.status == 72, "\(result)")
        #expect(!result.stdout.contains("debugme: sum"), "\(result)")
    }

    @Test func sigintInterruptsARunningGuestAndTwoVCPUsStopTogether() throws {
        requireGuests("busy.elf")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["debug", Harness.guest("busy.elf"), "--cpus", "2", "--cmdline", "iterations=100000000000"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        input.fileHandleForWriting.write(Data("continue\n".utf8))
        usleep(1_000_000)
        process.interrupt() // SIGINT: stop the guest, keep the debugger
        usleep(300_000)
        input.fileHandleForWriting.write(Data("sregs\nvcpu 1\nregs\nquit\n".utf8))
        for _ in 0..<1000 where process.isRunning { usleep(10_000) }
        #expect(!process.isRunning, "the debugger did not quit")
        let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        // Stopped in main, at CPL 3, both vCPUs parked; quit then stops the VM.
        #expect(out.contains("vcpu0 stopped at 0x"), "\(out)")
        #expect(out.contains("cs  selector=0x23"), "\(out)")
        #expect(out.contains("vcpu1 at 0x"), "\(out)")
        if !process.isRunning { #expect(process.terminationStatus == 72, "\(out)") }
    }

    @Test func stockGDBAttachesBreaksStepsAndDetaches() throws {
        requireGuests("debugme.elf")
        let gdb = ["/usr/bin/gdb", "/usr/local/bin/gdb"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let gdb else {
            Issue.record("gdb is not installed (.ci/run installs Debian's gdb)")
            return
        }
        let socket = Harness.temporaryPath("gdb.sock")
        let vm = Process()
        vm.executableURL = URL(fileURLWithPath: Harness.binary)
        vm.arguments = ["run", Harness.guest("debugme.elf"), "--gdb", "unix:" + socket]
        let vmOut = Pipe()
        vm.standardOutput = vmOut
        vm.standardError = FileHandle.nullDevice
        try vm.run()
        defer { if vm.isRunning { vm.terminate() } }
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: socket) { usleep(10_000) }
        let commands = try script("""
            set pagination off
            set confirm off
            target remote \(socket)
            info threads
            break compute
            continue
            info registers rip rdi
            x/4gx $rsp
            stepi
            print $pc
            break report
            continue
            if $rdi == 88
              echo RESULT-OK\\n
            else
              echo RESULT-BAD\\n
            end
            delete
            detach
            """)
        let session = try runProgram(gdb, ["-batch", "-nx", "-x", commands, Harness.guest("debugme.elf")])
        let out = session.stdout
        #expect(out.contains("Thread 1"), "\(session)")
        #expect(out.contains("Breakpoint 1, compute (n=10)"), "\(session)")
        #expect(out.contains("rdi            0xa"), "\(session)")
        #expect(out.contains("0x7fff0:\t0x00000000001000ee"), "\(session)") // compute's return address
        #expect(out.contains("<compute+3>"), "\(session)")
        #expect(out.contains("Breakpoint 2, report (sum=88)"), "\(session)")
        #expect(out.contains("RESULT-OK"), "\(session)")
        #expect(out.contains("detached"), "\(session)")
        for _ in 0..<1000 where vm.isRunning { usleep(10_000) }
        #expect(!vm.isRunning, "the guest did not finish after gdb detached")
        if !vm.isRunning {
            #expect(vm.terminationStatus == 1)
            let printed = String(decoding: vmOut.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(printed.contains("debugme: sum=88"), "\(printed)")
        }
    }
}
