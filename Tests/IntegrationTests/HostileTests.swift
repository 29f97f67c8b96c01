@testable import Control
@testable import Boot
import Host
import Foundation
import Glibc
import Testing
import VMM

/// Hostile guests and clients, one per class of defect: each of these crashed, hung or misbehaved
/// before the fix it names.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct HostileGuestTests {
    @Test func readingRTCRegisterCOnEveryVCPUDoesNotCrashTheVMM() throws {
        // Clock readings taken on either side of the RTC's lock arrived out of order and an
        // unsigned subtraction trapped (SIGILL, status 132) within a second.
        requireGuests("hostile.elf")
        let result = try swiftvmm(["run", Harness.guest("hostile.elf"), "--cpus", "2", "--", "mode=rtc-storm", "reads=20000"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("hostile: rtc-storm done: 2 vCPUs"), "\(result)")
    }

    @Test func statisticsKeepABoundedTableOfMMIOAddresses() throws {
        // --stats kept a counter per address a guest touched, without bound.
        requireGuests("hostile.elf")
        let result = try swiftvmm(["run", Harness.guest("hostile.elf"), "--stats", "--", "mode=mmio-walk", "count=3000"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("hostile: mmio-walk done: 3000 addresses"), "\(result)")
        #expect(result.stderr.contains("other=\(3000 - 1024)"), "\(result)")
    }

    @Test func aReaderThatNeverReadsCannotHoldTheVMMPastSIGTERM() throws {
        // The UART wrote to stdout under its lock: a full pipe stalled the vCPU in write(2), which
        // retried EINTR after every kick, so SIGTERM never ended the run.
        requireGuests("hostile.elf")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["run", Harness.guest("hostile.elf"), "--", "mode=flood"]
        let unread = Pipe() // nobody reads it
        // One page of pipe: the guest (about 20 KB/s of output on PVM, one exit per byte) fills
        // it within a quarter of a second. F_SETPIPE_SZ is 1031.
        #expect(fcntl(unread.fileHandleForWriting.fileDescriptor, 1031, 4096) >= 4096)
        process.standardOutput = unread
        let errors = Harness.temporaryPath("flood.err")
        FileManager.default.createFile(atPath: errors, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errors) }
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errors))
        process.standardInput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
        usleep(1_500_000) // the guest prints far more than a pipe holds in this time
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!process.isRunning, "the VMM did not end within 10 s of SIGTERM")
        if !process.isRunning { #expect(process.terminationStatus == 143) }
        let stderr = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
        #expect(stderr.contains("swiftvmm: stopped by signal 15 (Terminated)"), "\(stderr)")
        #expect(stderr.contains("bytes dropped (the reader did not keep up)"), "\(stderr)")
        _ = unread // kept open, unread, until here
    }

    @Test func kernelModeLdmxcsrAndStmxcsrReallyMoveMXCSR() throws {
        // The PVM compatibility layer stored KVM_GET_FPU's MXCSR (0 on PVM) and set it through
        // KVM_SET_FPU, which changed nothing; both now go through the XSAVE area.
        requireGuests("kmxcsr.elf")
        let result = try swiftvmm(["run", Harness.guest("kmxcsr.elf"), "--stats"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("mxcsr loaded 0x00007f80 stored 0x00007f80, default again 0x00001f80"), "\(result)")
    }
}

@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct HostileClientTests {
    /// Starts cpuburn.elf (it runs until stopped, mostly halted at duty=20) serving the API.
    func startVM(socket: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["run", Harness.guest("cpuburn.elf"), "--api-sock", socket, "--serial", "none", "--", "duty=20"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Ready once it answers (a stale socket file may be there before the VMM listens).
        for _ in 0..<500 {
            if let reply = try? ControlClient.send("stats", to: socket, timeoutSeconds: 2), reply.error == nil { break }
            usleep(20_000)
        }
        return process
    }

    /// Waits at most `seconds` for `process` to end; true when it did.
    func ended(_ process: Process, within seconds: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return !process.isRunning
    }

    @Test func aSilentClientBlocksNoOtherAndPipelinedPauseResumeAnswers() throws {
        requireGuests("cpuburn.elf")
        let socket = Harness.temporaryPath("hostile.sock")
        let vm = try startVM(socket: socket)
        defer { if vm.isRunning { vm.terminate(); vm.waitUntilExit() } }
        // A client that connects and says nothing, one that sends half a request head, and one
        // that sends a request and never reads: none delays the next client.
        let silent = try SocketEndpoint.unix(path: socket).connect(for: "test")
        defer { close(silent) }
        let half = try SocketEndpoint.unix(path: socket).connect(for: "test")
        defer { close(half) }
        _ = "GET /swiftvmm/vcpus HTTP/1.1\r\nHost: x".withCString { send(half, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        let started = Clocks.monotonicSeconds()
        let reply = try ControlClient.send("stats", to: socket, timeoutSeconds: 5)
        #expect(reply.text.contains("vcpu0: exits="), "\(reply)")
        #expect(Clocks.monotonicSeconds() - started < 5)
        // Pipelined resume/pause on one connection: a pause asked while vCPUs were waking from
        // the last one lost its kick and never returned.
        let pipelined = FileDescriptor(rawValue: try SocketEndpoint.unix(path: socket).connect(for: "test"))
        defer { pipelined.close() }
        var requests = ""
        for state in Array(repeating: ["Paused", "Resumed"], count: 21).flatMap({ $0 }) {
            requests += RawHTTPClient.format("PATCH", "/vm", #"{"state": "\#(state)"}"#)
        }
        requests += RawHTTPClient.format("GET", "/", nil)
        try pipelined.writeAll(Array(requests.utf8), socket: true)
        let (statuses, text) = RawHTTPClient.pipelinedReplies(pipelined, count: 43, seconds: 30)
        #expect(statuses.count == 43 && statuses.dropLast().allSatisfy { $0 == 204 } && statuses.last == 200, "\(statuses)")
        #expect(text.hasSuffix(#""state":"Running","vmm_version":"\#(VMM.version)"}"#), "\(text.suffix(200))")
        _ = try ControlClient.send("stop", to: socket)
        #expect(ended(vm) && vm.terminationStatus == 72)
    }

    @Test func theAPISocketIsTakenFromNoOtherServer() throws {
        requireGuests("cpuburn.elf")
        // Owner-only whatever the umask, and a second VM cannot take a served socket over.
        let socket = Harness.temporaryPath("private.sock")
        let savedMask = umask(0)
        let vm = try startVM(socket: socket)
        umask(savedMask)
        defer { if vm.isRunning { vm.terminate(); vm.waitUntilExit() } }
        var info = stat()
        #expect(stat(socket, &info) == 0 && info.st_mode & 0o777 == 0o600, "mode \(String(info.st_mode & 0o777, radix: 8))")
        let second = try swiftvmm(["run", Harness.guest("cpuburn.elf"), "--api-sock", socket, "--serial", "none"])
        #expect(second.status == 70 && second.stderr.contains("is served by another process"), "\(second)")
        let reply = try ControlClient.send("stats", to: socket)
        #expect(reply.error == nil, "the first VM still answers")
        _ = try ControlClient.send("stop", to: socket)
        #expect(ended(vm))
        #expect(!FileManager.default.fileExists(atPath: socket), "removed on exit")

        // A socket left by a VMM that died is taken over.
        let stale = Harness.temporaryPath("stale.sock")
        let fd = try SocketEndpoint.unix(path: stale).listen(for: "test")
        close(fd) // the file stays, nobody listens
        let vm2 = try startVM(socket: stale)
        defer { if vm2.isRunning { vm2.terminate(); vm2.waitUntilExit() } }
        let staleReply = try? ControlClient.send("stats", to: stale)
        #expect(staleReply != nil && staleReply?.error == nil)
        _ = try? ControlClient.send("stop", to: stale)
        #expect(ended(vm2))
    }
}
