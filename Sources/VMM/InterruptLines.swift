import Devices
import KVM
import Logging
import VMMCore

/// An ISA interrupt line of the in-kernel PIC/IOAPIC, driven with KVM_IRQ_LINE.
struct KVMInterruptLine: InterruptLine {
    let vm: VirtualMachine
    let gsi: UInt32
    let logger: Logger

    func setLevel(_ high: Bool) {
        logger.trace("IRQ \(gsi) \(high ? "raised" : "lowered")")
        do {
            try vm.setIRQLine(gsi, level: high)
        } catch {
            logger.error("IRQ \(gsi): \(error)")
        }
    }

    func pulse() -> InterruptDelivery {
        logger.trace("IRQ \(gsi) pulsed")
        let status: Int32
        do { status = try vm.setIRQLineReportingStatus(gsi, level: true) } catch {
            // Without KVM_IRQ_LINE_STATUS (an old kernel), the edge as KVM_IRQ_LINE gives it.
            setLevel(true)
            setLevel(false)
            return .delivered
        }
        setLevel(false)
        return status > 0 ? .delivered : status == 0 ? .coalesced : .ignored
    }
}

/// The line a device gets: the in-kernel controller's, the Swift 8259's (deterministic mode),
/// or none without interrupt controllers.
enum MachineInterruptLine: InterruptLine {
    case kvm(KVMInterruptLine)
    case pic(PICInterruptLine)
    case disconnected

    func setLevel(_ high: Bool) {
        switch self {
        case .kvm(let line): line.setLevel(high)
        case .pic(let line): line.setLevel(high)
        case .disconnected: break
        }
    }

    func pulse() -> InterruptDelivery {
        switch self {
        case .kvm(let line): line.pulse()
        case .pic(let line): line.pulse()
        case .disconnected: .ignored
        }
    }
}

/// A line that also tells a listener each time it goes high: the RTC's, whose interrupt wakes a
/// machine suspended to RAM.
struct ObservedInterruptLine: InterruptLine {
    let line: MachineInterruptLine
    let onRaise: @Sendable () -> Void

    func setLevel(_ high: Bool) {
        line.setLevel(high)
        if high { onRaise() }
    }
}
