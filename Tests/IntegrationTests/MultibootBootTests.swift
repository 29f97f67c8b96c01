@testable import Boot
import Foundation
import Testing

/// Multiboot kernels as QEMU's -kernel boots them, and the QEMU devices they expect.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct MultibootBootTests {
    @Test func checkerSeesTheEntryStateInfoFwCfgModuleAndTestDevices() throws {
        requireGuests("mbcheck.elf")
        let module = Harness.temporaryPath("module")
        try "swiftvmm module \(getpid())\nsecond line\n".write(toFile: module, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: module) }
        let kernel = Harness.guest("mbcheck.elf")
        let result = try swiftvmm(["run", kernel, "--memory", "256M", "--cpus", "2", "--module", module, "--test-devices",
                                   "--", "testdev=1", "alpha", "exitwidth=4"])
        let out = result.stdout
        #expect(result.status == 1, "\(result)")
        #expect(out.contains("mbcheck: 0 failure(s)"), "\(result)")
        #expect(out.contains("mbcheck: eax=0x2badb002 "), "\(result)")
        #expect(out.contains("eflags=0x2 cr0=0x11 cs=0x8"), "\(result)")
        #expect(out.contains("mbcheck: fw_cfg signature=QEMU ram=256 MiB cpus=2 max_ram=0 unknown=0x0"), "\(result)")
        #expect(out.contains("mem_lower=639 mem_upper=\((256 - 1) * 1024)"), "\(result)")
        #expect(out.contains("mbcheck: cmdline=[\(kernel) testdev=1 alpha exitwidth=4]"), "\(result)")
        #expect(out.contains("mbcheck: loader=[swiftvmm]"), "\(result)")
        #expect(out.contains("mbcheck: mmap base=0x0_100000 length=0x0_ff00000 type=1"), "\(result)")
        #expect(out.contains("mods_count=1"), "\(result)")
        let size = try Data(contentsOf: URL(fileURLWithPath: module)).count
        #expect(out.contains("size=\(size) string=[\(module)] first_line=[swiftvmm module \(getpid())]"), "\(result)")
        #expect(out.contains("mbcheck: testdev irq3 -> vector 0x23 x1, irq10 -> vector 0x2a x1"), "\(result)")
    }

    @Test func memoryAboveTheHoleAndThePowerOffPort() throws {
        requireGuests("mbcheck.elf")
        let result = try swiftvmm(["run", Harness.guest("mbcheck.elf"), "--memory", "5G", "--", "shutdown=1"])
        #expect(result.status == 0, "\(result)") // powered off through 0x8900
        #expect(result.stdout.contains("mbcheck: 0 failure(s)"), "\(result)")
        #expect(result.stdout.contains("mbcheck: mmap base=0x1_0 length=0x0_80000000 type=1"), "\(result)")
        #expect(result.stdout.contains("mem_upper=\((3 * 1024 - 1) * 1024)"), "\(result)")
    }

    @Test func guestResetsEndTheRunOrRestartIt() throws {
        requireGuests("mbcheck.elf")
        for way in ["kbd", "cf9"] {
            let result = try swiftvmm(["run", Harness.guest("mbcheck.elf"), "--", "reset=\(way)"])
            #expect(result.status == 0 && result.stdout.contains("mbcheck: 0 failure(s)"), "\(way): \(result)")
        }
        // With --on-reboot restart the guest boots again after every reset, until SIGTERM.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["run", Harness.guest("mbcheck.elf"), "--on-reboot", "restart", "--", "reset=kbd"]
        let outPath = Harness.temporaryPath("restarts.out")
        FileManager.default.createFile(atPath: outPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Waits for the boots themselves, not a fixed time: on a busy machine each takes longer.
        func boots() -> Int {
            ((try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "").components(separatedBy: "mbcheck: 0 failure(s)").count - 1
        }
        let deadline = Date().addingTimeInterval(60)
        while boots() < 4 && Date() < deadline && process.isRunning { usleep(20_000) }
        // Each boot is a new machine; the finished ones must be freed (they once kept their KVM
        // VM and vCPU descriptors, two per boot, until the process ran out). The first machine and
        // the running one may be open.
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/fd")) ?? []
        let vms = descriptors.filter {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(process.processIdentifier)/fd/\($0)")) == "anon_inode:kvm-vm"
        }
        #expect(!descriptors.isEmpty && vms.count <= 2, "\(descriptors.count) descriptors, \(vms.count) KVM VMs open")
        process.terminate()
        process.waitUntilExit()
        #expect(boots() >= 3, "\(boots()) boots")
        #expect(process.terminationStatus == 128 + SIGTERM)
    }

    @Test(arguments: [1, 2, 4])
    func debugExitAtEveryWidth(width: Int) throws {
        requireGuests("mbcheck.elf")
        let result = try swiftvmm(["run", Harness.guest("mbcheck.elf"), "--cmdline", "exitwidth=\(width)"])
        #expect(result.status == 1, "\(result)")
    }

    @Test(arguments: [2, 4])
    func apsStartThroughINITSIPIWithATrampolineAtZero(cpus: Int) throws {
        requireGuests("mbsmp.elf")
        let result = try swiftvmm(["run", Harness.guest("mbsmp.elf"), "--cpus", "\(cpus)"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("mbsmp: \(cpus) of \(cpus) vCPUs up (magic 0x2badb002)"), "\(result)")
    }

    @Test func elf64AndAOutKludgeKernels() throws {
        requireGuests("mb64.elf", "mbkludge.bin")
        let elf64 = try swiftvmm(["run", Harness.guest("mb64.elf"), "--", "sixty-four"])
        #expect(elf64.status == 1, "\(elf64)")
        #expect(elf64.stdout.contains("mb64: cmdline=\(Harness.guest("mb64.elf")) sixty-four"), "\(elf64)")
        let kludge = try swiftvmm(["run", Harness.guest("mbkludge.bin")])
        #expect(kludge.status == 1, "\(kludge)")
        #expect(kludge.stdout.contains("mbkludge: loaded through the address fields"), "\(kludge)")
    }

    @Test func malformedKernelsGetOneLineErrors() throws {
        requireGuests("mbkludge.bin")
        let good = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Harness.guest("mbkludge.bin"))))
        func patched(_ name: String, _ change: (inout [UInt8]) -> Void) throws -> String {
            var bytes = good
            change(&bytes)
            let path = Harness.temporaryPath(name)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            return path
        }
        let cases: [(String, (inout [UInt8]) -> Void, String)] = [
            ("badsum", { $0[8] ^= 0xFF }, "has a bad checksum"),
            ("late", { $0 = [UInt8](repeating: 0, count: 8192) + $0 }, "lies past the first 8 KiB"),
            // bss_end_addr far beyond 2 MiB of RAM.
            ("outside", { $0[24...27] = [0, 0, 0, 0xF0] }, "lies outside guest RAM"),
            ("video", { bytes in
                bytes[4] = 0x04 // flags 0x10004: a video mode, checksum adjusted
                let sum = UInt32(0x1BAD_B002) &+ 0x1_0004
                let checksum = 0 &- sum
                for i in 0..<4 { bytes[8 + i] = UInt8(truncatingIfNeeded: checksum >> (8 * UInt32(i))) }
            }, "requires a video mode"),
        ]
        for (name, change, message) in cases {
            let path = try patched(name, change)
            defer { try? FileManager.default.removeItem(atPath: path) }
            let result = try swiftvmm(["run", path, "--memory", "2M"])
            #expect(result.status == 66, "\(name): \(result)")
            #expect(result.stderr.contains(message) && result.stderr.split(separator: "\n").count == 1, "\(name): \(result)")
        }
        let notMultiboot = try swiftvmm(["run", Harness.guest("hello.elf"), "--module", Harness.guest("hello.bin")])
        #expect(notMultiboot.status == 64 && notMultiboot.stderr.contains("--module needs a multiboot kernel"), "\(notMultiboot)")
        let missing = try swiftvmm(["run", Harness.guest("mbkludge.bin"), "--module", "/nonexistent/module"])
        #expect(missing.status == 66 && missing.stderr.contains("/nonexistent/module"), "\(missing)")
    }
}
