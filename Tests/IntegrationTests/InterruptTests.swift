@testable import Boot
import Synchronization
import Foundation
import Glibc
import Testing
import VMM

/// Guests that measure time against the host: `make test` runs them in a phase of their own, not
/// beside a hundred parallel tests that would preempt their vCPUs mid-measurement.
@Suite(.serialized, .enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct TimingSensitiveTests {
    @Test(arguments: ["emulated", "kernel"])
    func timerGuestAgreesWithRTCAndTSC(pit: String) throws {
        requireGuests("timer.elf")
        let result = try swiftvmm(["run", Harness.guest("timer.elf"), "--pit", pit], timeout: 120)
        #expect(result.status == 1, "\(result)")
        for check in ["ok   tsc-calibration", "ok   pit-vs-rtc: 1000 Hz", "ok   pit-vs-tsc: 1000 Hz", "ok   pit-vs-rtc: 100 Hz",
                      "ok   pit-vs-tsc: 100 Hz", "ok   rtc-periodic", "timer: 0 failure(s)"] {
            #expect(result.stdout.contains(check), "\(check) in \(result)")
        }
    }
}

@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct InterruptAndTimerTests {

    @Test func rtcGuestReadsTheHostClock() throws {
        requireGuests("rtc.elf")
        let before = time(nil)
        let result = try swiftvmm(["run", Harness.guest("rtc.elf")])
        let after = time(nil)
        #expect(result.status == 1, "\(result)")
        let epoch = result.stdout.split(separator: " ").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        let guestTime = try #require(epoch, "\(result)")
        #expect(guestTime >= before - 2 && guestTime <= after + 2, "guest \(guestTime), host \(before)...\(after)")
        #expect(result.stdout.hasPrefix("rtc: 20"), "\(result)")
    }

    @Test func serialReceiveInterruptsDriveTheEchoGuest() throws {
        requireGuests("echo.elf")
        let result = try swiftvmm(["run", Harness.guest("echo.elf"), "--cmdline", "lines=5 irq=1"],
                                  input: "interrupt driven\nquit\n", waitFor: "echo: ready")
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("echo: INTERRUPT DRIVEN (irq4 count "), "\(result)")
    }
}

@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct SMPTests {
    @Test(arguments: [1, 2, 4])
    func everyVCPUStartsThroughINITSIPIAndCountsExactly(cpus: Int) throws {
        requireGuests("smp.elf")
        let result = try swiftvmm(["run", Harness.guest("smp.elf"), "--cpus", "\(cpus)"], timeout: 120)
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("smp: \(cpus) vCPUs online of \(cpus)"), "\(result)")
        for cpu in 0..<cpus {
            #expect(result.stdout.contains("smp: vcpu \(cpu) has APIC ID \(cpu), at cpl 3"), "vcpu \(cpu): \(result)")
        }
        #expect(result.stdout.contains("smp: counter \(cpus * 100_000), expected \(cpus * 100_000)"), "\(result)")
    }

    @Test func sixtyFourVCPUsComeUpWithTheirAPICIDs() throws {
        // The runtime used to park every vCPU past 8, and the VMM allowed 32.
        requireGuests("smp.elf")
        let result = try swiftvmm(["run", Harness.guest("smp.elf"), "--cpus", "64", "--cmdline", "steps=1000"], timeout: 120)
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("smp: 64 vCPUs online of 64"), "\(result)")
        #expect(result.stdout.contains("smp: vcpu 63 has APIC ID 63, at cpl 3"), "\(result)")
        #expect(result.stdout.contains("smp: counter 64000, expected 64000"), "\(result)")
        let tooMany = try swiftvmm(["run", Harness.guest("smp.elf"), "--cpus", "65"])
        #expect(tooMany.status == 64 && tooMany.stderr.contains("out of range (1 to 64)"), "\(tooMany)")
    }

    @Test func oneVCPUEndingTheVMStopsTheOthersPromptly() throws {
        requireGuests("smp.elf")
        // The APs sleep in HLT inside KVM once done; the BSP's debug-exit must still end the process.
        let start = Date()
        let result = try swiftvmm(["run", Harness.guest("smp.elf"), "--cpus", "4", "--cmdline", "steps=10"])
        #expect(result.status == 1, "\(result)")
        #expect(Date().timeIntervalSince(start) < 10)
    }
}

/// The control API: pause, resume and stop a running VM from another thread.
@Suite(.enabled(if: Harness.bootsGuests, "needs a usable /dev/kvm (these tests always run, and fail, when CI=true)"))
struct MachineControlTests {
    @Test func pauseStopsEveryVCPUAndResumeRestartsThem() throws {
        requireGuests("smp.elf")
        var config = VMConfig(imagePath: Harness.guest("smp.elf"))
        config.cpus = 2
        config.serial = .none
        config.commandLine = "steps=100000000000" // far longer than the test
        let machine = try Machine(config: config)
        let outcome = Mutex<RunOutcome?>(nil)
        let runner = Thread { outcome.withLock { $0 = machine.run() } }
        runner.start()
        func cpu() -> Double { machine.vcpuCPUSeconds().reduce(0, +) }
        usleep(800_000)
        let running = cpu()
        #expect(running > 0.2, "both vCPUs burn CPU at CPL 3: \(running) s")

        machine.pause()
        let pausedAt = cpu()
        usleep(500_000)
        let pausedFor = cpu() - pausedAt
        #expect(pausedFor < 0.02, "paused vCPUs used \(pausedFor) s of CPU")

        machine.resume()
        usleep(500_000)
        #expect(cpu() - pausedAt > 0.2, "resumed vCPUs run again")

        machine.stop()
        for _ in 0..<100 where outcome.withLock({ $0 }) == nil { usleep(50_000) }
        #expect(outcome.withLock { $0 } == .stopped)
        #expect(RunOutcome.stopped.exitCode == 72)
    }

    @Test func pauseReturnsWhileTheDebuggerHoldsTheVCPUs() throws {
        // A debug machine parks its vCPUs before their first instruction; pause() used to wait
        // for them to park a second time, for ever.
        requireGuests("smp.elf")
        var config = VMConfig(imagePath: Harness.guest("smp.elf"))
        config.cpus = 2
        config.serial = .none
        config.debug = true
        let machine = try Machine(config: config)
        let gate = try #require(machine.debugGate)
        let outcome = Mutex<RunOutcome?>(nil)
        Thread { outcome.withLock { $0 = machine.run(handleSignals: false, consoleInput: false) } }.start()
        #expect(gate.waitForStop(timeout: 30) != nil, "the debugger holds the vCPUs")
        let paused = Mutex(false)
        Thread { machine.pause(); paused.withLock { $0 = true } }.start()
        for _ in 0..<250 where !paused.withLock({ $0 }) { usleep(20_000) }
        #expect(paused.withLock { $0 }, "pause() returned within 5 s while the debugger held the vCPUs")
        machine.resume()
        machine.stop()
        for _ in 0..<250 where outcome.withLock({ $0 }) == nil { usleep(20_000) }
        #expect(outcome.withLock { $0 } == .stopped)
    }
}
