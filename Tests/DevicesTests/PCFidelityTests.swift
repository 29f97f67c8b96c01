import Synchronization
import Testing
import VMMCore
@testable import Devices

/// The ACPI PM registers and the VMware backdoor, against a fake clock and a recorded SCI line.
@Suite struct ACPIPowerManagementTests {
    let clock = FakeClock(start: 0)
    let sci = RecordedLine()
    final class Sleeps: Sendable {
        let types = Mutex<[UInt8]>([])
        func withLock<R>(_ body: (inout [UInt8]) -> R) -> R { types.withLock { body(&$0) } }
    }
    let sleeps = Sleeps()

    func device() -> ACPIPowerManagement {
        let sleeps = self.sleeps
        return ACPIPowerManagement(clock: clock, sci: sci) { type in sleeps.withLock { $0.append(type) } }
    }

    @Test func thePMTimerCountsAt3579545Hz() {
        let pm = device()
        let start = pm.read(offset: 8, size: 4)
        clock.advance(1_000_000_000)
        #expect(pm.read(offset: 8, size: 4) - start == 3_579_545)
        clock.advance(50_000_000)
        #expect(pm.read(offset: 8, size: 4) - start == 3_579_545 + 178_977)
        // 32 bits wrap after 20 minutes: a later reading is still the low 32 bits of the count.
        clock.advance(1_200_000_000_000)
        let ticks = (UInt64(1_201_050_000_000) * 3_579_545) / 1_000_000_000
        #expect(pm.read(offset: 8, size: 4) == ticks & 0xFFFF_FFFF)
        // TMR_STS: bit 31 of the count changed since the start.
        #expect(pm.read(offset: 0, size: 2) & 1 == 1)
    }

    @Test func thePMTimerKeepsCountingPastTheHostsFirst86Minutes() {
        // nanoseconds x 3579545 passes 2^64 after 5153 s of host uptime; the count must not stop there.
        let late = FakeClock(start: 6_000 * 1_000_000_000)
        let pm = ACPIPowerManagement(clock: late, sci: sci) { _ in }
        let first = pm.read(offset: 8, size: 4)
        #expect(first == (UInt64(6_000) * 3_579_545) & 0xFFFF_FFFF)
        late.advance(50_000_000)
        #expect((pm.read(offset: 8, size: 4) &- first) & 0xFFFF_FFFF == 178_977)
        let farFuture = FakeClock(start: UInt64.max)
        #expect(ACPIPowerManagement(clock: farFuture, sci: sci) { _ in }.read(offset: 8, size: 4) <= 0xFFFF_FFFF)
    }

    @Test func statusBitsClearWhenWrittenWithOneAndRaiseTheSCIWhenEnabled() {
        let pm = device()
        pm.signal(ACPIPowerManagement.Event.powerButton)
        #expect(pm.read(offset: 0, size: 2) & 0x100 != 0)
        #expect(!sci.current) // not enabled
        pm.write(offset: 2, size: 2, value: 0x100) // PWRBTN_EN
        #expect(sci.current)
        #expect(pm.read(offset: 2, size: 2) == 0x100)
        pm.write(offset: 0, size: 2, value: 0x0001) // clears only TMR_STS, not the button
        #expect(sci.current)
        pm.write(offset: 0, size: 2, value: 0x0100)
        #expect(pm.read(offset: 0, size: 2) & 0x100 == 0 && !sci.current)
        // One 32-bit write sets the enable half and clears status bits at once.
        pm.signal(ACPIPowerManagement.Event.rtc)
        pm.write(offset: 0, size: 4, value: 0x0400 << 16 | 0x0400)
        #expect(pm.read(offset: 0, size: 2) & 0x400 == 0 && pm.isEnabled(ACPIPowerManagement.Event.rtc))
        // Byte accesses: the enable register's high byte alone, a 16-bit read of the timer's top half.
        pm.write(offset: 2, size: 2, value: 0)
        pm.write(offset: 3, size: 1, value: 0x01)
        #expect(pm.read(offset: 2, size: 2) == 0x0100 && pm.read(offset: 3, size: 1) == 0x01)
        clock.advance(5_000_000_000)
        #expect(pm.read(offset: 10, size: 2) == pm.read(offset: 8, size: 4) >> 16)
        // Bits the device does not implement stay zero.
        pm.write(offset: 2, size: 2, value: 0xFFFF)
        #expect(pm.read(offset: 2, size: 2) == 0x0501)
    }

    @Test func sleepEnableHandsTheSleepTypeOverAndReadsBackClear() {
        let pm = device()
        #expect(pm.read(offset: 4, size: 2) == 1) // SCI_EN: ACPI mode, always
        pm.write(offset: 4, size: 2, value: 1 << 10) // SLP_TYP without SLP_EN: nothing happens
        #expect(sleeps.withLock { $0 }.isEmpty)
        pm.write(offset: 4, size: 2, value: 1 << 10 | 1 << 13)
        pm.write(offset: 5, size: 1, value: (5 << 10 | 1 << 13) >> 8) // the high byte alone
        #expect(sleeps.withLock { $0 } == [1, 5])
        #expect(pm.read(offset: 4, size: 2) & (1 << 13) == 0)
        pm.wake(by: ACPIPowerManagement.Event.rtc)
        #expect(pm.read(offset: 0, size: 2) & 0x8400 == 0x8400)
        #expect(pm.read(offset: 4, size: 2) == 1) // SLP_TYP cleared
        #expect(pm.read(offset: 12, size: 4) == 0xFFFF_FFFF && pm.read(offset: 6, size: 2) == 0xFFFF)
    }
}

@Suite struct VMwareBackdoorTests {
    @Test func getVersionAnswersWithTheMagic() {
        let answer = VMwareBackdoor.call(.init(eax: VMwareBackdoor.magic, ebx: 0, ecx: 10, edx: 0x5658))
        #expect(answer == .init(eax: 6, ebx: VMwareBackdoor.magic, ecx: 2, edx: 0x5658))
        // The command is ECX's low 16 bits.
        #expect(VMwareBackdoor.call(.init(eax: VMwareBackdoor.magic, ebx: 0, ecx: 0xABCD_000A, edx: 0))?.eax == 6)
    }

    @Test func withoutTheMagicThePortIsNotTheBackdoor() {
        #expect(VMwareBackdoor.call(.init(eax: 0, ebx: 0, ecx: 10, edx: 0x5658)) == nil)
        let unknown = VMwareBackdoor.call(.init(eax: VMwareBackdoor.magic, ebx: 7, ecx: 0x99, edx: 1))
        #expect(unknown == .init(eax: .max, ebx: 7, ecx: 0x99, edx: 1))
    }
}
