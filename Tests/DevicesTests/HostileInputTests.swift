import Glibc
import Testing
import VMMCore
@testable import Devices

/// Values a hostile guest controls, fed straight to the devices: none of them may trap.
@Suite struct HostileDeviceInputTests {
    @Test func rtcTimerFiringWithAnOlderClockReadingThanTheGuestsLastReadOfC() {
        // The timer thread reads the clock, then the guest reads register C with a later reading;
        // the timer's fire(now:) then arrives with the older time. It used to subtract and trap.
        let clock = FakeClock(start: 5_000_000_000)
        let line = EdgeCounter()
        let rtc = CMOSRTC(interrupt: line, clock: clock, wallClock: clock, scheduler: CountingScheduler())
        rtc.write(offset: 0, size: 1, value: UInt64(CMOSRegister.a))
        rtc.write(offset: 1, size: 1, value: 0x23) // 8192 Hz
        rtc.write(offset: 0, size: 1, value: UInt64(CMOSRegister.b))
        rtc.write(offset: 1, size: 1, value: 0x52) // periodic + update-ended interrupts
        let timerReading = clock.nanoseconds()
        clock.advance(3_000_000)
        rtc.write(offset: 0, size: 1, value: UInt64(CMOSRegister.c))
        _ = rtc.read(offset: 1, size: 1)
        rtc.fire(now: timerReading)
        rtc.fire(now: 0)
        #expect(rtc.nextDeadline() != nil)
        clock.advance(1_000_000)
        rtc.fire(now: clock.nanoseconds())
        #expect(line.level, "a later period still raises the interrupt")
    }

    @Test func splitQueueRefusesRingAccessAtSizeZeroOrWhenNotReady() throws {
        let memory = try GuestMemory(ranges: [(start: 0, size: 1 << 20)])
        var queue = SplitQueue(maxSize: 16)
        queue.descriptorTable = 0x1000
        queue.driverArea = 0x2000
        queue.deviceArea = 0x3000
        try queue.validate(memory: memory)
        #expect(throws: VirtqueueError.notReady) { try queue.pushUsed(head: 0, written: 0, memory: memory) }
        queue.ready = true
        try queue.pushUsed(head: 0, written: 0, memory: memory)
        queue.size = 0 // a driver rewrote QueueNum (in a real transport, only while not ready)
        #expect(throws: VirtqueueError.invalidSize(0, max: 16)) { try queue.pushUsed(head: 0, written: 0, memory: memory) }
        #expect(throws: VirtqueueError.invalidSize(0, max: 16)) { _ = try queue.popChain(memory: memory) }
        queue.size = 12
        #expect(throws: VirtqueueError.invalidSize(12, max: 16)) { _ = try queue.popChain(memory: memory) }
    }

    @Test func saturatingArithmetic() {
        #expect(UInt64(3).saturatingSubtract(5) == 0)
        #expect(UInt64.max.saturatingAdd(1) == .max)
        #expect(UInt64(1 << 40).saturatingMultiply(1 << 40) == .max)
        #expect(UInt64(saturating: .nan) == 0)
        #expect(UInt64(saturating: -1) == 0)
        #expect(UInt64(saturating: .infinity) == .max)
        #expect(UInt64(saturating: 1e30) == .max)
        #expect(UInt64(saturating: 42.9) == 42)
    }
}
