import Glibc
import Synchronization
import Testing
import VMMCore
@testable import Devices

final class FakeClock: MonotonicClock, WallClock {
    let time: Mutex<UInt64>
    /// Wall-clock seconds at monotonic time 0.
    let epoch: Int64
    init(start: UInt64 = 1_000_000_000, epoch: Int64 = 1_700_000_000) {
        time = Mutex(start)
        self.epoch = epoch
    }
    func nanoseconds() -> UInt64 { time.withLock { $0 } }
    func now() -> (seconds: Int64, nanoseconds: Int64) {
        let t = nanoseconds()
        return (epoch + Int64(t / 1_000_000_000), Int64(t % 1_000_000_000))
    }
    func advance(_ nanoseconds: UInt64) { time.withLock { $0 += nanoseconds } }
}

final class CountingScheduler: TimerScheduler {
    let count = Mutex(0)
    func reschedule() { count.withLock { $0 += 1 } }
}

/// Counts rising edges.
final class EdgeCounter: InterruptLine {
    let state = Mutex((level: false, rises: 0))
    func setLevel(_ high: Bool) {
        state.withLock { if high && !$0.level { $0.rises += 1 }; $0.level = high }
    }
    var rises: Int { state.withLock { $0.rises } }
    var level: Bool { state.withLock { $0.level } }
}

/// A controller that merges the first `merges` edges with one still pending, as a PIC does
/// while the guest has not yet taken the previous interrupt.
final class MergingLine: InterruptLine {
    let state: Mutex<(merges: Int, taken: Int)>
    init(merges: Int) { state = Mutex((merges, 0)) }
    func setLevel(_ high: Bool) {}
    func pulse() -> InterruptDelivery {
        state.withLock { state in
            if state.merges > 0 { state.merges -= 1; return .coalesced }
            state.taken += 1
            return .delivered
        }
    }
    var taken: Int { state.withLock { $0.taken } }
}

@Suite struct PIT8254Tests {
    let clock = FakeClock()
    let line = EdgeCounter()
    let scheduler = CountingScheduler()
    var pit: PIT8254<EdgeCounter> { PIT8254(interrupt: line, clock: clock, scheduler: scheduler) }

    func program(_ pit: PIT8254<EdgeCounter>, channel: UInt64, mode: UInt8, count: UInt16) {
        pit.write(offset: 3, size: 1, value: UInt64(channel << 6 | 0x30 | UInt64(mode) << 1))
        pit.write(offset: channel, size: 1, value: UInt64(count & 0xFF))
        pit.write(offset: channel, size: 1, value: UInt64(count >> 8))
    }

    func readCount(_ pit: PIT8254<EdgeCounter>, channel: UInt64) -> UInt16 {
        pit.write(offset: 3, size: 1, value: channel << 6) // latch
        let low = pit.read(offset: channel, size: 1), high = pit.read(offset: channel, size: 1)
        return UInt16(high << 8 | low)
    }

    @Test func countsDownAtTheInputClockRate() {
        let pit = self.pit
        program(pit, channel: 0, mode: 2, count: 11932) // 100 Hz
        #expect(readCount(pit, channel: 0) == 11932)
        clock.advance(1_000_000) // 1 ms = 1193 ticks
        #expect(readCount(pit, channel: 0) == 11932 - 1193)
        clock.advance(9_000_000) // a whole period: reloaded
        let count = readCount(pit, channel: 0)
        #expect(count > 11900 || count < 5, "count \(count)")
    }

    @Test func latchHoldsTheValueUntilRead() {
        let pit = self.pit
        program(pit, channel: 0, mode: 2, count: 50000)
        clock.advance(2_000_000)
        pit.write(offset: 3, size: 1, value: 0x00)
        clock.advance(5_000_000)
        let low = pit.read(offset: 0, size: 1), high = pit.read(offset: 0, size: 1)
        #expect(UInt16(high << 8 | low) == 50000 - 2386)
    }

    @Test func channel0TicksFollowTheClockWithoutDrift() {
        let pit = self.pit
        program(pit, channel: 0, mode: 2, count: 1193) // ~1000.15 Hz
        #expect(scheduler.count.withLock { $0 } == 2) // the control word stopped it, the count started it
        var fired = 0
        // Wake exactly at each deadline for one simulated second.
        while let deadline = pit.nextDeadline(), deadline <= 2_000_000_000 {
            clock.time.withLock { $0 = deadline }
            pit.fire(now: deadline)
            fired += 1
        }
        #expect(line.rises == fired)
        #expect(fired == 1000) // 1 s * 1193182 / 1193 = 1000.15 periods
        #expect(!line.level)
    }

    @Test func lateWakeupsCatchUpMissedTicks() {
        let pit = self.pit
        program(pit, channel: 0, mode: 3, count: 11932) // 100 Hz square wave
        clock.advance(55_000_000) // asleep for 5.5 periods
        var now = clock.nanoseconds()
        pit.fire(now: now)
        #expect(line.rises == 1)
        while let deadline = pit.nextDeadline(), deadline <= now + 1_000_000 {
            now = max(now, deadline)
            pit.fire(now: now)
        }
        #expect(line.rises == 5)
        #expect(pit.lostTicks == 0)
    }

    /// Edges the controller merged are not ticks the guest got: each comes again a catch-up gap
    /// later, so a second's worth of ticks all reach the guest (the timer guest lost 11% of its
    /// 1000 Hz ticks while its vCPU was slow to take them).
    @Test func mergedTicksAreDeliveredAgain() {
        let merging = MergingLine(merges: 3)
        let pit = PIT8254(interrupt: merging, clock: clock, scheduler: scheduler)
        pit.write(offset: 3, size: 1, value: 0x36) // channel 0, mode 3
        pit.write(offset: 0, size: 1, value: UInt64(11932 & 0xFF)) // 100 Hz
        pit.write(offset: 0, size: 1, value: UInt64(11932 >> 8))
        let end = clock.nanoseconds() + 1_000_000_000
        var now = clock.nanoseconds()
        while let deadline = pit.nextDeadline(), deadline <= end {
            #expect(deadline >= now, "a retry is never scheduled in the past")
            now = deadline
            pit.fire(now: now)
        }
        // 11932 counts are 10.0002 ms: 99 whole periods fit in the second, merged or not.
        #expect(merging.taken == 99 && pit.coalescedTicks == 3 && pit.lostTicks == 0, "\(merging.taken) taken, \(pit.coalescedTicks) merged")
        // A one-shot count merged once fires again after the gap, not at once and not twice.
        let oneShot = MergingLine(merges: 1)
        let timer = PIT8254(interrupt: oneShot, clock: clock, scheduler: scheduler)
        timer.write(offset: 3, size: 1, value: 0x30) // mode 0
        timer.write(offset: 0, size: 1, value: 0xA9)
        timer.write(offset: 0, size: 1, value: 0x04) // 1193 counts: 1 ms
        let first = try! #require(timer.nextDeadline())
        timer.fire(now: first)
        let retry = try! #require(timer.nextDeadline())
        #expect(retry == first + PIT8254<MergingLine>.catchUpGap)
        timer.fire(now: retry)
        #expect(oneShot.taken == 1 && timer.nextDeadline() == nil)
    }

    /// A guest that takes no interrupt at all (paused, or interrupts off): retries back off to one
    /// per period, so it costs no more edges a second than the tick rate.
    @Test func retriesBackOffToOneAPeriod() {
        let never = MergingLine(merges: .max)
        let pit = PIT8254(interrupt: never, clock: clock, scheduler: scheduler)
        pit.write(offset: 3, size: 1, value: 0x34) // channel 0, mode 2
        pit.write(offset: 0, size: 1, value: UInt64(1193 & 0xFF)) // 1000 Hz
        pit.write(offset: 0, size: 1, value: UInt64(1193 >> 8))
        let end = clock.nanoseconds() + 1_000_000_000
        var edges = 0
        while let deadline = pit.nextDeadline(), deadline <= end {
            pit.fire(now: deadline)
            edges += 1
        }
        #expect(edges <= 1010 && edges >= 990, "\(edges) edges in a second at 1000 Hz")
        #expect(never.taken == 0 && pit.coalescedTicks == UInt64(edges))
    }

    @Test func mode0IsAOneShot() {
        let pit = self.pit
        program(pit, channel: 0, mode: 0, count: 1193)
        clock.advance(5_000_000)
        pit.fire(now: clock.nanoseconds())
        #expect(line.rises == 1)
        #expect(pit.nextDeadline() == nil)
        pit.fire(now: clock.nanoseconds() + 10_000_000)
        #expect(line.rises == 1)
    }

    @Test func channel2GateAndOutputOnPort0x61() {
        let pit = self.pit
        let portB = pit.portB
        program(pit, channel: 2, mode: 0, count: 11932) // 10 ms one-shot, as Linux calibrates
        #expect(portB.read(offset: 0, size: 1) & 0x21 == 0) // gate low, output low
        portB.write(offset: 0, size: 1, value: 1) // gate high: counting starts
        clock.advance(5_000_000)
        #expect(portB.read(offset: 0, size: 1) & 0x20 == 0)
        portB.write(offset: 0, size: 1, value: 0) // gate low pauses mode 0
        clock.advance(50_000_000)
        #expect(portB.read(offset: 0, size: 1) & 0x20 == 0)
        portB.write(offset: 0, size: 1, value: 1)
        clock.advance(5_100_000)
        #expect(portB.read(offset: 0, size: 1) & 0x21 == 0x21) // terminal count reached
    }

    @Test func readBackLatchesStatusAndCount() {
        let pit = self.pit
        program(pit, channel: 1, mode: 3, count: 0x1234)
        pit.write(offset: 3, size: 1, value: 0xC4) // read-back, latch count and status of channel 1
        let status = pit.read(offset: 1, size: 1)
        #expect(status & 0x3F == 0x36) // lohi, mode 3, binary
        #expect(status & 0x40 == 0) // count loaded
        let low = pit.read(offset: 1, size: 1), high = pit.read(offset: 1, size: 1)
        #expect(high << 8 | low == 0x1234)
    }

    @Test func accessModesAndBCD() {
        let pit = self.pit
        pit.write(offset: 3, size: 1, value: 0x10 | 2 << 1) // channel 0, low byte only, mode 2
        pit.write(offset: 0, size: 1, value: 200)
        clock.advance(50_000) // 59 ticks
        #expect(pit.read(offset: 0, size: 1) == 200 - 59)
        pit.write(offset: 3, size: 1, value: 0x80 | 0x30 | 2 << 1 | 1) // channel 2, BCD
        pit.write(offset: 2, size: 1, value: 0x00)
        pit.write(offset: 2, size: 1, value: 0x10) // 1000 in BCD
        pit.portB.write(offset: 0, size: 1, value: 1)
        clock.advance(10_000) // 11 ticks
        pit.write(offset: 3, size: 1, value: 0x80)
        let low = pit.read(offset: 2, size: 1), high = pit.read(offset: 2, size: 1)
        #expect(high << 8 | low == 0x0989)
        #expect(pit.read(offset: 3, size: 1) == 0xFF)
    }
}

@Suite struct CMOSRTCTests {
    // 2023-11-14 22:13:20 UTC is 1700000000.
    let clock = FakeClock(start: 500_000_000)
    let line = EdgeCounter()
    let scheduler = CountingScheduler()
    var rtc: CMOSRTC<EdgeCounter> {
        CMOSRTC(interrupt: line, clock: clock, wallClock: clock, scheduler: scheduler, memory: [0x34: 0x12])
    }

    func read(_ rtc: CMOSRTC<EdgeCounter>, _ index: UInt8) -> UInt8 {
        rtc.write(offset: 0, size: 1, value: UInt64(index))
        return UInt8(rtc.read(offset: 1, size: 1))
    }

    func write(_ rtc: CMOSRTC<EdgeCounter>, _ index: UInt8, _ value: UInt8) {
        rtc.write(offset: 0, size: 1, value: UInt64(index))
        rtc.write(offset: 1, size: 1, value: UInt64(value))
    }

    @Test func readsHostTimeInBCD24Hour() {
        let rtc = self.rtc
        #expect(read(rtc, CMOSRegister.seconds) == 0x20)
        #expect(read(rtc, CMOSRegister.minutes) == 0x13)
        #expect(read(rtc, CMOSRegister.hours) == 0x22)
        #expect(read(rtc, CMOSRegister.day) == 0x14)
        #expect(read(rtc, CMOSRegister.month) == 0x11)
        #expect(read(rtc, CMOSRegister.year) == 0x23)
        #expect(read(rtc, CMOSRegister.century) == 0x20)
        #expect(read(rtc, CMOSRegister.weekday) == 3) // Tuesday
        #expect(read(rtc, CMOSRegister.d) == 0x80)
    }

    @Test func binaryAnd12HourModes() {
        let rtc = self.rtc
        write(rtc, CMOSRegister.b, 0x04) // binary, 12-hour
        #expect(read(rtc, CMOSRegister.seconds) == 20)
        #expect(read(rtc, CMOSRegister.hours) == 0x80 | 10) // 10 PM
        write(rtc, 0x80 | CMOSRegister.b, 0x00) // NMI bit on the index is ignored; BCD 12-hour
        #expect(read(rtc, CMOSRegister.hours) == 0x90)
    }

    @Test func updateInProgressInTheLastMoments() {
        let rtc = self.rtc
        #expect(read(rtc, CMOSRegister.a) & 0x80 == 0)
        clock.advance(499_900_000) // 100 us before the second
        #expect(read(rtc, CMOSRegister.a) == 0xA6)
        clock.advance(200_000)
        #expect(read(rtc, CMOSRegister.a) == 0x26)
        #expect(read(rtc, CMOSRegister.seconds) == 0x21)
    }

    @Test func guestCanSetTheClock() {
        let rtc = self.rtc
        write(rtc, CMOSRegister.b, 0x82) // SET
        write(rtc, CMOSRegister.hours, 0x08)
        write(rtc, CMOSRegister.year, 0x30)
        clock.advance(3_000_000_000) // held: no updates while SET
        #expect(read(rtc, CMOSRegister.seconds) == 0x20)
        write(rtc, CMOSRegister.b, 0x02)
        clock.advance(2_000_000_000)
        #expect(read(rtc, CMOSRegister.hours) == 0x08)
        #expect(read(rtc, CMOSRegister.year) == 0x30)
        #expect(read(rtc, CMOSRegister.seconds) == 0x22)
    }

    @Test func periodicInterruptUntilRegisterCIsRead() {
        let rtc = self.rtc
        write(rtc, CMOSRegister.b, 0x42) // PIE
        let first = rtc.nextDeadline()
        #expect(first == clock.nanoseconds() + 976_562) // 1024 Hz
        clock.advance(1_000_000)
        rtc.fire(now: clock.nanoseconds())
        #expect(line.level && line.rises == 1)
        #expect(rtc.nextDeadline() == nil) // nothing more until C is read
        let before = scheduler.count.withLock { $0 }
        #expect(read(rtc, CMOSRegister.c) == 0xC0)
        #expect(!line.level)
        #expect(scheduler.count.withLock { $0 } == before + 1) // re-armed: the timer thread looks again
        #expect(rtc.nextDeadline() != nil)
        #expect(read(rtc, CMOSRegister.c) == 0x00)
        write(rtc, CMOSRegister.a, 0x2F) // 2 Hz
        clock.advance(400_000_000)
        rtc.fire(now: clock.nanoseconds())
        #expect(line.rises == 1)
        clock.advance(200_000_000)
        rtc.fire(now: clock.nanoseconds())
        #expect(line.rises == 2)
    }

    @Test func latePeriodicInterruptsAreDeliveredNotMerged() {
        let rtc = self.rtc
        let start = clock.nanoseconds()
        write(rtc, CMOSRegister.b, 0x42) // PIE, 1024 Hz: 976,562 ns
        clock.advance(3 * 976_562 + 500_000) // the guest was away for three and a half periods
        rtc.fire(now: clock.nanoseconds())
        for delivered in 1...3 {
            #expect(line.level)
            #expect(read(rtc, CMOSRegister.c) == 0xC0)
            #expect(!line.level)
            if delivered < 3 {
                // Owed periods follow one catch-up gap after each acknowledgement.
                #expect(rtc.nextDeadline() == clock.nanoseconds() + CMOSRTC<EdgeCounter>.catchUpGap)
                clock.advance(CMOSRTC<EdgeCounter>.catchUpGap)
                rtc.fire(now: clock.nanoseconds())
            }
        }
        #expect(line.rises == 3)
        #expect(rtc.nextDeadline() == start + 4 * 976_562) // caught up: back on the period grid
        #expect(read(rtc, CMOSRegister.c) == 0x00)
        clock.advance(2000 * 976_562) // far behind: all but the newest 1000 are dropped
        #expect(read(rtc, CMOSRegister.c) == 0xD0) // and a second boundary passed (UF)
        #expect(rtc.lostPeriodicInterrupts == 1000)
        write(rtc, CMOSRegister.b, 0x02) // PIE off: one read acknowledges every period owed
        #expect(read(rtc, CMOSRegister.c) == 0x40)
        #expect(read(rtc, CMOSRegister.c) == 0x00)
    }

    @Test func updateEndedAndAlarmFlags() {
        let rtc = self.rtc
        write(rtc, CMOSRegister.secondsAlarm, 0x21)
        write(rtc, CMOSRegister.minutesAlarm, 0xC0) // don't care
        write(rtc, CMOSRegister.hoursAlarm, 0xFF)
        write(rtc, CMOSRegister.b, 0x32) // AIE | UIE
        clock.advance(600_000_000) // crosses 22:13:21
        rtc.fire(now: clock.nanoseconds())
        #expect(line.level)
        // PF is set at the periodic rate even with PIE off, as on the MC146818.
        #expect(read(rtc, CMOSRegister.c) == 0xF0)
        clock.advance(1_000_000_000) // 22:13:22: update only
        #expect(read(rtc, CMOSRegister.c) == 0xD0)
        write(rtc, CMOSRegister.a, 0x20) // periodic rate off
        clock.advance(1_000_000_000)
        #expect(read(rtc, CMOSRegister.c) == 0x90)
    }

    @Test func alarmAtAnExactTimeOfDayAcrossIdleStretchesAndMidnight() {
        let rtc = self.rtc
        write(rtc, CMOSRegister.b, 0x02) // BCD, 24-hour, no interrupts enabled: flags only
        write(rtc, CMOSRegister.hoursAlarm, 0x22)
        write(rtc, CMOSRegister.minutesAlarm, 0x15)
        write(rtc, CMOSRegister.secondsAlarm, 0x00)
        _ = read(rtc, CMOSRegister.c)
        clock.advance(99_000_000_000) // 22:14:59.5
        #expect(read(rtc, CMOSRegister.c) & 0x20 == 0)
        clock.advance(1_000_000_000) // 22:15:00.5
        #expect(read(rtc, CMOSRegister.c) & 0x20 != 0)
        write(rtc, CMOSRegister.hoursAlarm, 0x00) // 00:00:05, crossed in the next two idle hours
        write(rtc, CMOSRegister.minutesAlarm, 0x00)
        write(rtc, CMOSRegister.secondsAlarm, 0x05)
        clock.advance(7_200_000_000_000)
        #expect(read(rtc, CMOSRegister.c) & 0x20 != 0)
        clock.advance(10_000_000_000)
        #expect(read(rtc, CMOSRegister.c) & 0x20 == 0)
        write(rtc, CMOSRegister.b, 0x00) // 12-hour BCD: 10 PM is 0x90
        write(rtc, CMOSRegister.hoursAlarm, 0x90)
        write(rtc, CMOSRegister.minutesAlarm, 0xC0)
        write(rtc, CMOSRegister.secondsAlarm, 0xC0)
        clock.advance(60_000_000_000) // 00:16: no second of the 10 PM hour in the last minute
        #expect(read(rtc, CMOSRegister.c) & 0x20 == 0)
        clock.advance(86_400_000_000_000) // a whole day idle: every time of day was crossed
        #expect(read(rtc, CMOSRegister.c) & 0x20 != 0)
    }

    /// The alarm flag against a plain reference: AF after an idle stretch says whether any
    /// second crossed in it has a time of day each alarm byte matches (its encoding in the data
    /// mode of register B, or 0xC0-0xFF), over every mode, encodable and other alarm bytes, and
    /// stretches from none to more than a day.
    @Test func alarmFlagAgreesWithAReferenceOverModesBytesAndStretches() {
        func encoded(_ value: Int64, hours: Bool, mode: UInt8) -> UInt8 {
            var value = value, pm = false
            if hours, mode & 0x02 == 0 { (pm, value) = (value >= 12, value % 12 == 0 ? 12 : value % 12) }
            let byte = mode & 0x04 != 0 ? UInt8(value) : UInt8((value / 10) << 4 | value % 10)
            return byte | (pm ? 0x80 : 0)
        }
        var seed: UInt64 = 0x5EED
        func random(_ bound: UInt64) -> UInt64 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return (seed >> 33) % bound
        }
        let rtc = self.rtc
        var wall: Int64 = 1_700_000_000 // the clock sits half a second past this
        var fired = 0
        for _ in 0..<300 {
            let mode = [0x00, 0x02, 0x04, 0x06][Int(random(4))] as UInt8
            write(rtc, CMOSRegister.b, mode)
            var alarm: [UInt8] = []
            for (register, count, hours) in [(CMOSRegister.hoursAlarm, 24, true), (CMOSRegister.minutesAlarm, 60, false), (CMOSRegister.secondsAlarm, 60, false)] {
                let byte: UInt8 = switch random(4) {
                case 0: 0xC0 | UInt8(random(64))
                case 1: UInt8(random(256))
                default: encoded(Int64(random(UInt64(count))), hours: hours, mode: mode)
                }
                write(rtc, register, byte)
                alarm.append(byte)
            }
            _ = read(rtc, CMOSRegister.c)
            let stretch: Int64 = switch random(20) {
            case 0..<8: Int64(random(4))
            case 8..<14: Int64(random(200))
            case 14..<19: Int64(random(7200))
            default: Int64(random(130_000))
            }
            clock.advance(UInt64(stretch) * 1_000_000_000)
            var expected = false
            // The seconds crossed (a day of them at most: every time of day then).
            for second in stride(from: wall + stretch, to: max(wall, wall + stretch - 86_400), by: -1) {
                let time = second % 86400
                let values = [time / 3600, time / 60 % 60, time % 60]
                if zip(alarm, values).enumerated().allSatisfy({ field, pair in
                    pair.0 & 0xC0 == 0xC0 || pair.0 == encoded(pair.1, hours: field == 0, mode: mode)
                }) { expected = true; break }
            }
            wall += stretch
            let flag = read(rtc, CMOSRegister.c) & 0x20 != 0
            #expect(flag == expected, "mode \(mode), alarm \(alarm), \(stretch) s idle up to \(wall)")
            if flag { fired += 1 }
        }
        #expect(fired > 30 && fired < 270) // both answers were exercised
    }

    @Test func ramIsReadableAndWritable() {
        let rtc = self.rtc
        #expect(read(rtc, 0x34) == 0x12)
        write(rtc, 0x50, 0xAB)
        #expect(read(rtc, 0x50) == 0xAB)
        write(rtc, CMOSRegister.c, 0xFF) // read-only
        #expect(read(rtc, CMOSRegister.c) == 0)
        #expect(rtc.read(offset: 5, size: 1) == 0xFF)
    }
}
