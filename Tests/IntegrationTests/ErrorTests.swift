@testable import Boot
import Foundation
import Glibc
import VMM
import Testing

/// Bad input gets one line on stderr and a documented status; none of these may crash or hang.
@Suite struct CommandLineErrorTests {
    func expectOneLineError(_ result: RunResult, status: Int32, containing text: String,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status == status, "\(result)", sourceLocation: sourceLocation)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "one line expected: \(result)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(text), "\(result)", sourceLocation: sourceLocation)
    }

    func writeFile(_ name: String, _ bytes: [UInt8]) -> String {
        let path = Harness.temporaryPath(name)
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    @Test func missingImage() throws {
        expectOneLineError(try swiftvmm(["run", "/nonexistent/guest.bin"]), status: 66,
                           containing: "cannot read image /nonexistent/guest.bin: No such file or directory")
    }

    @Test func directoryAsImage() throws {
        expectOneLineError(try swiftvmm(["run", NSTemporaryDirectory()]), status: 66, containing: "is a directory")
    }

    @Test func devicesAndFIFOsAreNotImages() throws {
        // /dev/zero used to be read until 64 GiB; a FIFO hung in open() waiting for a writer.
        expectOneLineError(try swiftvmm(["run", "/dev/zero"], timeout: 20), status: 66, containing: "is not a regular file")
        let fifo = Harness.temporaryPath("image.fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        expectOneLineError(try swiftvmm(["run", fifo], timeout: 20), status: 66, containing: "is not a regular file")
    }

    @Test func outputPathsThatCannotBeWrittenAreUsageErrors() throws {
        requireGuests("hello.elf")
        expectOneLineError(try swiftvmm(["run", Harness.guest("hello.elf"), "--serial", "file:/nonexistent/dir/out"]),
                           status: 64, containing: "cannot open serial output /nonexistent/dir/out")
        expectOneLineError(try swiftvmm(["run", Harness.guest("hello.elf"), "--trace-exits", "--trace-file", "/nonexistent/t"]),
                           status: 64, containing: "cannot open trace file /nonexistent/t")
    }

    @Test func debugExitStatusesThatLookLikeSignalsSayNothing() throws {
        requireGuests("hello.elf")
        let result = try swiftvmm(["run", Harness.guest("hello.elf"), "--cmdline", "exit=71"]) // V = 0x47: 143
        #expect(result.status == 143 && result.stderr.isEmpty, "\(result)")
    }

    @Test func lifecycleLoggingAtInfo() throws {
        requireGuests("hello.elf")
        let result = try swiftvmm(["run", Harness.guest("hello.elf"), "--log-level", "info"])
        #expect(result.status == 1, "\(result)")
        for line in ["info swiftvmm: [VMM] VM built: 1 vCPU(s), 128 MiB RAM", "vCPU thread(s) started", "run ended after"] {
            #expect(result.stderr.contains(line), "\(line): \(result)")
        }
    }

    @Test func parseErrorsPointAtTheirSubcommandsHelp() throws {
        expectOneLineError(try swiftvmm(["host", "x.json", "--duration", "nan"]), status: 64, containing: "see 'swiftvmm host --help'")
        expectOneLineError(try swiftvmm(["--bogus"]), status: 64, containing: "see 'swiftvmm --help'")
        expectOneLineError(try swiftvmm(["control"]), status: 64, containing: "see 'swiftvmm control --help'")
        let version = try swiftvmm(["--version"])
        #expect(version.status == 0 && version.stdout == VMM.version + "\n", "\(version)")
    }

    @Test func emptyImage() throws {
        let path = writeFile("empty.bin", [])
        defer { try? FileManager.default.removeItem(atPath: path) }
        expectOneLineError(try swiftvmm(["run", path]), status: 66, containing: "image is empty")
    }

    @Test func badSizesAndCounts() throws {
        expectOneLineError(try swiftvmm(["run", "x.bin", "--memory", "0"]), status: 64, containing: "--memory")
        expectOneLineError(try swiftvmm(["run", "x.bin", "--memory", "1X"]), status: 64, containing: "--memory")
        expectOneLineError(try swiftvmm(["run", "x.bin", "--cpus", "0"]), status: 64, containing: "--cpus")
        expectOneLineError(try swiftvmm(["run", "x.bin", "--entry", "protected"]), status: 64, containing: "--entry")
        expectOneLineError(try swiftvmm(["run", "x.bin", "--serial", "tcp:1"]), status: 64, containing: "--serial")
        expectOneLineError(try swiftvmm(["run", "x.bin", "--memory", "1M"]), status: 64, containing: "memory size 1M is out of range")
        expectOneLineError(try swiftvmm(["run", "x.bin", "--cpus", "99"]), status: 64, containing: "cpu count 99 is out of range")
        let result = try swiftvmm(["run", "--bogus"])
        #expect(result.status == 64 && !result.stderr.isEmpty, "\(result)")
    }

    @Test func helpDescribesTheOptions() throws {
        let result = try swiftvmm(["run", "--help"])
        #expect(result.status == 0, "\(result)")
        for option in ["--memory", "--cpus", "--entry", "--load-address", "--serial", "--stats", "--log-level", "--kvm-device", "--hugepages", "--cmdline"] {
            #expect(result.stdout.contains(option), "\(option) in help")
        }
    }

    @Test func kvmDeviceMissingOrNotKVM() throws {
        requireGuests("hello.elf")
        expectOneLineError(try swiftvmm(["run", Harness.guest("hello.elf"), "--kvm-device", "/nonexistent/kvm"]),
                           status: 68, containing: "/nonexistent/kvm does not exist: KVM is not available")
        expectOneLineError(try swiftvmm(["run", Harness.guest("hello.elf"), "--kvm-device", "/dev/null"]),
                           status: 68, containing: "/dev/null is not a KVM device")
    }

    @Test(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
                   "needs root to drop to an unprivileged user with setpriv"))
    func kvmDeviceWithoutPermission() throws {
        requireGuests("hello.elf")
        // A private copy of the device node, readable by root only: an unprivileged user is refused.
        let node = Harness.temporaryPath("kvm-node")
        defer { try? FileManager.default.removeItem(atPath: node) }
        var info = stat()
        #expect(stat("/dev/kvm", &info) == 0)
        #expect(mknod(node, S_IFCHR | 0o600, info.st_rdev) == 0)
        let copy = Harness.unprivilegedCopy
        let result = try runProgram(Harness.asNobody[0], Harness.asNobody.dropFirst() + [copy.binary, "run", copy.hello, "--kvm-device", node])
        expectOneLineError(result, status: 68, containing: "no permission to open \(node)")
    }
}

@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct ImageErrorTests {
    func expectImageError(_ bytes: [UInt8], name: String, arguments: [String] = [], containing text: String,
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
        let path = Harness.temporaryPath(name)
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try swiftvmm(["run", path] + arguments)
        #expect(result.status == 66, "\(result)", sourceLocation: sourceLocation)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(text), "\(result)", sourceLocation: sourceLocation)
    }

    func helloELF() throws -> [UInt8] {
        requireGuests("hello.elf")
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: Harness.guest("hello.elf"))))
    }

    @Test func elfWithBadMagic() throws {
        var elf = try helloELF()
        elf[1] = 0x46
        try expectImageError(elf, name: "bad.elf", containing: "not an ELF file (bad magic)")
    }

    @Test func elfOfTheWrongClassOrMachine() throws {
        var elf = try helloELF()
        elf[4] = 1
        try expectImageError(elf, name: "class.elf", containing: "ELF class 1 is not supported")
        elf = try helloELF()
        elf[18] = 3
        elf[19] = 0
        try expectImageError(elf, name: "machine.elf", containing: "ELF machine 3 is not supported")
    }

    @Test func elfSegmentOutsideRAM() throws {
        // hello.elf is linked at 1 MiB with about 650 KiB of .bss: it does not fit a 1.5 MiB... so
        // give it 2 MiB and move its first segment's physical address to 3 MiB instead.
        var elf = try helloELF()
        let phoff = Int(elf[32]) | Int(elf[33]) << 8
        elf[phoff + 24 + 2] = 0x30 // p_paddr = 0x300000
        try expectImageError(elf, name: "outside.elf", arguments: ["--memory", "2M"], containing: "lies outside guest RAM")
    }

    @Test func imageLargerThanGuestMemory() throws {
        try expectImageError([UInt8](repeating: 0x90, count: 3 << 20), name: "big.bin", arguments: ["--memory", "2M"],
                             containing: "is larger than the")
    }

    @Test func flatImageOverBootStructures() throws {
        try expectImageError([0xF4], name: "low.bin", arguments: ["--load-address", "0x50000"], containing: "overlaps the boot-info block")
    }
}

@Suite(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
                "needs root to drop to an unprivileged user with setpriv"))
struct UnprivilegedErrorTests {
    @Test func unreadableImage() throws {
        let path = Harness.temporaryPath("secret.bin")
        FileManager.default.createFile(atPath: path, contents: Data([0xF4]), attributes: [.posixPermissions: 0o600])
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try runProgram(Harness.asNobody[0], Harness.asNobody.dropFirst() + [Harness.unprivilegedCopy.binary, "run", path])
        #expect(result.status == 66, "\(result)")
        #expect(result.stderr == "swiftvmm: cannot read image \(path): Permission denied\n", "\(result)")
    }
}
