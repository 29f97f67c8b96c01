import Boot
import Devices
import KVM
import Synchronization
import VMMCore

/// ACPI S3, suspend to RAM. The guest writes SLP_TYP = \_S3 with SLP_EN: every vCPU parks (its
/// pending port access completed first), RAM and the devices stay as they are. A wake event (the
/// RTC's interrupt while RTC_EN is set, or the power button through the API) sets WAK_STS and the
/// event's status bit, then each vCPU resets itself before it runs again: vCPU 0 in real mode at
/// the FACS's firmware waking vector (CS = vector >> 4, IP = vector & 0xF), as firmware would
/// jump there, and the others back to waiting for INIT/SIPI. The devices are not reset.
final class SleepState: Sendable {
    private let control: RunControl
    private let memory: GuestMemory
    let power: ACPIPowerManagement
    /// Bumped by every wake; each vCPU applies the reset once per wake.
    private let wakes = Atomic<UInt64>(0)
    private let suspended = Atomic<Bool>(false)

    /// The PM device comes with it: its SLP_EN writes of \_S3 suspend, of \_S5 call
    /// `onPowerOff`; other sleep types are ignored.
    init(control: RunControl, memory: GuestMemory, clock: any MonotonicClock, sci: any InterruptLine,
         onPowerOff: @escaping @Sendable () -> Void) {
        let link = Link()
        power = ACPIPowerManagement(clock: clock, sci: sci) { type in
            switch type {
            case ACPITables.powerOffSleepType: onPowerOff()
            case ACPITables.suspendSleepType: link.target?.suspend()
            default: break
            }
        }
        (self.control, self.memory) = (control, memory)
        link.set(self)
    }

    /// How the PM device reaches its sleep state without owning it (no reference cycle).
    private final class Link: Sendable {
        private struct Weak { weak var value: SleepState? }
        private let target_ = Locked(Weak())
        var target: SleepState? { target_.withLock { $0.value } }
        func set(_ value: SleepState) { target_.withLock { $0.value = value } }
    }

    var isSuspended: Bool { suspended.load(ordering: .acquiring) }
    var wakeCount: UInt64 { wakes.load(ordering: .acquiring) }

    /// The guest asked for S3 (on the vCPU thread that wrote PM1 control).
    func suspend() {
        suspended.store(true, ordering: .releasing)
        control.setSleeping(true)
    }

    /// A wake event: ignored unless suspended (and, for the RTC, unless RTC_EN is set).
    @discardableResult
    func wake(by event: UInt16) -> Bool {
        guard isSuspended, event == ACPIPowerManagement.Event.powerButton || power.isEnabled(event) else { return false }
        guard suspended.compareExchange(expected: true, desired: false, ordering: .acquiringAndReleasing).exchanged else { return false }
        power.wake(by: event)
        wakes.add(1, ordering: .acquiringAndReleasing)
        control.setSleeping(false)
        return true
    }

    /// The RTC's line went high (its alarm, periodic or update interrupt).
    func rtcInterrupt() { wake(by: ACPIPowerManagement.Event.rtc) }

    /// The power button: wakes a suspended machine, otherwise sets PWRBTN_STS (an SCI when the
    /// guest enabled it).
    func powerButton() {
        if !wake(by: ACPIPowerManagement.Event.powerButton) { power.signal(ACPIPowerManagement.Event.powerButton) }
    }

    /// Run by each vCPU's own thread after a wake, before its next KVM_RUN.
    func applyWake(to vcpu: VCPU, index: Int) throws(KVMError) {
        guard index == 0 else {
            try vcpu.setMPState(.initReceived)
            return
        }
        let facs = ACPITables.facsAddress(base: Layout.acpiTables)
        let extended = (try? memory.load(UInt64.self, at: facs + ACPITables.extendedWakingVectorOffset)) ?? 0
        let vector = extended != 0 && extended < 0x10_0000 ? extended : UInt64((try? memory.load(UInt32.self, at: facs + ACPITables.wakingVectorOffset)) ?? 0)
        var sregs = try vcpu.specialRegisters()
        let selector = UInt16(truncatingIfNeeded: (vector >> 4) & 0xFFFF)
        sregs.cs = Segment(base: UInt64(selector) << 4, limit: 0xFFFF, selector: selector, type: 0xB, present: true,
                           dpl: 0, db: false, s: true, l: false, g: false)
        let data = Segment(base: 0, limit: 0xFFFF, selector: 0, type: 0x3, present: true, dpl: 0, db: false, s: true, l: false, g: false)
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data)
        sregs.gdt = DescriptorTable(base: 0, limit: 0xFFFF)
        sregs.idt = DescriptorTable(base: 0, limit: 0x3FF)
        (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) = (0x6000_0010, 0, 0, 0) // CD | NW | ET: as after reset
        var regs = Registers()
        regs.rip = vector & 0xF
        regs.rflags = 0x2
        try vcpu.setSpecialRegisters(sregs)
        try vcpu.setRegisters(regs)
        try vcpu.setMPState(.runnable)
    }
}
