import Synchronization
import Testing
import VMMCore
@testable import Devices

/// Each device's saved state, restored into a fresh device in another "process" (a clock that reads
/// later), behaves exactly as the original would have at the moment of saving; damaged state is
/// refused and leaves the device as it was.
@Suite struct DeviceStateTests {
    @Test func theUARTComesBackWithItsFIFOAndItsPendingInterrupt() throws {
        let line = RecordedLine(), output = CapturedOutput()
        let uart = Serial16550(interrupt: line, output: output)
        uart.write(offset: UARTRegister.interruptIdentification, size: 1, value: 0x01) // FIFOs on
        uart.write(offset: UARTRegister.interruptEnable, size: 1, value: 0x01) // received-data interrupts
        uart.write(offset: UARTRegister.scratch, size: 1, value: 0x5A)
        #expect(uart.receive(Array("abc".utf8)) == 3)
        #expect(line.current)
        let saved = uart.saveState(now: 1)

        let restoredLine = RecordedLine()
        let restored = Serial16550(interrupt: restoredLine, output: CapturedOutput())
        try restored.restoreState(saved, now: 999)
        #expect(restoredLine.current, "the pending received-data interrupt is raised again")
        #expect(restored.read(offset: UARTRegister.interruptIdentification, size: 1) & 0x0F == 0x04)
        #expect(restored.read(offset: UARTRegister.scratch, size: 1) == 0x5A)
        let bytes = (0..<3).map { _ in UInt8(restored.read(offset: UARTRegister.data, size: 1)) }
        #expect(String(decoding: bytes, as: UTF8.self) == "abc")
        #expect(restored.read(offset: UARTRegister.lineStatus, size: 1) & 0x01 == 0)
        #expect(restored.saveState(now: 5) != saved, "reading the FIFO changed the state")
    }

    @Test func thePITKeepsItsCountsAcrossAClockThatMoved() throws {
        let clock = FakeClock(start: 3_000_000_000)
        let pit = PIT8254(interrupt: EdgeCounter(), clock: clock, scheduler: CountingScheduler())
        pit.write(offset: 3, size: 1, value: 0x34) // channel 0, lobyte/hibyte, mode 2
        pit.write(offset: 0, size: 1, value: 0x00)
        pit.write(offset: 0, size: 1, value: 0x40) // 0x4000
        clock.advance(1_234_567)
        pit.write(offset: 3, size: 1, value: 0xB6) // channel 2, mode 3
        pit.write(offset: 2, size: 1, value: 0x34)
        pit.write(offset: 2, size: 1, value: 0x12)
        pit.write(offset: 3, size: 1, value: 0x00) // latch channel 0
        let saved = pit.saveState(now: clock.nanoseconds())

        let later = FakeClock(start: 77_000_000_000) // another process: a different clock origin
        let scheduler = CountingScheduler()
        let restored = PIT8254(interrupt: EdgeCounter(), clock: later, scheduler: scheduler)
        try restored.restoreState(saved, now: later.nanoseconds())
        #expect(scheduler.count.withLock { $0 } == 1, "the timer thread looks at the restored deadlines")
        for channel: UInt64 in [0, 0, 2, 2] {
            #expect(restored.read(offset: channel, size: 1) == pit.read(offset: channel, size: 1), "channel \(channel)")
        }
        clock.advance(5_000_000)
        later.advance(5_000_000)
        #expect(restored.read(offset: 0, size: 1) == pit.read(offset: 0, size: 1), "they count on alike")
    }

    @Test func theRTCKeepsRegistersRAMAndPeriodicPhase() throws {
        let clock = FakeClock(start: 2_000_000_000)
        let rtc = CMOSRTC(interrupt: EdgeCounter(), clock: clock, wallClock: clock, scheduler: CountingScheduler(), memory: [0x34: 0x12])
        func set(_ device: CMOSRTC<EdgeCounter>, _ index: UInt8, _ value: UInt8) {
            device.write(offset: 0, size: 1, value: UInt64(index))
            device.write(offset: 1, size: 1, value: UInt64(value))
        }
        func get(_ device: CMOSRTC<EdgeCounter>, _ index: UInt8) -> UInt64 {
            device.write(offset: 0, size: 1, value: UInt64(index))
            return device.read(offset: 1, size: 1)
        }
        set(rtc, 0x0B, 0x46) // binary, 24-hour, periodic interrupts
        set(rtc, 0x40, 0x99)
        let saved = rtc.saveState(now: clock.nanoseconds())
        let other = FakeClock(start: 9_000_000_000, epoch: 1_700_000_000 - 7) // same wall time as the original
        let restored = CMOSRTC(interrupt: EdgeCounter(), clock: other, wallClock: other, scheduler: CountingScheduler())
        try restored.restoreState(saved, now: other.nanoseconds())
        for index: UInt8 in [0x0B, 0x40, 0x34, 0x00, 0x02, 0x04, 0x07, 0x08, 0x09] {
            #expect(get(restored, index) == get(rtc, index), "register 0x\(String(index, radix: 16))")
        }
    }

    @Test func aBalloonRestoredMidStreamServesTheNextBuffer() throws {
        var driver = try TestDriver(target: 4)
        try driver.memory.store(UInt32(0x300), at: 0x20000) // inflate PFN 0x300
        try driver.descriptor(0, 0, address: 0x20000, length: 4)
        try driver.submit(0, head: 0)
        #expect(try driver.usedIndex(0) == 1)
        let saved = driver.device.saveState(now: driver.clock.nanoseconds())

        let line = EdgeCounter()
        let restored = TestDriver.Device(model: BalloonModel(targetPages: 0, statsInterval: 1_000_000_000), memory: driver.memory,
                                         interrupt: line, clock: FakeClock(start: 50_000_000_000), scheduler: ManualTimerScheduler())
        try restored.restoreState(saved, now: 50_000_000_000)
        #expect(restored.deviceStatus == driver.device.deviceStatus)
        #expect(restored.read(offset: VirtioMMIORegister.config, size: 4) == 4, "the target came back")
        #expect(line.level == driver.line.level)
        // The driver goes on with the restored device: the next buffer is the ring's next slot.
        try driver.memory.store(UInt32(0x301), at: 0x20000)
        try driver.memory.store(UInt16(0), at: TestDriver.rings(0).avail + 4 + 2)
        try driver.memory.store(UInt16(2), at: TestDriver.rings(0).avail + 2)
        restored.write(offset: VirtioMMIORegister.queueNotify, size: 4, value: 0)
        #expect(try driver.usedIndex(0) == 2, "the restored device took the next chain, not the first again")
        #expect(restored.withModel { model, _ in model.counters.inflated } == 2)
    }

    @Test func damagedStateIsRefusedAndLeavesTheDeviceAsItWas() throws {
        let line = RecordedLine()
        let uart = Serial16550(interrupt: line, output: CapturedOutput())
        uart.write(offset: UARTRegister.scratch, size: 1, value: 0x77)
        let good = uart.saveState(now: 0)
        for length in 0..<good.count {
            #expect(throws: StateError.self) { try uart.restoreState(Array(good.prefix(length)), now: 0) }
        }
        #expect(throws: StateError.self) { try uart.restoreState(good + [0], now: 0) }
        var longFIFO = StateWriter()
        for byte: UInt8 in [0, 3, 0, 0] { longFIFO.u8(byte) }
        longFIFO.u16(12)
        longFIFO.bool(true)
        longFIFO.blob([UInt8](repeating: 0x41, count: 17))
        #expect(throws: StateError.self) { try uart.restoreState(longFIFO.bytes, now: 0) }
        #expect(uart.read(offset: UARTRegister.scratch, size: 1) == 0x77, "nothing was half restored")

        let pit = PIT8254(interrupt: EdgeCounter(), clock: FakeClock(), scheduler: CountingScheduler())
        var badMode = pit.saveState(now: 0)
        badMode[0] = 7
        #expect(throws: StateError.self) { try pit.restoreState(badMode, now: 0) }
        // Arbitrary bytes never trap, whatever their length.
        var seed: UInt64 = 0x1234_5678
        for length in [0, 1, 7, 40, 100, 300, 700] {
            let bytes = (0..<length).map { _ -> UInt8 in
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                return UInt8(truncatingIfNeeded: seed >> 33)
            }
            _ = try? uart.restoreState(bytes, now: 0)
            _ = try? pit.restoreState(bytes, now: 0)
        }
    }

    @Test func countersAtTheirLimitsFromAHostileFileDoNotOverflowLater() throws {
        var out = StateWriter()
        for _ in 0..<3 {
            out.u8(2); out.u8(3); out.bool(false); out.u32(2); out.bool(true); out.bool(true)
            out.u64(.max) // base ticks
            out.u64(0) // resumed just now
            out.bool(false); out.u8(0); out.bool(false); out.bool(false); out.u16(0); out.bool(false); out.bool(false); out.u8(0)
            out.u64(.max) // ticks delivered
            out.u64(.max) // never delivered
            out.u64(.max) // merges
        }
        out.bool(false); out.u64(.max); out.u64(.max)
        let clock = FakeClock()
        let pit = PIT8254(interrupt: EdgeCounter(), clock: clock, scheduler: CountingScheduler())
        try pit.restoreState(out.bytes, now: clock.nanoseconds())
        for _ in 0..<5 {
            clock.advance(1_000_000)
            if let deadline = pit.nextDeadline() { pit.fire(now: max(deadline, clock.nanoseconds())) }
            _ = pit.read(offset: 0, size: 1)
        }
    }
}
