import Testing
import VMMCore
@testable import Devices

/// The Swift 8259 pair of deterministic mode, programmed as the guest runtime and Linux do.
@Suite struct PIC8259Tests {
    /// ICW1-4 as a PC BIOS or kernel writes them: vectors 0x20 and 0x28, cascade on IRQ 2,
    /// 8086 mode; then the masks.
    static func initialised(autoEOI: Bool = false, masterMask: UInt8 = 0, slaveMask: UInt8 = 0) -> PIC8259Pair {
        let pic = PIC8259Pair()
        let master = pic.masterPorts, slave = pic.slavePorts
        master.write(offset: 0, size: 1, value: 0x11)
        slave.write(offset: 0, size: 1, value: 0x11)
        master.write(offset: 1, size: 1, value: 0x20)
        slave.write(offset: 1, size: 1, value: 0x28)
        master.write(offset: 1, size: 1, value: 0x04)
        slave.write(offset: 1, size: 1, value: 0x02)
        master.write(offset: 1, size: 1, value: autoEOI ? 0x03 : 0x01)
        slave.write(offset: 1, size: 1, value: autoEOI ? 0x03 : 0x01)
        master.write(offset: 1, size: 1, value: UInt64(masterMask))
        slave.write(offset: 1, size: 1, value: UInt64(slaveMask))
        return pic
    }

    static func eoi(_ pic: PIC8259Pair, slave: Bool = false) {
        if slave { pic.slavePorts.write(offset: 0, size: 1, value: 0x20) }
        pic.masterPorts.write(offset: 0, size: 1, value: 0x20)
    }

    @Test func anEdgeIsDeliveredOnceWithItsVectorAndHeldInServiceUntilEOI() {
        let pic = Self.initialised()
        #expect(!pic.hasPendingInterrupt)
        #expect(PICInterruptLine(pic: pic, irq: 4).pulse() == .delivered)
        #expect(pic.hasPendingInterrupt)
        #expect(pic.acknowledge() == 0x24)
        #expect(!pic.hasPendingInterrupt)
        #expect(pic.registers.master.isr == 0x10)
        // A lower-priority request waits for the EOI; a higher one interrupts the handler.
        pic.setLevel(irq: 6, high: true)
        #expect(!pic.hasPendingInterrupt)
        pic.setLevel(irq: 1, high: true)
        #expect(pic.hasPendingInterrupt && pic.acknowledge() == 0x21)
        Self.eoi(pic) // ends IRQ 1, the highest in service
        #expect(pic.registers.master.isr == 0x10)
        Self.eoi(pic)
        #expect(pic.hasPendingInterrupt && pic.acknowledge() == 0x26)
    }

    @Test func maskedLinesWaitAndUnmaskingDeliversThem() {
        let pic = Self.initialised(masterMask: 0xFF)
        #expect(PICInterruptLine(pic: pic, irq: 0).pulse() == .ignored)
        #expect(!pic.hasPendingInterrupt)
        pic.masterPorts.write(offset: 1, size: 1, value: 0xFE)
        #expect(pic.hasPendingInterrupt && pic.acknowledge() == 0x20)
        #expect(pic.masterPorts.read(offset: 1, size: 1) == 0xFE)
    }

    @Test func theSlaveCascadesThroughIRQ2() {
        let pic = Self.initialised()
        pic.setLevel(irq: 8, high: true)
        #expect(pic.hasPendingInterrupt)
        #expect(pic.acknowledge() == 0x28)
        #expect(pic.registers.master.isr == 0x04 && pic.registers.slave.isr == 0x01)
        Self.eoi(pic, slave: true)
        #expect(pic.registers.master.isr == 0 && pic.registers.slave.isr == 0)
        // Masked at the master, the slave's request waits.
        pic.masterPorts.write(offset: 1, size: 1, value: 0x04)
        pic.setLevel(irq: 8, high: false)
        pic.setLevel(irq: 8, high: true)
        #expect(!pic.hasPendingInterrupt)
    }

    @Test func levelTriggeredLinesFollowTheirLevelAndEdgesNeedANewRise() {
        let pic = Self.initialised()
        pic.elcrPorts.write(offset: 1, size: 1, value: 0xFF) // slave lines level-triggered, minus the fixed edge ones
        #expect(pic.elcrPorts.read(offset: 1, size: 1) == 0xDE)
        pic.setLevel(irq: 11, high: true)
        #expect(pic.acknowledge() == 0x2B)
        Self.eoi(pic, slave: true)
        #expect(pic.hasPendingInterrupt, "still high: asks again")
        pic.setLevel(irq: 11, high: false)
        #expect(!pic.hasPendingInterrupt)
        // An edge line held high does not ask twice.
        pic.setLevel(irq: 3, high: true)
        #expect(pic.acknowledge() == 0x23)
        Self.eoi(pic)
        #expect(PICInterruptLine(pic: pic, irq: 3).pulse() == .coalesced || !pic.hasPendingInterrupt)
    }

    @Test func aRequestGoneBeforeTheAcknowledgeIsTheSpuriousIRQ7() {
        let pic = Self.initialised()
        #expect(pic.acknowledge() == 0x27)
        #expect(pic.registers.master.isr == 0, "a spurious interrupt is not in service")
    }

    @Test func autoEOIPollAndRegisterReads() {
        let pic = Self.initialised(autoEOI: true)
        pic.setLevel(irq: 5, high: true)
        pic.masterPorts.write(offset: 0, size: 1, value: 0x0A) // OCW3: read IRR
        #expect(pic.masterPorts.read(offset: 0, size: 1) == 0x20)
        #expect(pic.acknowledge() == 0x25)
        pic.masterPorts.write(offset: 0, size: 1, value: 0x0B) // OCW3: read ISR
        #expect(pic.masterPorts.read(offset: 0, size: 1) == 0, "auto-EOI leaves nothing in service")
        pic.setLevel(irq: 5, high: false)
        pic.setLevel(irq: 7, high: true)
        pic.masterPorts.write(offset: 0, size: 1, value: 0x0C) // OCW3: poll
        #expect(pic.masterPorts.read(offset: 0, size: 1) == 0x87)
        #expect(!pic.hasPendingInterrupt, "the poll acknowledged it")
    }

    @Test func rotationMakesTheLastServedLineTheLowest() {
        let pic = Self.initialised()
        pic.setLevel(irq: 1, high: true)
        #expect(pic.acknowledge() == 0x21)
        pic.masterPorts.write(offset: 0, size: 1, value: 0xA0) // rotate on non-specific EOI
        pic.setLevel(irq: 0, high: true)
        pic.setLevel(irq: 3, high: true)
        #expect(pic.acknowledge() == 0x23, "after rotation IRQ 2 is highest, then 3, ..., 0 and 1 lowest")
    }

    @Test func hostileWritesNeverTrap() {
        let pic = PIC8259Pair()
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<20000 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            let value = state >> 8 & 0xFF
            switch state % 7 {
            case 0: pic.masterPorts.write(offset: state >> 3 & 1, size: 1, value: value)
            case 1: pic.slavePorts.write(offset: state >> 3 & 1, size: 1, value: value)
            case 2: pic.elcrPorts.write(offset: state >> 3 & 1, size: 1, value: value)
            case 3: pic.setLevel(irq: Int(state >> 16 % 20) - 2, high: state & 0x100 != 0)
            case 4: _ = pic.acknowledge()
            case 5: _ = pic.masterPorts.read(offset: state >> 3 & 1, size: Int(state >> 4 & 7) + 1)
            default: _ = pic.slavePorts.read(offset: 0, size: 1)
            }
        }
    }
}
