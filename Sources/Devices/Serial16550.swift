import Synchronization
import VMMCore

/// Where a UART's transmitted bytes go.
public protocol SerialOutput: Sendable {
    func write(_ byte: UInt8)
}

/// 16550 register offsets.
public enum UARTRegister {
    public static let data: UInt64 = 0 // RBR (read) / THR (write); DLL with DLAB
    public static let interruptEnable: UInt64 = 1 // IER; DLM with DLAB
    public static let interruptIdentification: UInt64 = 2 // IIR (read) / FCR (write)
    public static let lineControl: UInt64 = 3
    public static let modemControl: UInt64 = 4
    public static let lineStatus: UInt64 = 5
    public static let modemStatus: UInt64 = 6
    public static let scratch: UInt64 = 7
}

/// 16550 bits of the line status register.
public enum UARTLineStatus {
    public static let dataReady: UInt8 = 0x01
    public static let overrunError: UInt8 = 0x02
    public static let transmitterHoldingEmpty: UInt8 = 0x20
    public static let transmitterEmpty: UInt8 = 0x40
}

/// 16550 bits of the interrupt enable register.
public enum UARTInterruptEnable {
    public static let receivedData: UInt8 = 0x01
    public static let transmitterEmpty: UInt8 = 0x02
    public static let lineStatus: UInt8 = 0x04
    public static let modemStatus: UInt8 = 0x08
}

/// 16550 values of IIR bits 0-3.
public enum UARTInterruptID {
    public static let none: UInt8 = 0x01
    public static let lineStatus: UInt8 = 0x06
    public static let receivedData: UInt8 = 0x04
    public static let transmitterEmpty: UInt8 = 0x02
    public static let modemStatus: UInt8 = 0x00
}

/// A 16550A UART as Linux's 8250 driver and simple guests use it.
///
/// It knows register offsets (0-7), not ports: the bus maps COM1 (0x3f8) or any other base.
/// Transmission is instant, so THR is always empty; received bytes queue in a 16-byte FIFO
/// (1 byte with FIFOs off). The interrupt output follows the 16550's IER/IIR priority rules.
/// Host input is never lost: the feeder keeps what does not fit (`receive` returns how much was
/// taken), and a FIFO reset drops only bytes the guest was already shown.
public final class Serial16550<Line: InterruptLine, Output: SerialOutput>: BusDevice {
    static var fifoCapacity: Int { 16 }

    struct State {
        var interruptEnable: UInt8 = 0
        var lineControl: UInt8 = 0x03 // 8N1
        var modemControl: UInt8 = 0
        var scratch: UInt8 = 0
        var divisor: UInt16 = 12 // 9600 baud
        var fifoEnabled = false
        var receive: [UInt8] = []
        /// How many bytes at the head of `receive` the guest has been shown (by LSR.DR or a
        /// received-data IIR). A FIFO reset through FCR drops only those: host input the guest has
        /// not seen yet waits for it (the runtime and Linux reset the FIFOs while starting, which
        /// used to eat the first bytes of piped input).
        var shown = 0
        var lineErrors: UInt8 = 0
        var transmitterEmptyPending = false
        var modemStatusDeltas: UInt8 = 0
        var interruptLevel = false

        var dlab: Bool { lineControl & 0x80 != 0 }
        var loopback: Bool { modemControl & 0x10 != 0 }
        var receiveCapacity: Int { fifoEnabled ? Serial16550.fifoCapacity : 1 }

        /// MSR bits 4-7: looped back from MCR in loopback mode, else CTS, DSR and DCD asserted.
        var modemLines: UInt8 {
            guard loopback else { return 0xB0 }
            let mcr = modemControl
            return (mcr & 0x02) << 3 | (mcr & 0x01) << 5 | (mcr & 0x04) << 4 | (mcr & 0x08) << 4
        }

        var interruptID: UInt8 {
            let ier = interruptEnable
            if ier & UARTInterruptEnable.lineStatus != 0, lineErrors != 0 { return UARTInterruptID.lineStatus }
            if ier & UARTInterruptEnable.receivedData != 0, !receive.isEmpty { return UARTInterruptID.receivedData }
            if ier & UARTInterruptEnable.transmitterEmpty != 0, transmitterEmptyPending { return UARTInterruptID.transmitterEmpty }
            if ier & UARTInterruptEnable.modemStatus != 0, modemStatusDeltas != 0 { return UARTInterruptID.modemStatus }
            return UARTInterruptID.none
        }

        var lineStatus: UInt8 {
            var value = UARTLineStatus.transmitterHoldingEmpty | UARTLineStatus.transmitterEmpty | lineErrors
            if !receive.isEmpty { value |= UARTLineStatus.dataReady }
            return value
        }

        /// Queues a received byte; a full FIFO drops it and flags an overrun.
        mutating func push(_ byte: UInt8) -> Bool {
            guard receive.count < receiveCapacity else {
                lineErrors |= UARTLineStatus.overrunError
                return false
            }
            receive.append(byte)
            return true
        }

        /// Records delta bits for modem lines that changed between `old` and the current lines.
        mutating func noteModemChange(from old: UInt8) {
            let new = modemLines
            let changed = old ^ new
            if changed & 0x10 != 0 { modemStatusDeltas |= 0x01 } // DCTS
            if changed & 0x20 != 0 { modemStatusDeltas |= 0x02 } // DDSR
            if old & 0x40 != 0, new & 0x40 == 0 { modemStatusDeltas |= 0x04 } // TERI
            if changed & 0x80 != 0 { modemStatusDeltas |= 0x08 } // DDCD
        }
    }

    let state = Locked(State())
    let line: Line
    private let output: Output

    public init(interrupt line: Line, output: Output) {
        self.line = line
        self.output = output
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        UInt64(state.withLock { state in
            let value = readRegister(offset, &state)
            updateInterrupt(&state)
            return value
        })
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        state.withLock { state in
            writeRegister(offset, UInt8(truncatingIfNeeded: value), &state)
            updateInterrupt(&state)
        }
    }

    /// Offers host input to the receiver; returns how many bytes fit in the FIFO (the caller keeps
    /// the rest and offers them again once the guest has read some).
    /// How many bytes `receive` would take now (0 in loopback mode).
    public var receiveRoom: Int {
        state.withLock { $0.loopback ? 0 : max(0, $0.receiveCapacity - $0.receive.count) }
    }

    public func receive(_ bytes: some Collection<UInt8>) -> Int {
        state.withLock { state in
            guard !state.loopback else { return 0 }
            var accepted = 0
            for byte in bytes {
                guard state.receive.count < state.receiveCapacity else { break }
                state.receive.append(byte)
                accepted += 1
            }
            updateInterrupt(&state)
            return accepted
        }
    }

    /// Bytes waiting in the receive FIFO.
    public var pendingInput: Int { state.withLock { $0.receive.count } }

    private func readRegister(_ offset: UInt64, _ state: inout State) -> UInt8 {
        switch offset {
        case UARTRegister.data:
            if state.dlab { return UInt8(truncatingIfNeeded: state.divisor) }
            guard !state.receive.isEmpty else { return 0 }
            state.shown = max(0, state.shown - 1)
            return state.receive.removeFirst()
        case UARTRegister.interruptEnable:
            return state.dlab ? UInt8(truncatingIfNeeded: state.divisor >> 8) : state.interruptEnable
        case UARTRegister.interruptIdentification:
            let id = state.interruptID
            if id == UARTInterruptID.transmitterEmpty { state.transmitterEmptyPending = false }
            if id == UARTInterruptID.receivedData { state.shown = state.receive.count }
            return id | (state.fifoEnabled ? 0xC0 : 0)
        case UARTRegister.lineControl:
            return state.lineControl
        case UARTRegister.modemControl:
            return state.modemControl
        case UARTRegister.lineStatus:
            let value = state.lineStatus
            state.lineErrors = 0
            state.shown = state.receive.count
            return value
        case UARTRegister.modemStatus:
            let value = state.modemLines | state.modemStatusDeltas
            state.modemStatusDeltas = 0
            return value
        case UARTRegister.scratch:
            return state.scratch
        default:
            return 0xFF
        }
    }

    private func writeRegister(_ offset: UInt64, _ value: UInt8, _ state: inout State) {
        switch offset {
        case UARTRegister.data:
            if state.dlab {
                state.divisor = state.divisor & 0xFF00 | UInt16(value)
            } else {
                if state.loopback { _ = state.push(value) } else { output.write(value) }
                // The byte leaves at once, so the holding register is empty again.
                state.transmitterEmptyPending = true
            }
        case UARTRegister.interruptEnable:
            if state.dlab {
                state.divisor = state.divisor & 0x00FF | UInt16(value) << 8
            } else {
                let enabling = value & ~state.interruptEnable
                state.interruptEnable = value & 0x0F
                // Enabling THRE interrupts while THR is empty raises one, as on the real part.
                if enabling & UARTInterruptEnable.transmitterEmpty != 0 { state.transmitterEmptyPending = true }
            }
        case UARTRegister.interruptIdentification: // FCR
            let enable = value & 0x01 != 0
            if enable != state.fifoEnabled || value & 0x02 != 0 {
                state.receive.removeFirst(state.shown)
                state.shown = 0
            }
            state.fifoEnabled = enable
        case UARTRegister.lineControl:
            state.lineControl = value
        case UARTRegister.modemControl:
            let old = state.modemLines
            state.modemControl = value & 0x1F
            state.noteModemChange(from: old)
        case UARTRegister.scratch:
            state.scratch = value
        default:
            break // LSR and MSR are read-only
        }
    }

    private func updateInterrupt(_ state: inout State) {
        let level = state.interruptID != UARTInterruptID.none
        if level != state.interruptLevel {
            state.interruptLevel = level
            line.setLevel(level)
        }
    }
}
