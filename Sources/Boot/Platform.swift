import Devices
import VMMCore

/// Where a fixed device answers the guest.
public enum DeviceWindow: Sendable, Equatable {
    case ports(UInt64, count: UInt64)
    case mmio(UInt64, size: UInt64)

    /// The window as a bus range (on the port bus or the MMIO bus).
    public var range: BusRange {
        switch self {
        case .ports(let base, let count): BusRange(base: base, length: count)
        case .mmio(let base, let size): BusRange(base: base, length: size)
        }
    }

    public var base: UInt64 { range.base }
    public var length: UInt64 { range.length }
}

/// One fixed device of the machine: its window, its interrupt, and how ACPI names it to a guest.
public struct PlatformDevice: Sendable, Equatable {
    /// How the DSDT describes a device: a four-character name and a hardware id.
    public struct ACPIName: Sendable, Equatable {
        public let name: String, hid: String
    }

    public let name: String
    public let window: DeviceWindow
    /// The ISA IRQ (and IOAPIC GSI) the device raises, if it raises one.
    public let irq: UInt32?
    /// Set for the devices the DSDT describes.
    public let acpi: ACPIName?

    init(_ name: String, _ window: DeviceWindow, irq: UInt32? = nil, acpi: ACPIName? = nil) {
        (self.name, self.window, self.irq, self.acpi) = (name, window, irq, acpi)
    }
}

/// Every fixed device of the swiftvmm PC, declared once: the bus registration, the DSDT, the
/// MP table's interrupt routing, the boot info's virtio fields and Linux's virtio_mmio command
/// line all read it. docs/guest-abi.md lists the same table for guest authors.
public enum Platform {
    public static let pit = PlatformDevice("pit", .ports(0x40, count: 4), irq: 0)
    /// The 8259 pair, emulated in Swift only in deterministic mode (otherwise KVM's irqchip
    /// answers these ports itself): master at 0x20, slave at 0xA0 (cascaded on IRQ 2), and the
    /// edge/level control registers (ELCR) at 0x4D0/0x4D1.
    public static let picMaster = PlatformDevice("pic-master", .ports(0x20, count: 2))
    public static let picSlave = PlatformDevice("pic-slave", .ports(0xA0, count: 2))
    public static let picELCR = PlatformDevice("pic-elcr", .ports(0x4D0, count: 2))
    /// Port 0x61: PIT channel 2's gate and output (the PC speaker's control bits).
    public static let systemControlB = PlatformDevice("system-control-b", .ports(0x61, count: 1))
    public static let keyboardReset = PlatformDevice("keyboard-controller-reset", .ports(0x64, count: 1))
    public static let cmos = PlatformDevice("cmos-rtc", .ports(0x70, count: 2), irq: 8, acpi: .init(name: "RTC_", hid: "PNP0B00"))
    public static let debugExit = PlatformDevice("debug-exit", .ports(UInt64(DebugExit.defaultPort), count: 1))
    public static let com1 = PlatformDevice("com1", .ports(0x3F8, count: 8), irq: 4, acpi: .init(name: "COM1", hid: "PNP0501"))
    public static let fwCfg = PlatformDevice("fw-cfg", .ports(0x510, count: 2))
    /// The ACPI hardware-reduced sleep control register (power-off), named by the FADT.
    public static let sleepControl = PlatformDevice("acpi-sleep-control", .ports(0x600, count: 1))
    /// The ACPI PM registers a full FADT names: PM1a event block (status, enable) at +0, PM1a
    /// control at +4, the PM timer at +8. The SCI they raise is IRQ 9.
    public static let acpiPM = PlatformDevice("acpi-pm", .ports(0x620, count: 12), irq: 9)
    /// The VMware backdoor (`--vmware-backdoor`): an `in` of port 0x5658 with EAX = "VMXh".
    public static let vmwareBackdoor = PlatformDevice("vmware-backdoor", .ports(0x5658, count: 1))
    public static let resetControl = PlatformDevice("reset-control", .ports(0xCF9, count: 1))
    public static let shutdown = PlatformDevice("shutdown", .ports(0x8900, count: 1))
    /// The file hypercalls of `--share`: doorbell port 0x640 + n for call n (CPL 0), and the
    /// MMIO window (identification, then doorbell n at +0x100 + 8 n, for CPL 3).
    public static let shareDoorbells = PlatformDevice("share-doorbells", .ports(0x640, count: Hypercall.portCount))
    public static let shareWindow = PlatformDevice("share-window", .mmio(Layout.mmioHoleStart + 0x10000, size: Hypercall.Window.size))

    /// The pc-testdev devices (`--test-devices`), at the ports and address kvm-unit-tests use.
    public enum TestDevices {
        public static let scratch = PlatformDevice("pc-testdev-scratch", .ports(0xE0, count: 4))
        public static let pageFlush = PlatformDevice("pc-testdev-flush", .ports(0xE4, count: 4))
        public static let byteScratch = PlatformDevice("pc-testdev-byte-scratch", .ports(0xE8, count: 4))
        public static let irqLines = PlatformDevice("pc-testdev-irq", .ports(0x2000, count: 24))
        public static let memory = PlatformDevice("pc-testdev-memory", .mmio(0xFF00_0000, size: 0x1_0000))
    }

    /// The devices the DSDT describes as ISA devices (Linux on a hardware-reduced machine sets up
    /// no ISA interrupts of its own, so these are how it finds the UART's and the RTC's).
    public static let acpiISADevices = [com1, cmos]

    /// virtio-mmio devices: device n's window at 0xC0000000 + n pages, its interrupt the n-th of
    /// `virtioIRQs`. Slots are handed out in order: the balloon, then disks, then networks.
    public static let virtioBase: UInt64 = Layout.mmioHoleStart
    public static let virtioStride: UInt64 = 0x1000
    /// ISA IRQs no fixed device raises (0 is the PIT's, 2 the cascade, 4 COM1's, 8 the RTC's, 9 the
    /// SCI; 1, 3 and 13 stay with their legacy meanings: keyboard, COM2, FPU error). All below 16,
    /// so a guest with only the 8259 pair reaches each one and the MP table's ISA routing covers it.
    public static let virtioIRQs: [UInt32] = [5, 6, 7, 10, 11, 12, 14, 15]
    public static var virtioFirstIRQ: UInt32 { virtioIRQs[0] }
    /// How many virtio devices one machine can have.
    public static var virtioMaximum: Int { virtioIRQs.count }

    /// virtio-mmio device `index` (0 ..< virtioMaximum); an index outside that names the nearest
    /// slot.
    public static func virtio(_ index: Int) -> PlatformDevice {
        let slot = min(max(0, index), virtioMaximum - 1)
        return PlatformDevice("virtio-mmio-\(slot)", .mmio(virtioBase + UInt64(slot) * virtioStride, size: VirtioMMIORegister.windowSize),
                              irq: virtioIRQs[slot], acpi: .init(name: "VR0\(slot)", hid: "LNRO0005"))
    }

    /// Linux's description of virtio device `index` when it has no ACPI or device tree to read:
    /// `virtio_mmio.device=SIZE@ADDRESS:IRQ`.
    public static func linuxCommandLine(virtio index: Int) -> String {
        let device = virtio(index)
        return "virtio_mmio.device=\(device.window.length)@0x\(hex(device.window.base)):\(device.irq ?? 0)"
    }

    /// Every fixed port device, for documentation and the overlap check in the tests.
    public static let portDevices = [pit, systemControlB, keyboardReset, cmos, debugExit, com1, fwCfg, sleepControl,
                                     resetControl, shutdown, shareDoorbells, acpiPM, vmwareBackdoor, TestDevices.scratch, TestDevices.pageFlush,
                                     TestDevices.byteScratch, TestDevices.irqLines]
}
