import Boot
import Devices
import Glibc
import Host
import KVM
import Logging
import VMMCore

/// Builds a Machine in named steps, each doing one thing:
/// load images -> pick the boot protocol -> create the VM (KVM, guest memory, memory slots,
/// in-kernel irqchip) -> add devices (one `add` per device, at its Platform window and IRQ) ->
/// create vCPUs -> boot (segments, MP table, the protocol's structures, each vCPU's entry state).
struct MachineBuilder {
    let config: VMConfig
    let logger: Logger

    /// What the device step hands the machine.
    struct Devices {
        var pio = Bus()
        var mmio = Bus()
        let serial: Serial16550<MachineInterruptLine, AnySerialOutput>
        let serialOutput: BufferedSerialOutput?
        /// A fault-tolerant pair's hold on the UART's output (`--ft-primary`, `--ft-backup`).
        var ftGate: FTSerialGate?
        var balloon: BalloonControl?
        var share: ShareDevice?
        var disks: [Disk] = []
        var nets: [NetworkInterface] = []
        /// ACPI S3 and the PM registers (with the interrupt controllers).
        var sleep: SleepState?
        /// The devices with state a snapshot saves, by the names its device section uses.
        var stateful: [(String, any SnapshotDevice)] = []
    }

    // MARK: 1. load images

    /// The kernel and the files handed to it (initrd, modules), read whole; none may be larger
    /// than guest RAM.
    func loadImages() throws(VMMError) -> (kernel: [UInt8], options: BootOptions) {
        let kernel = try ImageFile.read(config.imagePath, limit: config.memorySize)
        var options = BootOptions(imagePath: config.imagePath, ramSize: config.memorySize)
        options.format = config.format
        options.entry = config.entry
        options.loadAddress = config.loadAddress
        options.cpus = config.cpus
        options.interruptControllers = config.interruptControllers
        options.commandLine = config.commandLine
        options.virtioDevices = config.virtioDeviceCount
        options.acpi = config.acpi
        options.initrd = try config.initrd.map { path throws(VMMError) in BootFile(path: path, bytes: try ImageFile.read(path, limit: config.memorySize)) }
        for path in config.modules {
            options.modules.append(BootFile(path: path, bytes: try ImageFile.read(path, limit: config.memorySize)))
        }
        return (kernel, options)
    }

    // MARK: 2. pick the boot protocol

    /// The protocol for the kernel, its image checked against RAM and the areas the boot writes.
    /// The image's bytes live only while the machine is built: a stored copy would keep the
    /// kernel's whole loaded size (tens of MiB for a distribution kernel) in the VMM's RSS.
    func pickBootProtocol(_ kernel: [UInt8], options: BootOptions) throws(VMMError) -> any BootProtocol {
        do { return try BootProtocols.select(kernel, options: options) } catch { throw VMMError(error) }
    }

    // MARK: 3. create the VM

    /// KVM with the capabilities this configuration needs, guest memory, and the VM with its
    /// memory slots, TSS address and (with interrupt controllers) the in-kernel irqchip and PIT.
    /// A restore's `snapshot` puts its RAM in place before the memory slots exist.
    func createVM(snapshot: MachineSnapshot.Loaded? = nil) throws(VMMError) -> (kvm: KVMSystem, vm: VirtualMachine, memory: GuestMemory) {
        let kvm: KVMSystem
        do {
            kvm = try KVMSystem(path: config.kvmDevice)
            try kvm.require(KVMCapability.required)
            if config.interruptControllers { try kvm.require([.irqchip]) }
            if config.pit == .kernel { try kvm.require([.pit2]) }
        } catch { throw .kvmUnavailable(error) }
        let maxVCPUs = max(kvm.check(.maxVCPUs), 4) // KVM's documented fallback when the cap is absent
        guard config.cpus <= maxVCPUs else {
            throw .invalidConfig("cpu count \(config.cpus) exceeds KVM's limit of \(maxVCPUs)")
        }
        let memory: GuestMemory
        if let received = snapshot?.receivedMemory {
            memory = received
        } else { do {
            let progress = ProgressLine(what: "prefaulting guest memory")
            memory = try GuestMemory(ranges: Layout.ramRanges(size: config.memorySize).map { ($0.start, Int($0.size)) },
                                     hugePages: config.hugePages, prefault: config.prefault, mergeable: config.pageSharing,
                                     progress: { progress.update(done: $0, total: $1) })
            progress.finish()
        } catch { throw .memory(error) } }
        if let snapshot {
            try snapshot.checkMemoryMap(memory)
            try snapshot.loadMemory(memory, logger: logger)
        }
        do {
            let vm = try kvm.createVM()
            try vm.setTSSAddress(Layout.vmxTSS)
            for (slot, region) in memory.regions.enumerated() {
                try vm.setUserMemoryRegion(slot: UInt32(slot), guestAddress: region.guestStart,
                                           size: UInt64(region.size), hostAddress: region.hostAddress)
            }
            // Deterministic mode has the Swift 8259 pair instead: the VMM injects every interrupt.
            if config.interruptControllers && !config.deterministic {
                try vm.createIRQChip() // before any vCPU
                if config.pit == .kernel { try vm.createKernelPIT() }
            }
            return (kvm, vm, memory)
        } catch { throw .kvm(error) }
    }

    // MARK: 4. add devices

    /// Every device of this configuration, each at its Platform window, raising its Platform IRQ.
    /// A deterministic machine's devices read `deterministic`'s virtual clocks, raise its 8259's
    /// lines and are fired by its vCPU at exits.
    func addDevices(vm: VirtualMachine, memory: GuestMemory, control: RunControl, timers realTimers: TimerService,
                    deterministic: DeterministicPlatform? = nil) throws(VMMError) -> Devices {
        let pic = config.interruptControllers ? deterministic?.pic : nil
        let wiring = DeviceWiring(vm: vm, interruptControllers: config.interruptControllers, pic: pic, logger: logger)
        var devices = try serialDevices(wiring, exits: deterministic?.exits)
        if let pic {
            try devices.pio.add(pic.masterPorts, at: Platform.picMaster)
            try devices.pio.add(pic.slavePorts, at: Platform.picSlave)
            try devices.pio.add(pic.elcrPorts, at: Platform.picELCR)
        }
        try devices.pio.add(DebugExit { control.finish(.debugExit(status: $0)) }, at: Platform.debugExit)
        let clock: any MonotonicClock = deterministic?.clock ?? SystemMonotonicClock()
        let timers: any TimerHost = deterministic?.timers ?? realTimers
        // Not in deterministic mode: S3 parks the vCPU until a timer wakes it, and its timers
        // fire only at that vCPU's exits.
        if config.interruptControllers && deterministic == nil {
            let sleep = SleepState(control: control, memory: memory, clock: clock, sci: wiring.line(Platform.acpiPM)) {
                control.finish(.poweredOff)
            }
            try devices.pio.add(sleep.power, at: Platform.acpiPM)
            devices.sleep = sleep
        }
        // The RTC's interrupt also wakes a machine suspended to RAM (when the guest set RTC_EN).
        let sleep = devices.sleep
        let rtcLine = ObservedInterruptLine(line: wiring.line(Platform.cmos)) { sleep?.rtcInterrupt() }
        let wallClock: any WallClock = deterministic?.wallClock ?? SystemWallClock()
        let rtc = CMOSRTC(interrupt: rtcLine, clock: clock, wallClock: wallClock, scheduler: timers,
                          memory: Machine.cmosMemorySize(config.memorySize))
        try devices.pio.add(rtc, at: Platform.cmos)
        timers.add(rtc)
        let fwCfg = FwCfg(ramSize: config.memorySize, cpus: config.cpus)
        try devices.pio.add(fwCfg, at: Platform.fwCfg)
        try devices.pio.add(ShutdownPort { control.finish(.poweredOff) }, at: Platform.shutdown)
        try devices.pio.add(PowerControl.KeyboardControllerReset { control.finish(.reboot) }, at: Platform.keyboardReset)
        let resetControl = PowerControl.ResetControlRegister { control.finish(.reboot) }
        try devices.pio.add(resetControl, at: Platform.resetControl)
        devices.stateful += [("uart", devices.serial), ("rtc", rtc), ("fw_cfg", fwCfg), ("reset-control", resetControl)]
        try devices.pio.add(PowerControl.SleepControl(powerOffType: ACPITables.powerOffSleepType) { control.finish(.poweredOff) },
                            at: Platform.sleepControl)
        if config.pit == .emulated {
            let pit = PIT8254(interrupt: wiring.line(Platform.pit), clock: clock, scheduler: timers)
            try devices.pio.add(pit, at: Platform.pit)
            try devices.pio.add(pit.portB, at: Platform.systemControlB)
            timers.add(pit)
            devices.stateful.append(("pit", pit))
        }
        if config.balloon { try addBalloon(&devices, wiring, memory: memory, clock: clock, timers: timers, inputs: deterministic?.inputs) }
        // Disks and networks (refused in deterministic mode) complete on threads of their own.
        for index in config.disks.indices {
            try addDisk(&devices, index: index, slot: Platform.virtio((config.balloon ? 1 : 0) + index), wiring, memory: memory, clock: clock, timers: realTimers)
        }
        for index in config.nets.indices {
            let slot = Platform.virtio((config.balloon ? 1 : 0) + config.disks.count + index)
            let id = config.netID(index)
            let interface = try NetworkInterface(id: id, tap: config.nets[index].tap, mac: config.netMAC(index), memory: memory,
                                                 line: wiring.line(slot), clock: clock, timers: realTimers, logger: logger)
            devices.nets.append(interface)
            try devices.mmio.add(interface.device, at: slot)
            devices.stateful.append(("virtio-net \(id)", interface))
        }
        if config.testDevices { try addTestDevices(&devices, wiring, memory: memory) }
        if let share = config.share { try addShare(&devices, share, memory: memory, clock: clock) }
        return devices
    }

    /// The buses with COM1 on them, writing through a thread of its own to stdout or a file (or
    /// nowhere).
    /// With fault tolerance the output goes through the pair's gate (and a file is appended to:
    /// the two members may share it).
    private func serialDevices(_ wiring: DeviceWiring, exits: ExitCounter?) throws(VMMError) -> Devices {
        let serialOutput: BufferedSerialOutput?
        let faultTolerant = config.ftPrimary != nil || config.ftBackup != nil
        switch config.serial {
        case .stdio: serialOutput = try BufferedSerialOutput(fd: STDOUT_FILENO)
        case .file(let path): serialOutput = try BufferedSerialOutput(path: path, append: faultTolerant)
        case .none: serialOutput = nil
        }
        var gate: FTSerialGate?
        if faultTolerant, let exits {
            gate = FTSerialGate(role: config.ftPrimary != nil ? .primary : .backup, inner: serialOutput, exits: exits)
        }
        let output = gate.map { AnySerialOutput($0) } ?? serialOutput.map { AnySerialOutput($0) } ?? AnySerialOutput(DiscardOutput())
        var devices = Devices(serial: Serial16550(interrupt: wiring.line(Platform.com1), output: output), serialOutput: serialOutput, ftGate: gate)
        try devices.pio.add(devices.serial, at: Platform.com1)
        return devices
    }

    /// The virtio-balloon as virtio-mmio device 0.
    private func addBalloon(_ devices: inout Devices, _ wiring: DeviceWiring, memory: GuestMemory,
                            clock: any MonotonicClock, timers: any TimerHost, inputs: ExternalInputs?) throws(VMMError) {
        let model = BalloonModel(targetPages: UInt32(clamping: config.balloonTarget / BalloonModel.pageSize),
                                 statsInterval: UInt64(config.balloonStatsInterval * 1e9), deflateOnOOM: config.balloonDeflateOnOOM)
        let slot = Platform.virtio(0)
        let device = VirtioMMIODevice(model: model, memory: memory, interrupt: wiring.line(slot), clock: clock, scheduler: timers,
                                      onError: { [logger] in logger.warning("virtio-balloon: \($0); the device needs a reset") })
        try devices.mmio.add(device, at: slot)
        timers.add(device)
        devices.balloon = BalloonControl(device: device, inputs: inputs)
        devices.stateful.append(("virtio-balloon", device))
    }

    /// Disk `index` (`--disk`) as a virtio-blk device in its slot, with its I/O worker.
    private func addDisk(_ devices: inout Devices, index: Int, slot: PlatformDevice, _ wiring: DeviceWiring, memory: GuestMemory,
                         clock: any MonotonicClock, timers: TimerService) throws(VMMError) {
        let disk = config.disks[index], id = config.diskID(index)
        let backend: FileBlockBackend
        do { backend = try FileBlockBackend(path: disk.path, readOnly: disk.readOnly) } catch { throw .disk(error.description) }
        let device = try Disk(id: id, backend: backend, memory: memory, line: wiring.line(slot), clock: clock, timers: timers, logger: logger)
        devices.disks.append(device) // before anything below can fail: the machine's teardown stops its worker
        try devices.mmio.add(device.device, at: slot)
        devices.stateful.append(("virtio-blk \(id)", device))
    }

    /// The file hypercall device of `--share`: its doorbell ports and its MMIO window.
    private func addShare(_ devices: inout Devices, _ share: ShareConfig, memory: GuestMemory, clock: any MonotonicClock) throws(VMMError) {
        let directory: ShareDirectory
        do { directory = try ShareDirectory(path: share.path, readOnly: share.readOnly) } catch { throw .invalidConfig(error.description) }
        let device = ShareDevice(share: directory, memory: memory, clock: clock)
        try devices.pio.add(device.ports, at: Platform.shareDoorbells)
        try devices.mmio.add(device.window, at: Platform.shareWindow)
        devices.share = device
    }

    /// QEMU's pc-testdev ports and memory window (`--test-devices`), for kvm-unit-tests-style guests.
    private func addTestDevices(_ devices: inout Devices, _ wiring: DeviceWiring, memory: GuestMemory) throws(VMMError) {
        let scratch = PCTestDevice.Scratch(size: 4), byteScratch = PCTestDevice.Scratch(size: 4)
        try devices.pio.add(scratch, at: Platform.TestDevices.scratch)
        try devices.pio.add(PCTestDevice.PageFlush { try? memory.remapPage($0) }, at: Platform.TestDevices.pageFlush)
        try devices.pio.add(byteScratch, at: Platform.TestDevices.byteScratch)
        let lines = (0..<UInt32(Platform.TestDevices.irqLines.window.length)).map { wiring.line(gsi: $0) }
        try devices.pio.add(PCTestDevice.IRQLines(lines: lines), at: Platform.TestDevices.irqLines)
        let window = Platform.TestDevices.memory
        let memoryScratch = PCTestDevice.Scratch(size: Int(window.window.length))
        try devices.mmio.add(memoryScratch, at: window)
        devices.stateful += [("testdev-scratch", scratch), ("testdev-byte-scratch", byteScratch), ("testdev-memory", memoryScratch)]
    }

    // MARK: 5. create vCPUs

    /// One vCPU per configured CPU, each with its CPUID table and (with interrupt controllers)
    /// its local interrupts wired as PC firmware leaves them. A restore's `snapshot` gives the
    /// CPUID each vCPU saw (checked against this host).
    func createVCPUs(kvm: KVMSystem, vm: VirtualMachine, snapshot: MachineSnapshot.Loaded? = nil) throws(VMMError) -> (vcpus: [VCPU], cpuid: [[CPUIDEntry]]) {
        let supported: [CPUIDEntry]
        do { supported = try kvm.supportedCPUID() } catch { throw .kvm(error) }
        var vcpus: [VCPU] = [], cpuid: [[CPUIDEntry]] = []
        for index in 0..<config.cpus {
            let table = try snapshot?.cpuid(index, supported: supported, cpuCount: config.cpus)
                ?? CPUIDTable.build(supported: supported, vcpu: index, cpuCount: config.cpus, vendor: config.cpuidVendor,
                                    paravirtual: !config.deterministic)
            do {
                let vcpu = try vm.createVCPU(id: UInt32(index))
                try vcpu.setCPUID(table)
                if config.interruptControllers && !config.deterministic { try Machine.wireLocalInterrupts(vcpu) }
                vcpus.append(vcpu)
                cpuid.append(table)
            } catch { throw .kvm(error) }
        }
        return (vcpus, cpuid)
    }

    // MARK: 6. boot

    /// Writes the kernel's segments, the MP table (with interrupt controllers) and the boot
    /// protocol's structures, then puts each vCPU the protocol starts in its entry state; the
    /// others stay in reset until INIT/SIPI.
    func boot(_ protocolChosen: any BootProtocol, memory: GuestMemory, vcpus: [VCPU]) throws(VMMError) {
        var boot = protocolChosen
        do throws(BootError) {
            try boot.loadSegments(into: memory)
            if config.interruptControllers {
                do { try MPTable(cpuCount: config.cpus).write(to: memory) } catch { throw .memory(error) }
            }
            try boot.writeStructures(to: memory)
        } catch { throw VMMError(error) }
        do {
            for (index, vcpu) in vcpus.enumerated() {
                guard let entry = boot.entryState(vcpu: index, reset: try vcpu.specialRegisters()) else { continue }
                try vcpu.setSpecialRegisters(entry.special)
                try vcpu.setRegisters(entry.registers)
            }
        } catch { throw .kvm(error) }
    }
}

/// How devices get their interrupt lines: through KVM's irqchip, the Swift 8259 pair of
/// deterministic mode, or nowhere without interrupt controllers.
struct DeviceWiring {
    let vm: VirtualMachine
    let interruptControllers: Bool
    let pic: PIC8259Pair?
    let logger: Logger

    func line(gsi: UInt32) -> MachineInterruptLine {
        if let pic { return gsi < 16 ? .pic(PICInterruptLine(pic: pic, irq: Int(gsi))) : .disconnected }
        return interruptControllers ? .kvm(KVMInterruptLine(vm: vm, gsi: gsi, logger: logger)) : .disconnected
    }

    /// The line of `device`'s Platform IRQ.
    func line(_ device: PlatformDevice) -> MachineInterruptLine { line(gsi: device.irq ?? 0) }
}

extension Bus {
    /// Inserts `device` at its Platform window.
    mutating func add(_ device: any BusDevice, at platform: PlatformDevice) throws(VMMError) {
        do { try insert(device, at: platform.window.range) } catch { throw .bus(error) }
    }
}

extension VMMError {
    /// A boot error as the VMM reports it (same messages and exit statuses as before Boot was a module).
    init(_ error: BootError) {
        switch error {
        case .image(let path, let loader): self = .image(path: path, loader)
        case .memory(let memory): self = .memory(memory)
        case .invalid(let why): self = .invalidConfig(why)
        }
    }
}
