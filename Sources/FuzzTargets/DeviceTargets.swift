import Boot
import Devices
import Synchronization
import VMMCore

/// Counts the UART's output bytes instead of printing them.
final class CountingSerialOutput: SerialOutput {
    private let count = Locked(0)
    func write(_ byte: UInt8) { count.withLock { $0 &+= 1 } }
    var written: Int { count.withLock { $0 } }
}

/// The fixed PC devices, each on a bus at its real ports, driven by a device program.
enum DeviceTargets {
    /// The 16550 UART at COM1. Host action 0 offers up to 32 input bytes (the console's input).
    /// Returns how many bytes the UART sent out.
    @discardableResult
    static func uart(_ data: [UInt8]) -> Int {
        var bus = Bus()
        let output = CountingSerialOutput()
        let uart = Serial16550(interrupt: FuzzLine(), output: output)
        try! bus.insert(uart, at: BusRange(base: 0x3f8, length: 8))
        var program = DeviceProgram(bus: bus, base: 0x3f8, span: 8, clock: FuzzClock())
        program.host = { _, input in
            let length = Int(input.byte() % 33)
            _ = uart.receive(input.take(length))
        }
        program.run(data)
        return output.written
    }

    /// The 8254 PIT at 0x40-0x43 and its gate/speaker port B at 0x61 (offset 0x21 of the window).
    static func pit(_ data: [UInt8]) {
        var bus = Bus()
        let clock = FuzzClock()
        let pit = PIT8254(interrupt: FuzzLine(), clock: clock, scheduler: ManualTimerScheduler())
        try! bus.insert(pit, at: BusRange(base: 0x40, length: 4))
        try! bus.insert(pit.portB, at: BusRange(base: 0x61, length: 1))
        var program = DeviceProgram(bus: bus, base: 0x40, span: 0x22, clock: clock)
        program.timed = [pit]
        program.run(data)
    }

    /// The CMOS RTC at 0x70-0x71, with BIOS memory-size bytes as the VMM sets them.
    static func rtc(_ data: [UInt8]) {
        var bus = Bus()
        let clock = FuzzClock()
        let rtc = CMOSRTC(interrupt: FuzzLine(), clock: clock, wallClock: clock, scheduler: ManualTimerScheduler(),
                          memory: [0x15: 0x80, 0x16: 0x02, 0x34: 0xF0, 0x35: 0x0F])
        try! bus.insert(rtc, at: BusRange(base: 0x70, length: 2))
        var program = DeviceProgram(bus: bus, base: 0x70, span: 2, clock: clock)
        program.timed = [rtc]
        program.run(data)
    }

    /// The ACPI PM registers at 0x620-0x62B over the fuzz clock (the program's waits move the PM
    /// timer); host actions: 0 presses the power button, 1 wakes the device with the RTC's event.
    @discardableResult
    static func acpiPM(_ data: [UInt8]) -> Int {
        var bus = Bus()
        let clock = FuzzClock()
        let sleeps = Locked(0)
        let pm = ACPIPowerManagement(clock: clock, sci: FuzzLine()) { _ in sleeps.withLock { $0 += 1 } }
        try! bus.insert(pm, at: Platform.acpiPM.window.range)
        var program = DeviceProgram(bus: bus, base: Platform.acpiPM.window.base, span: Platform.acpiPM.window.length, clock: clock)
        program.host = { action, _ in
            if action == 0 { pm.signal(ACPIPowerManagement.Event.powerButton) } else { pm.wake(by: ACPIPowerManagement.Event.rtc) }
        }
        program.run(data)
        return sleeps.withLock { $0 }
    }

    /// fw_cfg at 0x510-0x511; host action 0 writes a byte to one of the power ports the VMM
    /// puts beside it (shutdown 0x8900, keyboard-controller reset 0x64, reset control 0xCF9, ACPI
    /// sleep control 0x600). The first two input bytes size the machine fw_cfg describes.
    static func fwCfg(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let ram = input.little(1) << 24 | 1 << 20
        let cpus = Int(input.byte()) % 64 + 1
        var bus = Bus()
        try! bus.insert(FwCfg(ramSize: ram, cpus: cpus, maxRAM: ram << 1), at: Platform.fwCfg.window.range)
        let powerPorts: [UInt64] = [Platform.shutdown, Platform.keyboardReset, Platform.resetControl, Platform.sleepControl].map(\.window.base)
        try! bus.insert(ShutdownPort {}, at: BusRange(base: powerPorts[0], length: 1))
        try! bus.insert(PowerControl.KeyboardControllerReset {}, at: BusRange(base: powerPorts[1], length: 1))
        try! bus.insert(PowerControl.ResetControlRegister {}, at: BusRange(base: powerPorts[2], length: 1))
        try! bus.insert(PowerControl.SleepControl(powerOffType: 5) {}, at: BusRange(base: powerPorts[3], length: 1))
        var program = DeviceProgram(bus: bus, base: Platform.fwCfg.window.base, span: Platform.fwCfg.window.length, clock: FuzzClock())
        program.host = { _, input in
            _ = bus.write(powerPorts[Int(input.byte()) % powerPorts.count], size: 1, value: UInt64(input.byte()))
        }
        program.run(Array(data.dropFirst(2)))
    }

    /// pc-testdev's ports: scratch at 0xe0 and 0xe8, the page-flush port 0xe4 (which remaps a
    /// page of a 1 MiB guest memory, as the VMM does), and the 24 IRQ lines at 0x2000 (reached
    /// through host action 0, which writes a line level: the window is 0xe0-0xef).
    static func testDevice(_ data: [UInt8]) {
        let memory = try! GuestMemory(ranges: [(start: 0, size: 1 << 20)])
        var bus = Bus()
        try! bus.insert(PCTestDevice.Scratch(size: 4), at: Platform.TestDevices.scratch.window.range)
        try! bus.insert(PCTestDevice.PageFlush { try? memory.remapPage($0) }, at: Platform.TestDevices.pageFlush.window.range)
        try! bus.insert(PCTestDevice.Scratch(size: 4), at: Platform.TestDevices.byteScratch.window.range)
        let lines = (0..<Int(Platform.TestDevices.irqLines.window.length)).map { _ in FuzzLine() }
        try! bus.insert(PCTestDevice.IRQLines(lines: lines), at: Platform.TestDevices.irqLines.window.range)
        var program = DeviceProgram(bus: bus, base: Platform.TestDevices.scratch.window.base, span: 0x10, clock: FuzzClock())
        program.host = { _, input in
            _ = bus.write(Platform.TestDevices.irqLines.window.base + UInt64(input.byte() % 26), size: 1, value: UInt64(input.byte()))
        }
        program.run(data)
    }
}
