import Synchronization
import Testing
import VMMCore
@testable import Devices

final class CapturedOutput: SerialOutput {
    let bytes = Mutex<[UInt8]>([])
    func write(_ byte: UInt8) { bytes.withLock { $0.append(byte) } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

final class RecordedLine: InterruptLine {
    let levels = Mutex<[Bool]>([])
    func setLevel(_ high: Bool) { levels.withLock { $0.append(high) } }
    var current: Bool { levels.withLock { $0.last ?? false } }
}

@Suite struct Serial16550Tests {
    let output = CapturedOutput()
    let line = RecordedLine()
    var uart: Serial16550<RecordedLine, CapturedOutput> { Serial16550(interrupt: line, output: output) }

    func reg(_ r: UInt64) -> UInt64 { r }

    @Test func transmitsBytesAndAlwaysShowsTransmitterEmpty() {
        let uart = self.uart
        for byte in Array("hi\n".utf8) { uart.write(offset: UARTRegister.data, size: 1, value: UInt64(byte)) }
        #expect(output.text == "hi\n")
        #expect(uart.read(offset: UARTRegister.lineStatus, size: 1) == 0x60)
    }

    @Test func aFIFOResetKeepsInputTheGuestWasNotShown() {
        let uart = self.uart
        #expect(uart.receive(Array("hi".utf8)) == 1, "FIFOs off: one byte fits")
        uart.write(offset: UARTRegister.interruptIdentification, size: 1, value: 0x07) // FIFOs on, both cleared
        #expect(uart.pendingInput == 1, "the guest never saw the byte: the reset keeps it")
        #expect(uart.receive(Array("i".utf8)) == 1)
        #expect(uart.read(offset: UARTRegister.lineStatus, size: 1) & 0x01 == 1) // now it has seen both
        uart.write(offset: UARTRegister.interruptIdentification, size: 1, value: 0x03)
        #expect(uart.pendingInput == 0, "bytes the guest was shown are dropped by a reset, as on a 16550")
        #expect(uart.receive(Array("ab".utf8)) == 2)
        #expect(uart.read(offset: UARTRegister.lineStatus, size: 1) & 0x01 == 1)
        #expect(uart.read(offset: UARTRegister.data, size: 1) == UInt64(UInt8(ascii: "a")))
        #expect(uart.read(offset: UARTRegister.data, size: 1) == UInt64(UInt8(ascii: "b")))
    }

    @Test func divisorLatchIsReachableOnlyWithDLAB() {
        let uart = self.uart
        uart.write(offset: UARTRegister.lineControl, size: 1, value: 0x83)
        uart.write(offset: UARTRegister.data, size: 1, value: 0x01)
        uart.write(offset: UARTRegister.interruptEnable, size: 1, value: 0x00)
        #expect(uart.read(offset: UARTRegister.data, size: 1) == 0x01)
        #expect(uart.read(offset: UARTRegister.interruptEnable, size: 1) == 0x00)
        uart.write(offset: UARTRegister.lineControl, size: 1, value: 0x03)
        #expect(output.text.isEmpty) // divisor writes are not data
        uart.write(offset: UARTRegister.interruptEnable, size: 1, value: 0xFF)
        #expect(uart.read(offset: UARTRegister.interruptEnable, size: 1) == 0x0F) // IER keeps 4 bits
        #expect(uart.read(offset: UARTRegister.lineControl, size: 1) == 0x03)
    }

    @Test func receivedDataSetsDataReadyAndRaisesItsInterrupt() {
        let uart = self.uart
        #expect(uart.receive([0x41]) == 1)
        #expect(uart.read(offset: UARTRegister.lineStatus, size: 1) & 0x01 == 1)
        #expect(!line.current) // not enabled yet
        uart.write(offset: UARTRegister.interruptEnable, size: 1, value: 0x01)
        #expect(line.current)
        #expect(uart.read(offset: UARTRegister.interruptIdentification, size: 1) == 0x04)
        #expect(uart.read(offset: UARTRegister.data, size: 1) == 0x41)
        #expect(!line.current)
        #expect(uart.read(offset: UARTRegister.interruptIdentification, size: 1) == 0x01)
        #expect(uart.read(offset: UARTRegister.lineStatus, size: 1) & 0x01 == 0)
    }

    @Test func receiveHoldsOneByteWithoutFIFOAndSixteenWithIt() {
        let uart = self.uart
        #expect(uart.receive(Array(repeating: 0x61, count: 20)) == 1)
        _ = uart.read(offset: UARTRegister.lineStatus, size: 1) // the guest sees it
        uart.write(offset: UARTRegister.interruptIdentification, size: 1, value: 0x07) // enable + clear
        #expect(uart.pendingInput == 0)
        #expect(uart.receive(Array(repeating: 0x61, count: 20)) == 16)
        #expect(uart.read(offset: UARTRegister.interruptIdentification, size: 1) & 0xC0 == 0xC0)
    }

    @Test func transmitterEmptyInterruptFollowsThe16550Rules() {
        let uart = self.uart
        uart.write(offset: UARTRegister.interruptEnable, size: 1, value: 0x02)
        #expect(line.current) // enabling THRI with THR empty raises it
        #expect(uart.read(offset: UARTRegister.interruptIdentification, size: 1) == 0x02)
        #expect(!line.current) // reading IIR while it reports THRE clears it
        uart.write(offset: UARTRegister.data, size: 1, value: 0x42)
        #expect(line.current) // the byte left at once: THR empty again
        uart.write(offset: UARTRegister.interruptEnable, size: 1, value: 0x00)
        #expect(!line.current)
        _ = uart.read(offset: UARTRegister.interruptIdentification, size: 1)
        uart.write(offset: UARTRegister.interruptEnable, size: 1, value: 0x02)
        #expect(uart.read(offset: UARTRegister.interruptIdentification, size: 1) == 0x02) // re-enabling raises again
    }

    @Test func receivedDataOutranksTransmitterEmpty() {
        let uart = self.uart
        uart.write(offset: UARTRegister.interruptEnable, size: 1, value: 0x03)
        _ = uart.receive([0x7A])
        #expect(uart.read(offset: UARTRegister.interruptIdentification, size: 1) == 0x04)
        _ = uart.read(offset: UARTRegister.data, size: 1)
        #expect(uart.read(offset: UARTRegister.interruptIdentification, size: 1) == 0x02)
    }

    @Test func loopbackRoutesDataAndModemLines() {
        let uart = self.uart
        uart.write(offset: UARTRegister.modemControl, size: 1, value: 0x1A) // LOOP | OUT2 | RTS
        // Lines were CTS | DSR | DCD (0xB0) before loopback; now CTS | DCD, and DSR fell: DDSR.
        #expect(uart.read(offset: UARTRegister.modemStatus, size: 1) == 0x92)
        #expect(uart.read(offset: UARTRegister.modemStatus, size: 1) == 0x90) // deltas cleared by the read
        uart.write(offset: UARTRegister.data, size: 1, value: 0x55)
        #expect(output.text.isEmpty)
        #expect(uart.read(offset: UARTRegister.data, size: 1) == 0x55)
        uart.write(offset: UARTRegister.data, size: 1, value: 1)
        uart.write(offset: UARTRegister.data, size: 1, value: 2) // no FIFO: overrun
        #expect(uart.read(offset: UARTRegister.lineStatus, size: 1) & 0x03 == 0x03)
        #expect(uart.read(offset: UARTRegister.lineStatus, size: 1) & 0x02 == 0) // OE cleared by reading LSR
        #expect(uart.receive([0x30]) == 0) // host input is cut off in loopback
        uart.write(offset: UARTRegister.modemControl, size: 1, value: 0x0B) // DTR | RTS | OUT2, no loop
        #expect(uart.read(offset: UARTRegister.modemStatus, size: 1) & 0xF0 == 0xB0)
    }

    @Test func scratchAndOddAccessesAreSafe() {
        let uart = self.uart
        uart.write(offset: UARTRegister.scratch, size: 1, value: 0x5A)
        #expect(uart.read(offset: UARTRegister.scratch, size: 1) == 0x5A)
        #expect(uart.read(offset: 9, size: 4) == 0xFF)
        uart.write(offset: UARTRegister.lineStatus, size: 2, value: 0xFFFF) // read-only: ignored
        #expect(uart.read(offset: UARTRegister.lineStatus, size: 1) == 0x60)
    }
}

@Suite struct DebugExitTests {
    @Test func statusIsValueShiftedWithLowBitSet() {
        let seen = Mutex<[UInt64]>([])
        let device = DebugExit { status in seen.withLock { $0.append(status) } }
        device.write(offset: 0, size: 1, value: 0)
        device.write(offset: 0, size: 1, value: 0x21)
        device.write(offset: 0, size: 4, value: 0x7F)
        #expect(seen.withLock { $0 } == [1, 0x43, 0xFF])
        #expect(device.read(offset: 0, size: 1) == 0)
    }
}
