import Synchronization
import VMMCore

/// virtio-mmio register offsets (virtio 1.x, section 4.2.2; version 2 layout).
public enum VirtioMMIORegister {
    public static let magic: UInt64 = 0x000, version: UInt64 = 0x004, deviceID: UInt64 = 0x008
    public static let vendorID: UInt64 = 0x00C, deviceFeatures: UInt64 = 0x010, deviceFeaturesSel: UInt64 = 0x014
    public static let driverFeatures: UInt64 = 0x020, driverFeaturesSel: UInt64 = 0x024
    public static let queueSel: UInt64 = 0x030, queueNumMax: UInt64 = 0x034, queueNum: UInt64 = 0x038
    public static let queueReady: UInt64 = 0x044, queueNotify: UInt64 = 0x050
    public static let interruptStatus: UInt64 = 0x060, interruptACK: UInt64 = 0x064, status: UInt64 = 0x070
    public static let queueDescLow: UInt64 = 0x080, queueDescHigh: UInt64 = 0x084
    public static let queueDriverLow: UInt64 = 0x090, queueDriverHigh: UInt64 = 0x094
    public static let queueDeviceLow: UInt64 = 0x0A0, queueDeviceHigh: UInt64 = 0x0A4
    public static let configGeneration: UInt64 = 0x0FC, config: UInt64 = 0x100

    public static let magicValue: UInt32 = 0x7472_6976 // "virt"
    public static let vendor: UInt32 = 0x4D4D_5653 // "SVMM"
    /// Size of one device's register window.
    public static let windowSize: UInt64 = 0x200
}

/// Device status bits.
public enum VirtioStatus {
    public static let acknowledge: UInt32 = 1, driver: UInt32 = 2, driverOK: UInt32 = 4, featuresOK: UInt32 = 8
    public static let needsReset: UInt32 = 0x40, failed: UInt32 = 0x80
}

/// Feature bits every modern device offers.
public enum VirtioFeature {
    public static let version1: UInt64 = 1 << 32
}

/// What a device model sees of its transport while it handles a notification or a timer: its
/// queues, guest memory and the interrupt it may raise.
public struct VirtioContext: Sendable {
    public var queues: [SplitQueue]
    public let memory: GuestMemory
    public internal(set) var negotiatedFeatures: UInt64 = 0
    public internal(set) var driverReady = false
    /// Monotonic time (ns) of the access or timer being handled.
    public internal(set) var now: UInt64 = 0
    var interruptStatus: UInt32 = 0
    var configGeneration: UInt32 = 0

    /// Tell the driver that used buffers are waiting.
    public mutating func signalUsed() { interruptStatus |= 1 }
    /// Tell the driver that device configuration changed.
    public mutating func signalConfigChange() {
        interruptStatus |= 2
        configGeneration &+= 1
    }
}

/// The device-specific half of a virtio device, as a value the transport keeps under its lock.
public protocol VirtioModel: Sendable {
    static var deviceType: UInt32 { get }
    /// Device feature bits offered (VIRTIO_F_VERSION_1 is added by the transport).
    var offeredFeatures: UInt64 { get }
    var queueMaxSizes: [UInt16] { get }
    func readConfig(offset: UInt64, size: Int) -> UInt64
    mutating func writeConfig(offset: UInt64, size: Int, value: UInt64, context: inout VirtioContext)
    /// The driver notified queue `index` (only called while the driver is ready).
    mutating func queueNotified(_ index: Int, context: inout VirtioContext) throws(VirtqueueError)
    /// The driver reset the device.
    mutating func reset()
    /// When the model wants `timerFired` next (monotonic ns), or nil.
    func nextDeadline() -> UInt64?
    mutating func timerFired(now: UInt64, context: inout VirtioContext) throws(VirtqueueError)
}

/// A virtio device on the MMIO bus: the virtio-mmio (version 2) transport around a model.
///
/// KVM-free. Its interrupt line is high while InterruptStatus is non-zero. A queue error marks the
/// device DEVICE_NEEDS_RESET (with a configuration-change interrupt), is counted and reported
/// through `onError`, and stops the device until the driver resets it.
public final class VirtioMMIODevice<Line: InterruptLine, Model: VirtioModel>: BusDevice, TimedDevice {
    struct State: Sendable {
        var model: Model
        var context: VirtioContext
        var status: UInt32 = 0
        var deviceFeaturesSelect: UInt32 = 0
        var driverFeaturesSelect: UInt32 = 0
        var driverFeatures: UInt64 = 0
        var queueSelect: UInt32 = 0
        var queueErrors = 0
        var lineHigh = false

        var offered: UInt64 { model.offeredFeatures | VirtioFeature.version1 }
    }

    let state: Locked<State>
    let line: Line
    private let clock: any MonotonicClock
    let scheduler: any TimerScheduler
    private let onError: @Sendable (String) -> Void

    public init(model: Model, memory: GuestMemory, interrupt line: Line, clock: any MonotonicClock,
                scheduler: any TimerScheduler, onError: @escaping @Sendable (String) -> Void = { _ in }) {
        let queues = model.queueMaxSizes.map { SplitQueue(maxSize: $0) }
        state = Locked(State(model: model, context: VirtioContext(queues: queues, memory: memory)))
        self.line = line
        self.clock = clock
        self.scheduler = scheduler
        self.onError = onError
    }

    /// Runs `body` on the model under the device lock (the host-side API of a device), then
    /// updates the interrupt line.
    public func withModel<R>(_ body: (inout Model, inout VirtioContext) -> R) -> R {
        let now = clock.nanoseconds()
        let result = state.withLock { state in
            state.context.now = now
            let result = body(&state.model, &state.context)
            updateLine(&state)
            return result
        }
        scheduler.reschedule()
        return result
    }

    /// Like `withModel`, for host-side work that touches the queues (an I/O worker completing
    /// requests): a queue error marks the device as needing a reset, as one on the vCPU path does.
    public func withQueues(_ what: String, _ body: (inout Model, inout VirtioContext) throws(VirtqueueError) -> Void) {
        let now = clock.nanoseconds()
        state.withLock { state in
            state.context.now = now
            do { try body(&state.model, &state.context) } catch { fail(&state, "\(what): \(error)") }
            updateLine(&state)
        }
    }

    /// Queue errors seen since the device was created.
    public var queueErrors: Int { state.withLock { $0.queueErrors } }
    /// The device status register.
    public var deviceStatus: UInt32 { state.withLock { $0.status } }

    // MARK: registers

    public func read(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { state in
            if offset >= VirtioMMIORegister.config {
                return state.model.readConfig(offset: offset - VirtioMMIORegister.config, size: size)
            }
            guard size == 4 else { return 0 } // registers are 32-bit
            return UInt64(readRegister(offset, &state))
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let reschedule = state.withLock { state -> Bool in
            if offset >= VirtioMMIORegister.config {
                state.model.writeConfig(offset: offset - VirtioMMIORegister.config, size: size, value: value, context: &state.context)
                updateLine(&state)
                return false
            }
            guard size == 4 else { return false }
            let changed = writeRegister(offset, UInt32(truncatingIfNeeded: value), &state)
            updateLine(&state)
            return changed
        }
        if reschedule { scheduler.reschedule() }
    }

    private func readRegister(_ offset: UInt64, _ state: inout State) -> UInt32 {
        let queue = Int(state.queueSelect) < state.context.queues.count ? state.context.queues[Int(state.queueSelect)] : nil
        switch offset {
        case VirtioMMIORegister.magic: return VirtioMMIORegister.magicValue
        case VirtioMMIORegister.version: return 2
        case VirtioMMIORegister.deviceID: return Model.deviceType
        case VirtioMMIORegister.vendorID: return VirtioMMIORegister.vendor
        case VirtioMMIORegister.deviceFeatures:
            return state.deviceFeaturesSelect < 2 ? UInt32(truncatingIfNeeded: state.offered >> (32 * UInt64(state.deviceFeaturesSelect))) : 0
        case VirtioMMIORegister.queueNumMax: return UInt32(queue?.maxSize ?? 0)
        case VirtioMMIORegister.queueReady: return queue?.ready == true ? 1 : 0
        case VirtioMMIORegister.interruptStatus: return state.context.interruptStatus
        case VirtioMMIORegister.status: return state.status
        case VirtioMMIORegister.configGeneration: return state.context.configGeneration
        default: return 0
        }
    }

    /// Returns true when the model's deadlines may have changed.
    private func writeRegister(_ offset: UInt64, _ value: UInt32, _ state: inout State) -> Bool {
        let index = Int(state.queueSelect)
        let hasQueue = index < state.context.queues.count
        func setQueue(_ body: (inout SplitQueue) -> Void) {
            // Queue registers may only change while the queue is not ready.
            if hasQueue, !state.context.queues[index].ready { body(&state.context.queues[index]) }
        }
        func low(_ old: UInt64) -> UInt64 { old & 0xFFFF_FFFF_0000_0000 | UInt64(value) }
        func high(_ old: UInt64) -> UInt64 { old & 0xFFFF_FFFF | UInt64(value) << 32 }
        switch offset {
        case VirtioMMIORegister.deviceFeaturesSel: state.deviceFeaturesSelect = value
        case VirtioMMIORegister.driverFeaturesSel: state.driverFeaturesSelect = value
        case VirtioMMIORegister.driverFeatures:
            guard state.status & VirtioStatus.featuresOK == 0, state.driverFeaturesSelect < 2 else { break }
            let shift = 32 * UInt64(state.driverFeaturesSelect)
            state.driverFeatures = state.driverFeatures & ~(0xFFFF_FFFF << shift) | UInt64(value) << shift
        case VirtioMMIORegister.queueSel: state.queueSelect = value
        case VirtioMMIORegister.queueNum: setQueue { $0.size = UInt16(truncatingIfNeeded: value) }
        case VirtioMMIORegister.queueDescLow: setQueue { $0.descriptorTable = low($0.descriptorTable) }
        case VirtioMMIORegister.queueDescHigh: setQueue { $0.descriptorTable = high($0.descriptorTable) }
        case VirtioMMIORegister.queueDriverLow: setQueue { $0.driverArea = low($0.driverArea) }
        case VirtioMMIORegister.queueDriverHigh: setQueue { $0.driverArea = high($0.driverArea) }
        case VirtioMMIORegister.queueDeviceLow: setQueue { $0.deviceArea = low($0.deviceArea) }
        case VirtioMMIORegister.queueDeviceHigh: setQueue { $0.deviceArea = high($0.deviceArea) }
        case VirtioMMIORegister.queueReady:
            guard hasQueue else { break }
            if value & 1 == 0 {
                state.context.queues[index].ready = false
            } else if !state.context.queues[index].ready {
                do {
                    try state.context.queues[index].validate(memory: state.context.memory)
                    state.context.queues[index].ready = true
                } catch {
                    fail(&state, "queue \(index): \(error)")
                }
            }
        case VirtioMMIORegister.queueNotify:
            let queue = Int(value & 0xFFFF)
            guard state.status & VirtioStatus.driverOK != 0, state.status & VirtioStatus.needsReset == 0,
                  queue < state.context.queues.count, state.context.queues[queue].ready else { break }
            state.context.now = clock.nanoseconds()
            let deadline = state.model.nextDeadline()
            do { try state.model.queueNotified(queue, context: &state.context) } catch {
                fail(&state, "queue \(queue): \(error)")
            }
            // A notification can give the model a deadline (the balloon holds a fresh stats
            // buffer): the timer thread must look again, or it sleeps past it.
            return state.model.nextDeadline() != deadline
        case VirtioMMIORegister.interruptACK:
            state.context.interruptStatus &= ~value
        case VirtioMMIORegister.status:
            if value == 0 {
                reset(&state)
                return true
            }
            var status = value | state.status & VirtioStatus.needsReset // only a reset clears NEEDS_RESET
            if status & VirtioStatus.featuresOK != 0, state.status & VirtioStatus.featuresOK == 0 {
                let acceptable = state.driverFeatures & ~state.offered == 0 && state.driverFeatures & VirtioFeature.version1 != 0
                if !acceptable { status &= ~VirtioStatus.featuresOK } // the driver reads it back and gives up
                else { state.context.negotiatedFeatures = state.driverFeatures }
            }
            state.status = status
            let ready = status & VirtioStatus.driverOK != 0 && status & VirtioStatus.featuresOK != 0
            let becameReady = ready && !state.context.driverReady
            state.context.driverReady = ready
            if becameReady {
                // Buffers made available (and notified) before DRIVER_OK: Linux's balloon driver
                // primes its stats queue that way. Serve them now that the device is live.
                state.context.now = clock.nanoseconds()
                for queue in state.context.queues.indices where state.context.queues[queue].ready {
                    do { try state.model.queueNotified(queue, context: &state.context) } catch {
                        fail(&state, "queue \(queue): \(error)")
                        break
                    }
                }
            }
            return becameReady
        default:
            break
        }
        return false
    }

    private func reset(_ state: inout State) {
        state.model.reset()
        for index in state.context.queues.indices { state.context.queues[index].reset() }
        state.context.interruptStatus = 0
        state.context.negotiatedFeatures = 0
        state.context.driverReady = false
        state.status = 0
        state.driverFeatures = 0
        state.deviceFeaturesSelect = 0
        state.driverFeaturesSelect = 0
        state.queueSelect = 0
    }

    private func fail(_ state: inout State, _ message: String) {
        state.queueErrors += 1
        if state.status & VirtioStatus.needsReset == 0 {
            state.status |= VirtioStatus.needsReset
            state.context.signalConfigChange()
        }
        onError(message)
    }

    private func updateLine(_ state: inout State) {
        let high = state.context.interruptStatus != 0
        guard high != state.lineHigh else { return }
        state.lineHigh = high
        line.setLevel(high)
    }

    // MARK: timer

    public func nextDeadline() -> UInt64? {
        state.withLock { state in
            guard state.context.driverReady, state.status & VirtioStatus.needsReset == 0 else { return nil }
            return state.model.nextDeadline()
        }
    }

    public func fire(now: UInt64) {
        state.withLock { state in
            guard state.context.driverReady, state.status & VirtioStatus.needsReset == 0 else { return }
            state.context.now = now
            do { try state.model.timerFired(now: now, context: &state.context) } catch {
                fail(&state, "timer: \(error)")
            }
            updateLine(&state)
        }
    }
}
