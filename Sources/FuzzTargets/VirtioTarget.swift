import Devices
import VMMCore

/// The virtio-mmio transport, its split queues and the balloon behind them, against 1 MiB of
/// real guest memory (inflated pages are really discarded). Host actions:
/// 0: store into guest memory (a 32-bit address, a width byte, the value) - how a program builds
///    rings and descriptors as a driver would; 1: set the balloon target (32-bit pages, as the
///    API and the coordinator do); 2: read the model's statistics and counters.
enum VirtioTarget {
    static let base: UInt64 = 0xD000_0000
    static let memorySize = 1 << 20

    /// Returns what the balloon did (the tests check that the seeds reach deep).
    @discardableResult
    static func balloon(_ data: [UInt8]) -> BalloonCounters {
        let memory = try! GuestMemory(ranges: [(start: 0, size: memorySize)])
        let clock = FuzzClock()
        let device = VirtioMMIODevice(model: BalloonModel(targetPages: 0, statsInterval: 1_000_000_000), memory: memory,
                                      interrupt: FuzzLine(), clock: clock, scheduler: ManualTimerScheduler())
        var program = program(device, clock)
        program.timed = [device]
        program.host = { action, input in
            switch action {
            case 0: store(&input, into: memory)
            case 1:
                let pages = UInt32(truncatingIfNeeded: input.little(4))
                device.withModel { model, context in model.setTarget(pages: pages, context: &context) }
            default:
                _ = device.withModel { model, _ in (model.statistics, model.counters, model.actualPages) }
            }
        }
        program.run(data)
        return device.withModel { model, _ in model.counters }
    }

    /// A device program over `device`'s registers, alone on an MMIO bus at `base`.
    static func program(_ device: any BusDevice, _ clock: FuzzClock) -> DeviceProgram {
        var bus = Bus()
        try! bus.insert(device, at: BusRange(base: base, length: VirtioMMIORegister.windowSize))
        return DeviceProgram(bus: bus, base: base, span: VirtioMMIORegister.windowSize, clock: clock)
    }

    /// Host action 0 of every virtio target: a 32-bit address, a width byte, the value.
    static func store(_ input: inout FuzzInput, into memory: GuestMemory) {
        let address = input.little(4), width = DeviceOperation.widths[Int(input.byte()) & 3]
        let value = input.little(width)
        switch width {
        case 1: try? memory.store(UInt8(truncatingIfNeeded: value), at: address)
        case 2: try? memory.store(UInt16(truncatingIfNeeded: value), at: address)
        case 4: try? memory.store(UInt32(truncatingIfNeeded: value), at: address)
        default: try? memory.store(value, at: address)
        }
    }

    /// virtio-net over the same transport. Host actions: 0: store into guest memory; 1: a frame
    /// from the host (a 16-bit length, then that many bytes of the input) delivered as the worker
    /// does; 2: the worker takes the outbox; 3: an announcement (as after a restore); 4: the
    /// link goes down or up.
    @discardableResult
    static func net(_ data: [UInt8]) -> NetCounters {
        let memory = try! GuestMemory(ranges: [(start: 0, size: memorySize)])
        let clock = FuzzClock()
        let device = VirtioMMIODevice(model: NetModel(mac: [2, 0, 0, 0, 0, 1], wake: {}), memory: memory, interrupt: FuzzLine(), clock: clock,
                                      scheduler: ManualTimerScheduler())
        var program = program(device, clock)
        program.host = { action, input in
            switch action {
            case 0: store(&input, into: memory)
            case 1:
                let length = Int(input.little(2)) % 2048
                let frame = (0..<length).map { _ in input.byte() }
                device.withQueues("fuzz") { model, context throws(VirtqueueError) in _ = try model.deliver(frame, context: &context) }
            case 2: _ = device.withModel { model, _ in model.takeOutbox() }
            case 3: _ = device.withModel { model, context in model.announce(context: &context) }
            default:
                let up = input.byte() & 1 == 1
                device.withModel { model, context in model.setLink(up: up, context: &context) }
            }
        }
        program.run(data)
        return device.withModel { model, _ in model.counters }
    }

    /// virtio-blk over the same transport, a 64-sector disk in memory behind it. Host actions:
    /// 0: store into guest memory; 1: the I/O worker's turn (take the queued requests, execute
    /// them against the disk and guest RAM, complete them); 2: read the counters. The worker
    /// also runs once at the end, so what the program queued is executed.
    @discardableResult
    static func block(_ data: [UInt8]) -> BlockCounters {
        let memory = try! GuestMemory(ranges: [(start: 0, size: memorySize)])
        let clock = FuzzClock()
        let disk = MemoryBlockBackend(sectors: 64)
        let model = BlockModel(capacityBytes: disk.size, readOnly: false, discardable: true, serial: "fuzz", wake: {})
        let device = VirtioMMIODevice(model: model, memory: memory, interrupt: FuzzLine(), clock: clock, scheduler: ManualTimerScheduler())
        let executor = BlockExecutor(backend: disk, memory: memory, serial: model.serial)
        func work() {
            let requests = device.withModel { model, context in model.takePending(context: &context) }
            let completions = requests.map(executor.execute)
            device.withQueues("fuzz") { model, context throws(VirtqueueError) in try model.complete(completions, context: &context) }
        }
        var program = program(device, clock)
        program.host = { action, input in
            switch action {
            case 0: store(&input, into: memory)
            case 1: work()
            default: _ = device.withModel { model, _ in (model.counters, model.busy) }
            }
        }
        program.run(data)
        work()
        return device.withModel { model, _ in model.counters }
    }
}
