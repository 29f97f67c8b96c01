@testable import Boot
import Foundation
import Testing

/// Where the built VMM and guests are, and whether KVM can be used here.
enum Harness {
    static let environment = ProcessInfo.processInfo.environment
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let binary = environment["SWIFTVMM_BIN"] ?? packageRoot + "/.build/debug/swiftvmm"
    static let guests = environment["SWIFTVMM_GUESTS"] ?? packageRoot + "/out/guests"
    static let inCI = environment["CI"] == "true"

    /// True when /dev/kvm can be opened for reading and writing.
    static var kvmUsable: Bool { access("/dev/kvm", R_OK | W_OK) == 0 }

    /// Tests that boot guests run where KVM is usable, and always in CI, where a missing
    /// /dev/kvm must fail them loudly rather than skip them.
    static var bootsGuests: Bool { kvmUsable || inCI }

    static func guest(_ name: String) -> String { guests + "/" + name }

    /// The VMM and the hello guest copied into a directory everyone may enter, for the tests that
    /// run the VMM as an unprivileged user: the clone itself may live where only its owner can go
    /// (root's home, a mktemp directory).
    static let unprivilegedCopy: (binary: String, hello: String) = {
        let directory = "/tmp/swiftvmm-public-\(getpid())"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o755)
        let copies = (binary: directory + "/swiftvmm", hello: directory + "/hello.elf")
        for (source, copy) in [(binary, copies.binary), (guest("hello.elf"), copies.hello)] {
            try? FileManager.default.removeItem(atPath: copy)
            try? FileManager.default.copyItem(atPath: source, toPath: copy)
            chmod(copy, 0o755)
        }
        return copies
    }()

    /// setpriv's arguments that run a program as nobody.
    static let asNobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

    static func temporaryPath(_ name: String) -> String {
        NSTemporaryDirectory() + "swiftvmm-test-\(getpid())-\(UUID().uuidString.prefix(8))-\(name)"
    }
}

/// What one swiftvmm process did.
struct RunResult: CustomStringConvertible {
    let status: Int32
    let stdout: String
    let stderr: String
    var description: String { "status \(status)\n--- stdout\n\(stdout)\n--- stderr\n\(stderr)" }
}

/// Runs the swiftvmm binary with `arguments`, killing it after `timeout` seconds (a hang is a
/// failure, never a stuck test run). `input` is written to stdin once `waitFor` appears on stdout.
func swiftvmm(_ arguments: [String], input: String? = nil, waitFor: String? = nil, timeout: Double = 60) throws -> RunResult {
    try runProgram(Harness.binary, arguments, input: input, waitFor: waitFor, timeout: timeout)
}

/// Runs any program as `swiftvmm` does (output captured, killed after `timeout` seconds).
func runProgram(_ executable: String, _ arguments: [String], input: String? = nil, waitFor: String? = nil,
                timeout: Double = 60) throws -> RunResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let outPath = Harness.temporaryPath("out"), errPath = Harness.temporaryPath("err")
    FileManager.default.createFile(atPath: outPath, contents: nil)
    FileManager.default.createFile(atPath: errPath, contents: nil)
    defer {
        try? FileManager.default.removeItem(atPath: outPath)
        try? FileManager.default.removeItem(atPath: errPath)
    }
    process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
    let stdin = Pipe()
    process.standardInput = input == nil ? FileHandle.nullDevice : stdin
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    var inputSent = input == nil
    while process.isRunning && Date() < deadline {
        if !inputSent, let input {
            let soFar = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
            if waitFor.map({ soFar.contains($0) }) ?? true {
                stdin.fileHandleForWriting.write(Data(input.utf8))
                inputSent = true
            }
        }
        usleep(2000)
    }
    if process.isRunning {
        process.terminate()
        usleep(200_000)
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        Issue.record("\(executable) \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
    }
    process.waitUntilExit()
    let stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    return RunResult(status: process.terminationStatus, stdout: stdout, stderr: stderr)
}

/// Fails the test (and says what to do) when the guest images were not built.
func requireGuests(_ names: String...) {
    for name in names where !FileManager.default.fileExists(atPath: Harness.guest(name)) {
        Issue.record("guest \(Harness.guest(name)) is missing: run `make guests` (make test does it)")
    }
    if !Harness.kvmUsable {
        Issue.record("/dev/kvm is not usable on this machine, and CI=true requires it")
    }
}
