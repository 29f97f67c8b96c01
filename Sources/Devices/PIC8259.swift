import VMMCore

/// The PC's cascaded pair of 8259A programmable interrupt controllers, in Swift: what deterministic
/// mode uses instead of KVM's in-kernel irqchip, so that the VMM alone decides at which exit an
/// interrupt reaches the vCPU (`acknowledge()` gives the vector for KVM_INTERRUPT).
///
/// Modelled after the 8259A data sheet as PCs use it: the master's IRQ 2 carries the slave;
/// ICW1-ICW4 initialisation (vector base, single or cascaded, ICW4's auto-EOI and special fully
/// nested mode); OCW1 masks; OCW2 non-specific, specific and rotating EOIs and set-priority; OCW3
/// IRR/ISR reads, poll mode and special mask mode; the PC's ELCR (ports 0x4D0/0x4D1) choosing
/// edge or level triggering per line. A request with no line left to give at acknowledge time
/// answers IRQ 7 of the chip (the spurious interrupt), as the hardware does.
public final class PIC8259Pair: Sendable {
    struct Chip: Equatable {
        var irr: UInt8 = 0, isr: UInt8 = 0, imr: UInt8 = 0
        /// Line levels as last seen, for edge detection.
        var levels: UInt8 = 0
        /// Level-triggered lines (ELCR).
        var elcr: UInt8 = 0
        var vectorBase: UInt8 = 0
        /// 0: initialised; 2, 3, 4: expecting ICW2, ICW3, ICW4.
        var icwStep = 0
        var needsICW4 = false, single = false
        var autoEOI = false, rotateOnAutoEOI = false, specialFullyNested = false
        var readISR = false, poll = false, specialMask = false
        /// The line with the highest priority is (lowestPriorityAfter + 0) mod 8: rotation.
        var priorityBase: UInt8 = 0

        /// The priority rank (0 highest) of the best line in `bits`, nil for none.
        func bestRank(_ bits: UInt8) -> Int? {
            for rank in 0..<8 where bits & (1 << ((rank + Int(priorityBase)) & 7)) != 0 { return rank }
            return nil
        }

        func line(ofRank rank: Int) -> Int { (rank + Int(priorityBase)) & 7 }

        /// The line this chip would signal now: requested, unmasked, and of higher priority
        /// than every line in service (special mask mode ignores masked ones in service; the
        /// master in special fully nested mode lets the slave interrupt itself).
        func pending(isMaster: Bool) -> Int? {
            guard let rank = bestRank(irr & ~imr) else { return nil }
            var inService = isr
            if specialMask { inService &= ~imr }
            if isMaster && specialFullyNested { inService &= ~(1 << 2) }
            let current = bestRank(inService) ?? 8
            return rank < current ? line(ofRank: rank) : nil
        }

        /// The line's input went to `high`: latches an edge (or follows a level) into IRR.
        mutating func set(line: Int, high: Bool) -> InterruptDelivery {
            let bit = UInt8(1) << line
            let before = irr & bit != 0
            if elcr & bit != 0 {
                if high { irr |= bit } else { irr &= ~bit }
            } else if high {
                if levels & bit == 0 { irr |= bit } else { return .coalesced }
            }
            if high { levels |= bit } else { levels &= ~bit }
            guard high else { return .delivered }
            if imr & bit != 0 { return .ignored }
            return before ? .coalesced : .delivered
        }

        /// INTA for `line`: in service unless auto-EOI, an edge's request consumed.
        mutating func acknowledge(line: Int) {
            let bit = UInt8(1) << line
            if elcr & bit == 0 { irr &= ~bit }
            if autoEOI {
                if rotateOnAutoEOI { priorityBase = UInt8((line + 1) & 7) }
            } else {
                isr |= bit
            }
        }

        mutating func writeCommand(_ value: UInt8) {
            if value & 0x10 != 0 { // ICW1
                let elcr = self.elcr
                self = Chip()
                self.elcr = elcr
                (needsICW4, single, icwStep) = (value & 0x01 != 0, value & 0x02 != 0, 2)
            } else if value & 0x08 != 0 { // OCW3
                if value & 0x04 != 0 { poll = true }
                if value & 0x02 != 0 { readISR = value & 0x01 != 0 }
                if value & 0x40 != 0 { specialMask = value & 0x20 != 0 }
            } else { // OCW2
                let level = Int(value & 7)
                switch value >> 5 {
                case 0: rotateOnAutoEOI = false
                case 4: rotateOnAutoEOI = true
                case 1, 5: // non-specific EOI (and rotate)
                    guard let rank = bestRank(isr) else { return }
                    let line = line(ofRank: rank)
                    isr &= ~(UInt8(1) << line)
                    if value >> 5 == 5 { priorityBase = UInt8((line + 1) & 7) }
                case 3: isr &= ~(UInt8(1) << level)
                case 6: priorityBase = UInt8((level + 1) & 7)
                case 7:
                    isr &= ~(UInt8(1) << level)
                    priorityBase = UInt8((level + 1) & 7)
                default: break
                }
            }
        }

        mutating func writeData(_ value: UInt8) {
            switch icwStep {
            case 2:
                vectorBase = value & 0xF8
                icwStep = single ? (needsICW4 ? 4 : 0) : 3
            case 3: icwStep = needsICW4 ? 4 : 0 // ICW3: the cascade wiring is fixed on a PC
            case 4:
                autoEOI = value & 0x02 != 0
                specialFullyNested = value & 0x10 != 0
                icwStep = 0
            default: imr = value // OCW1
            }
        }
    }

    struct State: Equatable {
        var master = Chip(), slave = Chip()

        /// The slave's output is the master's IRQ 2 input, followed as a level: a slave request
        /// withdrawn (masked, lowered) before the acknowledge leaves no request at the master.
        mutating func cascade() {
            if slave.pending(isMaster: false) != nil { master.irr |= 0x04 } else { master.irr &= ~0x04 }
        }

        mutating func poll(_ isMaster: Bool) -> UInt8 {
            let pending = isMaster ? master.pending(isMaster: true) : slave.pending(isMaster: false)
            guard let line = pending else { return 0 }
            if isMaster { master.acknowledge(line: line) } else { slave.acknowledge(line: line) }
            cascade()
            return 0x80 | UInt8(line)
        }
    }

    private let state = Locked(State())

    public init() {}

    /// ISA IRQ `irq` (0-15) went to `high`.
    @discardableResult
    public func setLevel(irq: Int, high: Bool) -> InterruptDelivery {
        guard (0..<16).contains(irq) else { return .ignored }
        return state.withLock { state in
            let delivery = irq < 8 ? state.master.set(line: irq, high: high) : state.slave.set(line: irq - 8, high: high)
            state.cascade()
            return delivery
        }
    }

    /// Whether the master asks the CPU for an interrupt (its INT output).
    public var hasPendingInterrupt: Bool { state.withLock { $0.master.pending(isMaster: true) != nil } }

    /// The CPU's interrupt acknowledge: the vector to deliver, with the line put in service.
    /// Without a request left (it went away since INT was seen) the chip's spurious IRQ 7.
    public func acknowledge() -> UInt8 {
        state.withLock { state in
            guard let line = state.master.pending(isMaster: true) else { return state.master.vectorBase | 7 }
            state.master.acknowledge(line: line)
            defer { state.cascade() }
            guard line == 2 else { return state.master.vectorBase | UInt8(line) }
            guard let slaveLine = state.slave.pending(isMaster: false) else { return state.slave.vectorBase | 7 }
            state.slave.acknowledge(line: slaveLine)
            return state.slave.vectorBase | UInt8(slaveLine)
        }
    }

    /// One chip's request, in-service and mask registers.
    public struct Registers: Sendable, Equatable {
        public let irr: UInt8, isr: UInt8, imr: UInt8
    }

    /// Registers of the master and the slave, for tests and the debugger.
    public var registers: (master: Registers, slave: Registers) {
        state.withLock { state in
            (Registers(irr: state.master.irr, isr: state.master.isr, imr: state.master.imr),
             Registers(irr: state.slave.irr, isr: state.slave.isr, imr: state.slave.imr))
        }
    }

    fileprivate func read(master: Bool, offset: UInt64) -> UInt64 {
        state.withLock { state in
            if offset == 1 { return UInt64(master ? state.master.imr : state.slave.imr) }
            let chip = master ? state.master : state.slave
            if chip.poll {
                if master { state.master.poll = false } else { state.slave.poll = false }
                return UInt64(state.poll(master))
            }
            return UInt64(chip.readISR ? chip.isr : chip.irr)
        }
    }

    fileprivate func write(master: Bool, offset: UInt64, value: UInt8) {
        state.withLock { state in
            if master {
                if offset == 0 { state.master.writeCommand(value) } else { state.master.writeData(value) }
            } else {
                if offset == 0 { state.slave.writeCommand(value) } else { state.slave.writeData(value) }
            }
            state.cascade()
        }
    }

    fileprivate func readELCR(_ offset: UInt64) -> UInt64 { state.withLock { UInt64(offset == 0 ? $0.master.elcr : $0.slave.elcr) } }

    fileprivate func writeELCR(_ offset: UInt64, _ value: UInt8) {
        state.withLock { state in
            // IRQ 0, 1, 2 (master) and 8, 13 (slave) are edge-triggered on every PC.
            if offset == 0 { state.master.elcr = value & 0xF8 } else { state.slave.elcr = value & 0xDE }
            state.cascade()
        }
    }

    /// The master's two ports (0x20, 0x21).
    public var masterPorts: some BusDevice { Ports(pic: self, master: true) }
    /// The slave's two ports (0xA0, 0xA1).
    public var slavePorts: some BusDevice { Ports(pic: self, master: false) }
    /// The edge/level control registers (0x4D0, 0x4D1).
    public var elcrPorts: some BusDevice { ELCR(pic: self) }

    final class Ports: BusDevice {
        let pic: PIC8259Pair, master: Bool
        init(pic: PIC8259Pair, master: Bool) { (self.pic, self.master) = (pic, master) }
        func read(offset: UInt64, size: Int) -> UInt64 { size == 1 ? pic.read(master: master, offset: offset) : Bus.mask(size) }
        func write(offset: UInt64, size: Int, value: UInt64) {
            guard size == 1 else { return }
            pic.write(master: master, offset: offset, value: UInt8(truncatingIfNeeded: value))
        }
    }

    final class ELCR: BusDevice {
        let pic: PIC8259Pair
        init(pic: PIC8259Pair) { self.pic = pic }
        func read(offset: UInt64, size: Int) -> UInt64 { size == 1 ? pic.readELCR(offset) : Bus.mask(size) }
        func write(offset: UInt64, size: Int, value: UInt64) {
            guard size == 1 else { return }
            pic.writeELCR(offset, UInt8(truncatingIfNeeded: value))
        }
    }
}

/// An ISA line of the Swift 8259 pair.
public struct PICInterruptLine: InterruptLine {
    public let pic: PIC8259Pair
    public let irq: Int

    public init(pic: PIC8259Pair, irq: Int) { (self.pic, self.irq) = (pic, irq) }

    public func setLevel(_ high: Bool) { pic.setLevel(irq: irq, high: high) }

    public func pulse() -> InterruptDelivery {
        let delivery = pic.setLevel(irq: irq, high: true)
        pic.setLevel(irq: irq, high: false)
        return delivery
    }
}
