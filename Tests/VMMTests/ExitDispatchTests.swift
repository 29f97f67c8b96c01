import Debugging
import KVM
import Synchronization
import Testing
import VMMCore
@testable import VMM

/// A device that records every access and answers reads with `answer`.
final class RecordingDevice: BusDevice {
    let accesses = Mutex<[String]>([])
    let answer: UInt64
    init(answer: UInt64 = 0) { self.answer = answer }
    func read(offset: UInt64, size: Int) -> UInt64 {
        accesses.withLock { $0.append("r\(size)@\(offset)") }
        return answer
    }
    func write(offset: UInt64, size: Int, value: UInt64) {
        accesses.withLock { $0.append("w\(size)@\(offset)=0x\(String(value, radix: 16))") }
    }
    var log: [String] { accesses.withLock { $0 } }
}

/// Exits faked over ExitData.Storage and dispatched to buses of recording devices: no /dev/kvm.
@Suite struct ExitDispatchTests {
    let uart = RecordingDevice(answer: 0x60)
    let window = RecordingDevice(answer: 0x1234_5678)
    var dispatcher: ExitDispatcher {
        var pio = Bus(), mmio = Bus()
        try! pio.insert(uart, at: BusRange(base: 0x3F8, length: 8))
        try! mmio.insert(window, at: BusRange(base: 0xC000_0000, length: 0x200))
        return ExitDispatcher(pio: pio, mmio: mmio, unclaimed: nil)
    }

    @Test func stringPortOutputWritesEveryElementInOrder() {
        let storage = ExitData.Storage(size: 1, count: 3)
        for (index, byte) in [0x61, 0x62, 0x63].enumerated() { storage.data.setValue(UInt64(byte), at: index) }
        var stats = ExitStatistics(detailed: true)
        #expect(dispatcher.dispatch(.ioOut(port: 0x3F8, data: storage.data), stats: &stats) == .resume)
        #expect(uart.log == ["w1@0=0x61", "w1@0=0x62", "w1@0=0x63"])
        #expect(stats.counts[ExitEvent.Kind.ioOut.index] == 1 && stats.ports[0x3F8] == 1)
    }

    @Test func portInputIsAnsweredByTheDeviceOrAllOnes() {
        let claimed = ExitData.Storage(size: 1)
        var stats = ExitStatistics(detailed: false)
        _ = dispatcher.dispatch(.ioIn(port: 0x3FD, data: claimed.data), stats: &stats)
        #expect(claimed.data.value() == 0x60 && uart.log == ["r1@5"])
        let unclaimed = ExitData.Storage(size: 2, count: 2)
        _ = dispatcher.dispatch(.ioIn(port: 0x70, data: unclaimed.data), stats: &stats)
        #expect(unclaimed.data.value(at: 0) == 0xFFFF && unclaimed.data.value(at: 1) == 0xFFFF)
        #expect(stats.unclaimedReads == 2 && stats.counts[ExitEvent.Kind.ioIn.index] == 2)
    }

    @Test func mmioGoesToTheWindowAndUnclaimedWritesAreDroppedAndCounted() {
        let read = ExitData.Storage(size: 4)
        var stats = ExitStatistics(detailed: false)
        _ = dispatcher.dispatch(.mmioRead(address: 0xC000_0070, data: read.data), stats: &stats)
        #expect(read.data.value() == 0x1234_5678)
        let write = ExitData.Storage(size: 8)
        write.data.setValue(0xDEAD_BEEF_0000_0001)
        _ = dispatcher.dispatch(.mmioWrite(address: 0xC000_0050, data: write.data), stats: &stats)
        _ = dispatcher.dispatch(.mmioWrite(address: 0xD000_0000, data: write.data), stats: &stats)
        #expect(window.log == ["r4@112", "w8@80=0xdeadbeef00000001"])
        #expect(stats.unclaimedWrites == 1 && stats.counts[ExitEvent.Kind.mmioWrite.index] == 2)
    }

    @Test func terminalExitsAreClassifiedAndCounted() {
        var stats = ExitStatistics(detailed: false)
        let dispatcher = self.dispatcher
        #expect(dispatcher.dispatch(.hlt, stats: &stats) == .halted)
        #expect(dispatcher.dispatch(.shutdown, stats: &stats) == .guestFailure(.tripleFault, "KVM_EXIT_SHUTDOWN"))
        #expect(dispatcher.dispatch(.failEntry(reason: 0x21, cpu: 1), stats: &stats)
                == .guestFailure(.failedEntry, "hardware entry failure reason 0x21 on host cpu 1"))
        #expect(dispatcher.dispatch(.systemEvent(type: 2), stats: &stats) == .guestFailure(.unhandledExit, "system event 2"))
        #expect(dispatcher.dispatch(.unknown(reason: 99), stats: &stats) == .guestFailure(.unhandledExit, "exit reason 99"))
        #expect(dispatcher.dispatch(.internalError(suberror: 1, data: [5]), stats: &stats) == .internalError(suberror: 1, data: [5]))
        #expect(dispatcher.dispatch(.debug(exception: 3, pc: 0x1000, dr6: 0, dr7: 0), stats: &stats) == .debug(exception: 3, pc: 0x1000))
        #expect(dispatcher.dispatch(.interrupted, stats: &stats) == .interrupted)
        #expect(dispatcher.dispatch(.runFailed(errno: 14), stats: &stats) == .runFailed(14))
        // Every kind counted once; an interruption is no guest exit and a failed KVM_RUN no exit at all.
        #expect(stats.total == 7)
        for kind: ExitEvent.Kind in [.hlt, .shutdown, .failEntry, .systemEvent, .other, .internalError, .debug, .interrupted] {
            #expect(stats.counts[kind.index] == 1, "\(kind)")
        }
        #expect(stats.report(vcpu: 0).contains("hlt=1 shutdown=1 debug=1 system_event=1 fail_entry=1 internal_error=1 intr=1 other=1"))
    }

    @Test func internalErrorsAreNamed() {
        #expect(ExitDispatcher.internalErrorDetail(suberror: 1, data: [0x10, 0xff]) == "suberror 1 (emulation failure) data [0x10 0xff]")
        #expect(ExitDispatcher.internalErrorDetail(suberror: 9, data: []) == "suberror 9 data []")
    }

    @Test func kindIndexesMatchTheirPositions() {
        for (position, kind) in ExitEvent.Kind.allCases.enumerated() { #expect(kind.index == position, "\(kind)") }
    }
}
