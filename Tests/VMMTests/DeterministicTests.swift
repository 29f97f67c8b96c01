import Devices
import Testing
import VMMCore
@testable import VMM

/// Deterministic mode's pieces without KVM: the virtual clock and timers, held input, and the
/// fault-tolerant output gate.
@Suite struct DeterministicTests {
    final class Collect: SerialOutput, @unchecked Sendable {
        let bytes = Locked<[UInt8]>([])
        func write(_ byte: UInt8) { bytes.withLock { $0.append(byte) } }
        var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
    }

    final class Deadline: TimedDevice, @unchecked Sendable {
        var deadline: UInt64?
        var fired: [UInt64] = []
        let period: UInt64
        init(period: UInt64) { (self.period, deadline) = (period, period) }
        func nextDeadline() -> UInt64? { deadline }
        func fire(now: UInt64) {
            fired.append(now)
            deadline = (deadline ?? 0) + period
        }
    }

    /// Like the RTC: once its moment has passed it names the next one, so only the deadline
    /// taken before the clock moved can show it was due.
    final class NextBoundary: TimedDevice, @unchecked Sendable {
        let clock: VirtualClock
        var fired = 0
        init(clock: VirtualClock) { self.clock = clock }
        func nextDeadline() -> UInt64? { (clock.nanoseconds() / 1_000_000_000 + 1) * 1_000_000_000 }
        func fire(now: UInt64) { fired += 1 }
    }

    @Test func timersFireAtTheExitsTheClockReachesThem() {
        let clock = VirtualClock(), timers = VirtualTimers(), device = Deadline(period: 10_000), boundary = NextBoundary(clock: clock)
        timers.add(device)
        timers.add(boundary)
        for _ in 0..<25 { timers.advance(clock, to: clock.nanoseconds() + 1000) }
        #expect(device.fired == [10_000, 20_000])
        #expect(timers.nextDeadline() == 30_000)
        timers.advance(clock, to: 1_000_000_000) // a HLT's jump to a deadline
        #expect(boundary.fired == 1, "the second boundary the jump reached fired, though the device now names the next")
        timers.advance(clock, to: 5)
        #expect(clock.nanoseconds() == 1_000_000_000, "time never goes back")
    }

    @Test func theVirtualWallClockStartsWhereTheRecordingSaid() {
        let clock = VirtualClock()
        let wall = VirtualWallClock(startSeconds: 1_790_000_000, startNanoseconds: 999_999_000, clock: clock)
        #expect(wall.now() == (1_790_000_000, 999_999_000))
        clock.advance(by: 2_000)
        #expect(wall.now() == (1_790_000_001, 1_000))
        let far = VirtualWallClock(startSeconds: .max - 1, startNanoseconds: 0, clock: clock)
        clock.advance(to: .max)
        #expect(far.now().seconds == .max, "saturates, never traps")
    }

    @Test func heldInputIsTakenAtExitsAndBounded() {
        let inputs = ExternalInputs()
        #expect(!inputs.hasPending)
        #expect(inputs.offerConsole(Array(repeating: 0x41, count: 5000)) == ExternalInputs.capacity)
        inputs.offerBalloonTarget(64)
        #expect(inputs.hasPending)
        let first = inputs.take(consoleRoom: 16)
        #expect(first.console.count == 16 && first.balloonTarget == 64)
        #expect(inputs.hasPending, "the rest of the console bytes wait")
        let rest = inputs.take(consoleRoom: .max)
        #expect(rest.console.count == ExternalInputs.capacity - 16 && rest.balloonTarget == nil)
        #expect(!inputs.hasPending && !inputs.consoleClosed)
        inputs.closeConsole()
        #expect(inputs.consoleClosed)
    }

    @Test func thePrimaryReleasesOutputOnlyThroughAcknowledgedExits() {
        let sink = Collect(), exits = ExitCounter()
        let gate = FTSerialGate(role: .primary, inner: sink, exits: exits)
        for (exit, byte) in [(0, "a"), (1, "b"), (2, "c")] {
            exits.value.store(UInt64(exit), ordering: .relaxed)
            gate.write(byte.utf8.first!) // written while exit `exit + 1` is dispatched
        }
        #expect(sink.text.isEmpty && gate.heldCount == 3)
        gate.release(through: 2)
        #expect(sink.text == "ab")
        gate.openAll()
        gate.write(UInt8(ascii: "d"))
        #expect(sink.text == "abcd" && gate.heldCount == 0)
    }

    @Test func theBackupWritesWhatThePrimaryDidNot() {
        let sink = Collect()
        let gate = FTSerialGate(role: .backup, inner: sink, exits: ExitCounter())
        for byte in "hello, world".utf8 { gate.write(byte) }
        gate.primaryWrote(5)
        #expect(sink.text.isEmpty, "a backup writes nothing before it takes over")
        let how = gate.takeOver(ownOutput: nil)
        #expect(sink.text == ", world" && how.contains("last report (5 bytes)"))
        gate.write(UInt8(ascii: "!"))
        #expect(sink.text == ", world!")

        // Sharing the primary's file: its length decides, even past the last report.
        let shared = Collect()
        let second = FTSerialGate(role: .backup, inner: shared, exits: ExitCounter())
        for byte in "0123456789".utf8 { second.write(byte) }
        second.setPrimaryOutput(OutputIdentity(device: 7, inode: 9, size: 100, regular: true))
        second.primaryWrote(2)
        second.takeOver(ownOutput: OutputIdentity(device: 7, inode: 9, size: 106, regular: true))
        #expect(shared.text == "6789")
    }
}
