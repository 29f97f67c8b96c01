@testable import Boot
import Foundation
import Testing

@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct GuestBootTests {
    @Test func helloPrintsFromRing3AndExitsThroughTheDebugPort() throws {
        requireGuests("hello.elf")
        let result = try swiftvmm(["run", Harness.guest("hello.elf"), "--cmdline", "greeting test", "--memory", "64M"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("Hello from a swiftvmm guest! cpl=3 ram=64 MiB cpus=1"), "\(result)")
        #expect(result.stdout.contains("cmdline: greeting test"), "\(result)")
        #expect(result.stderr.isEmpty, "\(result)")
    }

    @Test func exitValueFromTheGuestBecomesTheStatus() throws {
        requireGuests("hello.bin")
        // The flat binary of the same guest, loaded at the default address; V = 0x21 -> 0x43.
        let result = try swiftvmm(["run", Harness.guest("hello.bin"), "--cmdline", "exit=0x21"])
        #expect(result.status == 0x43, "\(result)")
        #expect(result.stdout.contains("Hello from a swiftvmm guest!"), "\(result)")
    }

    @Test(arguments: [("128M", 1), ("3200M", 2), ("5G", 3)])
    func guestChecksItsOwnEnvironment(memory: String, cpus: Int) throws {
        requireGuests("envcheck.elf")
        let result = try swiftvmm(["run", Harness.guest("envcheck.elf"), "--memory", memory, "--cpus", "\(cpus)",
                                   "--cmdline", "mem=\(memory) cpus=\(cpus)"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("envcheck: 0 failure(s)"), "\(result)")
        #expect(!result.stdout.contains("FAIL"), "\(result)")
        #expect(result.stdout.contains("ok   cpuid-vendor: leaf 0x40000000 reads \"swiftvmm\""), "\(result)")
        #expect(result.stdout.contains("ok   rep-outsb"), "\(result)")
        if memory != "128M" {
            #expect(result.stdout.contains("last page of region 0x100000000-"), "RAM above 4 GiB was checked: \(result)")
        }
    }

    @Test func envcheckNoticesAWrongMemorySize() throws {
        requireGuests("envcheck.elf")
        // The guest is told to expect 256M but gets 128M: its check must fail (V = 0x41 -> 0x83).
        let result = try swiftvmm(["run", Harness.guest("envcheck.elf"), "--memory", "128M", "--cmdline", "mem=256M"])
        #expect(result.status == 0x83, "\(result)")
        #expect(result.stdout.contains("FAIL ram-size"), "\(result)")
    }

    @Test func realModeFlatBinaryHalts() throws {
        requireGuests("realmode.bin")
        // HLT ends a vCPU only without interrupt controllers (with them it waits for an interrupt);
        // --entry real goes without them unless --irqchip kernel says otherwise (it used to hang).
        for extra in [["--irqchip", "none"], []] {
            let result = try swiftvmm(["run", "--entry", "real", Harness.guest("realmode.bin")] + extra, timeout: 20)
            #expect(result.status == 0, "\(extra): \(result)")
            #expect(result.stdout == "Hello from real mode\n", "\(result)")
        }
    }

    @Test func ring3BusyWorkRunsAtCPL3() throws {
        requireGuests("busy.elf")
        let result = try swiftvmm(["run", Harness.guest("busy.elf"), "--cmdline", "iterations=20000000"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("busy: 20000000 iterations at cpl 3"), "\(result)")
    }

    @Test func tripleFaultEndsWithItsCodeAndARegisterDump() throws {
        requireGuests("triplefault.elf")
        let result = try swiftvmm(["run", Harness.guest("triplefault.elf")])
        #expect(result.status == 80, "\(result)")
        #expect(result.stderr.contains("guest stopped: triple fault on vcpu0"), "\(result)")
        for field in ["rip=0x", "rsp=0x", "cr0=0x", "cr3=0x1000", "cr4=0x", "efer=0x500", "cs=0x8@0x0", "gdt=0x500"] {
            #expect(result.stderr.contains(field), "\(field) in \(result)")
        }
    }

    @Test func serialInputReachesTheGuest() throws {
        requireGuests("echo.elf")
        let result = try swiftvmm(["run", Harness.guest("echo.elf"), "--cmdline", "lines=5"],
                                  input: "hello world\nswift\nquit\n", waitFor: "echo: ready")
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("echo: HELLO WORLD\n"), "\(result)")
        #expect(result.stdout.contains("echo: SWIFT\n"), "\(result)")
    }

    @Test func inputPipedBeforeTheGuestIsReadyIsNotLost() throws {
        // The runtime resets the UART's FIFOs while it starts; the first byte used to go with it
        // ("echo: ELLO").
        requireGuests("echo.elf")
        for irq in ["0", "1"] {
            let result = try swiftvmm(["run", Harness.guest("echo.elf"), "--cmdline", "lines=2 irq=\(irq)"],
                                      input: "hello\nworld\n")
            #expect(result.status == 1, "\(result)")
            let lines = result.stdout.split(separator: "\n")
            #expect(lines.count == 3 && lines[1].hasPrefix("echo: HELLO") && lines[2].hasPrefix("echo: WORLD"), "irq=\(irq): \(result)")
        }
    }

    @Test func serialOutputGoesToAFileOrNowhere() throws {
        requireGuests("hello.elf")
        let path = Harness.temporaryPath("serial.log")
        defer { try? FileManager.default.removeItem(atPath: path) }
        var result = try swiftvmm(["run", Harness.guest("hello.elf"), "--serial", "file:" + path])
        #expect(result.status == 1 && result.stdout.isEmpty, "\(result)")
        #expect(try String(contentsOfFile: path, encoding: .utf8).contains("Hello from a swiftvmm guest!"))
        result = try swiftvmm(["run", Harness.guest("hello.elf"), "--serial", "none"])
        #expect(result.status == 1 && result.stdout.isEmpty, "\(result)")
    }

    @Test func statsCountExitsByReasonAndPort() throws {
        requireGuests("envcheck.elf")
        let result = try swiftvmm(["run", Harness.guest("envcheck.elf"), "--stats", "--hugepages", "--cmdline", "mem=128M"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("vcpu0: exits="), "\(result)")
        #expect(result.stderr.contains("by reason: io-in="), "\(result)")
        #expect(result.stderr.contains("mmio-read=2 mmio-write=1"), "\(result)")
        #expect(result.stderr.contains("top ports: 0x3f8="), "\(result)")
        #expect(result.stderr.contains("top mmio: 0xd0000000=2 0xd0001000=1"), "\(result)")
        #expect(result.stderr.contains("unclaimed: reads="), "\(result)")
    }

    @Test func unclaimedAccessLinesAreRateLimited() throws {
        requireGuests("portloop.bin")
        // 200000 unclaimed writes in about two seconds: a handful of lines, then a count.
        let result = try swiftvmm(["run", "--entry", "real", "--irqchip", "none", Harness.guest("portloop.bin"), "--log-level", "notice", "--stats"])
        #expect(result.status == 0, "\(result)")
        let lines = result.stderr.split(separator: "\n").filter { $0.contains("unclaimed port write 0x10") }
        // At most 10 lines in each wall-clock second the run touched (the run lasts longer on a loaded host).
        let runSeconds = result.stderr.split(separator: " ").first { $0.hasPrefix("run_s=") }.flatMap { Double($0.dropFirst(6)) } ?? 0
        #expect(lines.count >= 10 && Double(lines.count) <= 10 * (runSeconds.rounded(.up) + 1), "\(lines.count) lines in \(runSeconds) s")
        #expect(result.stderr.contains("further unclaimed accesses were not logged") || result.stderr.contains("similar lines suppressed"))
        #expect(result.stderr.contains("unclaimed: reads=0 writes=200000"), "\(result)")
    }

    @Test func unclaimedAccessesAreLoggedAtNotice() throws {
        requireGuests("envcheck.elf")
        let result = try swiftvmm(["run", Harness.guest("envcheck.elf"), "--log-level", "notice", "--cmdline", "mem=128M"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("unclaimed mmio write 0xd0000000 size=4 value=0x12345678"), "\(result)")
    }
}
