import Foundation
import Glibc
import Testing

/// What a QEMU-style multiboot test kernel expects of the PC (mbpc.elf): ACPI tables in the BIOS
/// area with a full FADT, the PM timer, S3 suspend and wake, S5, the VMware backdoor, `int imm8`
/// and #UD at CPL 0 (completed by the PVM layer where the host's emulator gives up; native on
/// VT-x/AMD-V), and whose CPUID leaves come first.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct PCFidelityTests {
    static func failures(_ output: String) -> [Substring] { output.split(separator: "\n").filter { $0.hasPrefix("FAIL") } }

    @Test func aMultibootKernelFindsACPIThePMTimerAndGetsIntAndUDRight() throws {
        requireGuests("mbpc.elf")
        let result = try swiftvmm(["run", Harness.guest("mbpc.elf"), "--stats"])
        #expect(result.status == 1, "\(result)")
        #expect(Self.failures(result.stdout).isEmpty, "\(result)")
        for line in ["ok   acpi: RSDP in the BIOS area", "ok   acpi: a full FADT (not hardware-reduced)", "ok   acpi: FACS, 64-byte aligned",
                     "ok   pmtimer: 3.579545 MHz within 2% of the PIT", "ok   int: int $0x40 reached its handler once",
                     "ok   int: int $0x81 (a trap gate) twice, returning to the next instruction",
                     "ok   int: a handler's IRET returns with the flags restored",
                     "ok   ud: movbe eax, eax (register form) raised #UD", "ok   ud: xgetbv with CR4.OSXSAVE clear raised #UD",
                     "ok   backdoor: without --vmware-backdoor the port is unclaimed", "mbpc: 0 failures"] {
            #expect(result.stdout.contains(line), "missing \(line):\n\(result)")
        }
        #expect(result.stdout.contains("cpuid: 0x40000000 max=0x40000000 signature=swiftvmm"), "\(result)")
    }

    @Test func theVMwareBackdoorAnswersWhenAskedFor() throws {
        requireGuests("mbpc.elf")
        let result = try swiftvmm(["run", Harness.guest("mbpc.elf"), "--vmware-backdoor", "--cmdline", "tests=backdoor backdoor=1"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("ok   backdoor: GETVERSION answers version 6 with the magic"), "\(result)")
    }

    @Test func kvmLeavesComeFirstWhenAskedFor() throws {
        requireGuests("mbpc.elf")
        let result = try swiftvmm(["run", Harness.guest("mbpc.elf"), "--cpuid-vendor", "kvm", "--cmdline", "tests=cpuid"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("cpuid: 0x40000000 max=0x40000001 signature=KVMKVMKVM"), "\(result)")
        #expect(result.stdout.contains("cpuid: 0x40000100 max=0x40000100 signature=swiftvmm"), "\(result)")
        let bad = try swiftvmm(["run", Harness.guest("mbpc.elf"), "--cpuid-vendor", "vmware"])
        #expect(bad.status == 64 && bad.stderr.contains("--cpuid-vendor"), "\(bad)")
    }

    @Test func sleepTypeS5PowersOff() throws {
        requireGuests("mbpc.elf")
        let result = try swiftvmm(["run", Harness.guest("mbpc.elf"), "--cmdline", "tests=acpi,s5"])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.contains("s5: powering off") && !result.stdout.contains("still running"), "\(result)")
    }

    @Test func suspendToRAMWakesOnTheRTCAlarmWithMemoryIntact() throws {
        requireGuests("mbpc.elf")
        let result = try swiftvmm(["run", Harness.guest("mbpc.elf"), "--cmdline", "tests=acpi,s3 wake=rtc"], timeout: 60)
        #expect(result.status == 1, "\(result)")
        #expect(Self.failures(result.stdout).isEmpty, "\(result)")
        for line in ["s3: sleeping until the RTC alarm", "s3: resumed at the waking vector", "ok   s3: 1 MiB filled before sleeping reads back unchanged",
                     "ok   s3: WAK_STS set", "ok   s3: RTC_STS set (woken by the RTC alarm)"] {
            #expect(result.stdout.contains(line), "missing \(line):\n\(result)")
        }
    }

    @Test func thePowerButtonThroughTheAPIWakesASleepingGuest() throws {
        requireGuests("mbpc.elf")
        let socket = Harness.temporaryPath("s3.sock"), output = Harness.temporaryPath("s3.out")
        defer { try? FileManager.default.removeItem(atPath: output) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["run", Harness.guest("mbpc.elf"), "--api-sock", socket, "--serial", "file:" + output,
                             "--cmdline", "tests=acpi,s3 wake=button"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        func serial() -> String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }
        var asleep = false
        for _ in 0..<3000 where !asleep { asleep = serial().contains("sleeping until the power button"); usleep(10_000) }
        #expect(asleep, "the guest never went to sleep:\n\(serial())")
        // Asleep, it stays asleep: nothing runs until the button.
        usleep(500_000)
        #expect(process.isRunning && !serial().contains("resumed"), "\(serial())")
        let pressed = try swiftvmm(["control", socket, "power-button"])
        #expect(pressed.status == 0 && pressed.stdout.contains("pressed"), "\(pressed)")
        for _ in 0..<3000 where process.isRunning { usleep(10_000) }
        process.waitUntilExit()
        #expect(process.terminationStatus == 1, "\(serial())")
        #expect(serial().contains("ok   s3: PWRBTN_STS set (woken by the power button)") && Self.failures(serial()).isEmpty, "\(serial())")
    }
}
