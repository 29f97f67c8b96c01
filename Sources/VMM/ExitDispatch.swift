import Debugging
import KVM
import VMMCore

/// What the exit loop does after the dispatcher handled one exit.
enum ExitDisposition: Equatable {
    /// Run the vCPU again.
    case resume
    /// KVM_RUN was interrupted (a kick, immediate_exit): look at the run control's requests.
    case interrupted
    /// The vCPU halted; without a userspace interrupt source nothing can wake it.
    case halted
    /// The guest cannot go on: the outcome's kind and a detail line (the runner adds registers).
    case guestFailure(RunOutcome.GuestFailure, String)
    /// An emulation failure or similar internal error, for the runner to try with the vCPU
    /// itself (the PVM compatibility layer, a debugger's int3) before it fails the guest.
    case internalError(suberror: UInt32, data: [UInt64])
    /// A debug exit: a debugger's stop, or without one an unhandled exit.
    case debug(exception: UInt32, pc: UInt64)
    /// KVM_RUN itself failed with this errno.
    case runFailed(Int32)
}

/// Dispatches one exit: port and MMIO accesses to the buses (unclaimed reads answer all ones,
/// unclaimed writes are dropped, both counted and logged at a bounded rate), and every exit
/// counted by kind and classified into what the loop does next. It needs nothing but the exit
/// and the buses, so it is unit-tested with fake exits (ExitData.Storage) and fake devices.
struct ExitDispatcher {
    let pio: Bus
    let mmio: Bus
    let unclaimed: UnclaimedAccessLog?

    func dispatch(_ exit: VCPUExit, stats: inout ExitStatistics) -> ExitDisposition {
        switch exit {
        case .ioOut(let port, let data):
            stats.record(.ioOut)
            stats.recordPort(port)
            for element in 0..<data.count { write(pio, "port write", UInt64(port), data, element, &stats) }
        case .ioIn(let port, let data):
            stats.record(.ioIn)
            stats.recordPort(port)
            for element in 0..<data.count { read(pio, "port read", UInt64(port), data, element, &stats) }
        case .mmioWrite(let address, let data):
            stats.record(.mmioWrite)
            stats.recordMMIO(address)
            write(mmio, "mmio write", address, data, 0, &stats)
        case .mmioRead(let address, let data):
            stats.record(.mmioRead)
            stats.recordMMIO(address)
            read(mmio, "mmio read", address, data, 0, &stats)
        case .hlt:
            stats.record(.hlt)
            return .halted
        case .interrupted:
            stats.record(.interrupted)
            return .interrupted
        case .interruptWindow:
            stats.record(.interruptWindow) // deterministic mode injects at it
        case .shutdown:
            stats.record(.shutdown)
            return .guestFailure(.tripleFault, "KVM_EXIT_SHUTDOWN")
        case .failEntry(let reason, let cpu):
            stats.record(.failEntry)
            return .guestFailure(.failedEntry, "hardware entry failure reason 0x\(hex(reason)) on host cpu \(cpu)")
        case .internalError(let suberror, let data):
            stats.record(.internalError)
            return .internalError(suberror: suberror, data: data)
        case .debug(let exception, let pc, _, _):
            stats.record(.debug)
            return .debug(exception: exception, pc: pc)
        case .systemEvent(let type):
            stats.record(.systemEvent)
            return .guestFailure(.unhandledExit, "system event \(type)")
        case .runFailed(let code):
            return .runFailed(code)
        case .unknown(let reason):
            stats.record(.other)
            return .guestFailure(.unhandledExit, "exit reason \(reason)")
        }
        return .resume
    }

    /// The detail line of an internal error the runner could not handle.
    static func internalErrorDetail(suberror: UInt32, data: [UInt64]) -> String {
        let name = switch suberror {
        case 1: " (emulation failure)"
        case 2: " (simultaneous exceptions)"
        case 3: " (delivery event failure)"
        default: ""
        }
        return "suberror \(suberror)\(name) data [\(data.map { "0x\(hex($0))" }.joined(separator: " "))]"
    }

    private func write(_ bus: Bus, _ kind: String, _ address: UInt64, _ data: ExitData, _ element: Int, _ stats: inout ExitStatistics) {
        let value = data.value(at: element)
        guard !bus.write(address, size: data.size, value: value) else { return }
        stats.unclaimedWrites &+= 1
        unclaimed?.note(kind, address: address, size: data.size, value: value)
    }

    private func read(_ bus: Bus, _ kind: String, _ address: UInt64, _ data: ExitData, _ element: Int, _ stats: inout ExitStatistics) {
        if let value = bus.read(address, size: data.size) {
            data.setValue(value, at: element)
        } else {
            stats.unclaimedReads &+= 1
            unclaimed?.note(kind, address: address, size: data.size, value: nil)
            data.setValue(Bus.mask(data.size), at: element)
        }
    }
}
