import Synchronization
import Testing
@testable import Devices

@Suite struct FwCfgTests {
    func item(_ device: FwCfg, _ key: UInt16, _ count: Int) -> [UInt8] {
        device.write(offset: 0, size: 2, value: UInt64(key))
        return (0..<count).map { _ in UInt8(device.read(offset: 1, size: 1)) }
    }

    @Test func itemsReadLittleEndianByteByByte() {
        let device = FwCfg(ramSize: 256 << 20, cpus: 4)
        #expect(item(device, FwCfg.Key.signature, 4) == Array("QEMU".utf8))
        #expect(item(device, FwCfg.Key.ramSize, 8) == [0, 0, 0, 0x10, 0, 0, 0, 0])
        #expect(item(device, FwCfg.Key.cpuCount, 2) == [4, 0])
        #expect(item(device, FwCfg.Key.maxRAM, 8) == [UInt8](repeating: 0, count: 8))
        // Unknown keys and reads past an item's end read zeros; selecting again starts over.
        #expect(item(device, 0x1234, 4) == [0, 0, 0, 0])
        #expect(item(device, FwCfg.Key.cpuCount, 4) == [4, 0, 0, 0])
        #expect(item(device, FwCfg.Key.signature, 2) == Array("QE".utf8))
        // A wider read takes consecutive bytes.
        device.write(offset: 0, size: 2, value: UInt64(FwCfg.Key.signature))
        #expect(device.read(offset: 1, size: 4) == 0x554D_4551)
    }

    @Test func dataWritesAndByteSelectorWritesAreIgnored() {
        let device = FwCfg(ramSize: 1 << 30, cpus: 1)
        device.write(offset: 0, size: 2, value: UInt64(FwCfg.Key.cpuCount))
        device.write(offset: 1, size: 1, value: 0x99)
        device.write(offset: 0, size: 1, value: 0) // the selector is 16 bits wide
        #expect(device.read(offset: 1, size: 1) == 1)
        #expect(device.read(offset: 0, size: 2) == 0)
    }
}

@Suite struct ShutdownPortTests {
    @Test func onlyTheWholeWordInOrderShutsDown() {
        let count = Mutex(0)
        let port = ShutdownPort { count.withLock { $0 += 1 } }
        func send(_ text: String) { for byte in text.utf8 { port.write(offset: 0, size: 1, value: UInt64(byte)) } }
        send("Shutdow")
        #expect(count.withLock { $0 } == 0)
        send("x")
        send("n")
        #expect(count.withLock { $0 } == 0)
        send("SShutdown") // a restart inside the word still matches
        #expect(count.withLock { $0 } == 1)
        send("Shutdown")
        #expect(count.withLock { $0 } == 2)
    }
}

@Suite struct PCTestDeviceTests {
    @Test func scratchKeepsBytesAtEveryWidthAndOffset() {
        let scratch = PCTestDevice.Scratch(size: 4)
        scratch.write(offset: 0, size: 4, value: 0x1234_5678)
        #expect(scratch.read(offset: 0, size: 4) == 0x1234_5678)
        #expect(scratch.read(offset: 2, size: 1) == 0x34)
        #expect(scratch.read(offset: 1, size: 2) == 0x3456)
        scratch.write(offset: 3, size: 1, value: 0xAB)
        #expect(scratch.read(offset: 0, size: 4) == 0xAB34_5678)
        // An access running past the end keeps to the window.
        scratch.write(offset: 2, size: 4, value: 0xFFFF_FFFF)
        #expect(scratch.read(offset: 0, size: 8) == 0xFFFF_5678)
        let window = PCTestDevice.Scratch(size: 0x1_0000)
        window.write(offset: 0xFFF8, size: 8, value: 0x0102_0304_0506_0708)
        #expect(window.read(offset: 0xFFF8, size: 8) == 0x0102_0304_0506_0708)
    }

    @Test func irqPortsSetTheirLineAndFlushGetsThePage() {
        let lines = (0..<24).map { _ in RecordedLine() }
        let device = PCTestDevice.IRQLines(lines: lines)
        device.write(offset: 10, size: 1, value: 1)
        device.write(offset: 10, size: 1, value: 0)
        device.write(offset: 3, size: 1, value: 2)
        device.write(offset: 24, size: 1, value: 1) // past the last line: ignored
        #expect(lines[10].levels.withLock { $0 } == [true, false])
        #expect(lines[3].current)
        #expect(lines.enumerated().allSatisfy { $0.offset == 3 || $0.offset == 10 || $0.element.levels.withLock { $0.isEmpty } })
        let flushed = Mutex<[UInt64]>([])
        PCTestDevice.PageFlush { page in flushed.withLock { $0.append(page) } }.write(offset: 0, size: 4, value: 0x20_0123)
        #expect(flushed.withLock { $0 } == [0x20_0000])
    }
}

@Suite struct PowerControlTests {
    @Test func resetAndPowerOffPortsFireOnlyOnTheirValues() {
        let resets = Mutex(0), powerOffs = Mutex(0)
        let keyboard = PowerControl.KeyboardControllerReset { resets.withLock { $0 += 1 } }
        keyboard.write(offset: 0, size: 1, value: 0xAA) // self-test: not a reset
        #expect(resets.withLock { $0 } == 0)
        #expect(keyboard.read(offset: 0, size: 1) == 0xFF) // no controller
        keyboard.write(offset: 0, size: 1, value: 0xFE)
        #expect(resets.withLock { $0 } == 1)
        let cf9 = PowerControl.ResetControlRegister { resets.withLock { $0 += 1 } }
        cf9.write(offset: 0, size: 1, value: 0x02) // system reset select, no RST_CPU
        #expect(resets.withLock { $0 } == 1 && cf9.read(offset: 0, size: 1) == 0x02)
        cf9.write(offset: 0, size: 1, value: 0x06)
        #expect(resets.withLock { $0 } == 2)
        let sleep = PowerControl.SleepControl(powerOffType: 5) { powerOffs.withLock { $0 += 1 } }
        sleep.write(offset: 0, size: 1, value: 5 << 2) // SLP_TYP without SLP_EN
        sleep.write(offset: 0, size: 1, value: 3 << 2 | 0x20) // another sleep state
        #expect(powerOffs.withLock { $0 } == 0)
        sleep.write(offset: 0, size: 1, value: 5 << 2 | 0x20)
        #expect(powerOffs.withLock { $0 } == 1)
    }
}
