import Host
import Debugging
import Devices
import Glibc
import KVM
import Loaders
import Placement
import Synchronization
import Logging
import Sandbox
import VMMCore

/// Ports of the fixed PC devices (see docs/guest-abi.md).
public enum Ports {
    public static let pit: UInt64 = 0x40
    public static let systemControlB: UInt64 = 0x61
    public static let cmos: UInt64 = 0x70
    public static let com1: UInt64 = 0x3f8
    public static let debugExit = UInt64(DebugExit.defaultPort)
}

/// A built VM: memory loaded, vCPUs in their entry state, devices on the buses. `run()` runs it;
/// `pause()`, `resume()` and `stop()` may be called from any other thread meanwhile.
public final class Machine: Sendable {
    public let config: VMConfig
    public let memory: GuestMemory
    let kvm: KVMSystem
    let vm: VirtualMachine
    let vcpus: [VCPU]
    let pio: Bus
    let mmio: Bus
    let serial: Serial16550<MachineInterruptLine, AnySerialOutput>
    /// Where the UART's bytes go, written by a thread of its own (nil for `--serial none`).
    let serialOutput: BufferedSerialOutput?
    let control: RunControl
    let timers = TimerService()
    /// The balloon, when the VM has one (`--balloon`).
    public let balloon: BalloonControl?
    /// Where vCPUs park for a debugger (`config.debug`).
    public let debugGate: DebugGate?
    let tracer: ExitTracer?
    let logger: Logger
    private let threads = Locked<[HostThreadHandle]>([])
    private let runners = Locked<[VCPURunner]>([])

    // A machine built but never run still ends its serial writer thread.
    deinit { serialOutput?.finish(timeout: 0) }

    /// Builds the VM described by `config`; every failure is a VMMError naming its cause.
    public init(config: VMConfig, logger: Logger = Logger(label: "swiftvmm")) throws(VMMError) {
        try config.validate()
        self.config = config
        self.logger = logger
        let bytes = try Self.readImage(config.imagePath, limit: config.memorySize)

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
        self.kvm = kvm

        let linux = config.format == .linux || (config.format == .auto && LinuxKernel.isBzImage(bytes))
        let linuxImage = linux ? try Self.parseLinux(bytes, config: config) : nil
        // The image and its segment bytes live only while the machine is built: a stored copy
        // would keep the kernel's whole loaded size (tens of MiB for a distribution kernel) in the
        // VMM's RSS for the rest of the run.
        let image: LoadedImage
        if let linuxImage { image = linuxImage.kernel } else { image = try Self.parseImage(bytes, config: config) }
        let multiboot = image.format == .multiboot
        guard config.initrd == nil || linux else { throw .invalidConfig("--initrd needs a Linux kernel (--kernel)") }
        let initrd = try config.initrd.map { path throws(VMMError) in (path: path, bytes: try Self.readImage(path, limit: config.memorySize)) }
        var modules: [(path: String, bytes: [UInt8])] = []
        for path in config.modules {
            guard multiboot else { throw .invalidConfig("--module needs a multiboot kernel") }
            modules.append((path, try Self.readImage(path, limit: config.memorySize)))
        }
        var multibootInfo: UInt32 = 0

        do {
            let progress = ProgressLine(what: "prefaulting guest memory")
            memory = try GuestMemory(ranges: Layout.ramRanges(size: config.memorySize).map { ($0.start, Int($0.size)) },
                                     hugePages: config.hugePages, prefault: config.prefault,
                                     progress: { progress.update(done: $0, total: $1) })
            progress.finish()
        } catch { throw .memory(error) }
        do {
            // Fresh guest memory reads as zero, so a segment's zero tail (.bss) is written only
            // where an earlier segment put bytes: writing all of it would make every page of a
            // large .bss resident before the guest runs.
            var written: [Range<UInt64>] = []
            for segment in image.segments {
                try memory.write(segment.bytes, at: segment.address)
                let start = segment.address + UInt64(segment.bytes.count)
                let tail = start..<(segment.address + segment.memorySize)
                for earlier in written where earlier.overlaps(tail) {
                    let overlap = tail.clamped(to: earlier)
                    try memory.fill(overlap.lowerBound, length: Int(overlap.upperBound - overlap.lowerBound))
                }
                written.append(segment.address..<start)
            }
            if config.interruptControllers {
                try MPTable(cpuCount: config.cpus).write(to: memory)
            }
        } catch { throw .memory(error) }
        if let linuxImage {
            try LinuxBoot.prepare(image: linuxImage, initrd: initrd, config: config, memory: memory)
        } else if multiboot {
            // The kernel's path first, then the user's arguments, as QEMU passes them.
            let commandLine = config.commandLine.isEmpty ? config.imagePath : config.imagePath + " " + config.commandLine
            multibootInfo = try MultibootBoot.place(image: image, modules: modules, commandLine: commandLine,
                                                    ramSize: config.memorySize, memory: memory)
        } else {
            do {
                let imageEnd = image.segments.map { $0.address + $0.memorySize }.max() ?? 0
                let imageStart = image.segments.map(\.address).min() ?? 0
                let longMode = config.entry == .long || image.format == .elf64
                if longMode { try BootState.writeLongModeTables(to: memory, ramSize: config.memorySize) }
                try BootInfo(ramSize: config.memorySize, cpuCount: UInt32(config.cpus), longMode: longMode,
                             commandLine: config.commandLine, imageStart: imageStart, imageEnd: imageEnd,
                             interruptControllers: config.interruptControllers,
                             mpTable: config.interruptControllers ? Layout.mpTable : 0,
                             virtioDevices: config.balloon ? 1 : 0).write(to: memory)
            } catch { throw .memory(error) }
        }

        let control = RunControl(vcpuCount: config.cpus)
        self.control = control
        debugGate = config.debug ? DebugGate(vcpuCount: config.cpus) : nil
        tracer = try config.traceExits.map { filter throws(VMMError) in try ExitTracer(filter: filter, path: config.traceFile) }
        do {
            vm = try kvm.createVM()
            try vm.setTSSAddress(Layout.vmxTSS)
            for (slot, region) in memory.regions.enumerated() {
                try vm.setUserMemoryRegion(slot: UInt32(slot), guestAddress: region.guestStart,
                                           size: UInt64(region.size), hostAddress: region.hostAddress)
            }
            if config.interruptControllers {
                try vm.createIRQChip() // before any vCPU
                if config.pit == .kernel { try vm.createKernelPIT() }
            }
        } catch { throw .kvm(error) }

        let vm = self.vm
        func line(_ gsi: UInt32) -> MachineInterruptLine {
            config.interruptControllers ? .kvm(KVMInterruptLine(vm: vm, gsi: gsi, logger: logger)) : .disconnected
        }
        let output: AnySerialOutput
        switch config.serial {
        case .stdio: serialOutput = try BufferedSerialOutput(fd: STDOUT_FILENO)
        case .file(let path): serialOutput = try BufferedSerialOutput(path: path)
        case .none: serialOutput = nil
        }
        output = serialOutput.map { AnySerialOutput($0) } ?? AnySerialOutput(DiscardOutput())
        serial = Serial16550(interrupt: line(IRQ.com1), output: output)
        let clock = SystemMonotonicClock()
        let rtc = CMOSRTC(interrupt: line(IRQ.rtc), clock: clock, wallClock: SystemWallClock(), scheduler: timers,
                          memory: Self.cmosMemorySize(config.memorySize))
        timers.add(rtc)
        var pio = Bus()
        do {
            try pio.insert(serial, at: BusRange(base: Ports.com1, length: 8))
            try pio.insert(DebugExit { control.finish(.debugExit(status: $0)) }, at: BusRange(base: Ports.debugExit, length: 1))
            try pio.insert(rtc, at: BusRange(base: Ports.cmos, length: 2))
            try pio.insert(FwCfg(ramSize: config.memorySize, cpus: config.cpus), at: BusRange(base: FwCfg.selectorPort, length: FwCfg.portCount))
            try pio.insert(ShutdownPort { control.finish(.poweredOff) }, at: BusRange(base: ShutdownPort.port, length: 1))
            try pio.insert(PowerControl.KeyboardControllerReset { control.finish(.reboot) },
                           at: BusRange(base: PowerControl.KeyboardControllerReset.port, length: 1))
            try pio.insert(PowerControl.ResetControlRegister { control.finish(.reboot) },
                           at: BusRange(base: PowerControl.ResetControlRegister.port, length: 1))
            try pio.insert(PowerControl.SleepControl(powerOffType: ACPITables.powerOffSleepType) { control.finish(.poweredOff) },
                           at: BusRange(base: LinuxBoot.sleepControlPort, length: 1))
            if config.testDevices {
                try pio.insert(PCTestDevice.Scratch(size: 4), at: BusRange(base: PCTestDevice.scratchPort, length: 4))
                let memory = self.memory
                try pio.insert(PCTestDevice.PageFlush { try? memory.remapPage($0) }, at: BusRange(base: PCTestDevice.flushPort, length: 4))
                try pio.insert(PCTestDevice.Scratch(size: 4), at: BusRange(base: PCTestDevice.byteScratchPort, length: 4))
                let lines = (0..<UInt32(PCTestDevice.irqLineCount)).map { line($0) }
                try pio.insert(PCTestDevice.IRQLines(lines: lines), at: BusRange(base: PCTestDevice.irqPort, length: UInt64(lines.count)))
            }
            if config.pit == .emulated {
                let pit = PIT8254(interrupt: line(IRQ.pit), clock: clock, scheduler: timers)
                try pio.insert(pit, at: BusRange(base: Ports.pit, length: 4))
                try pio.insert(pit.portB, at: BusRange(base: Ports.systemControlB, length: 1))
                timers.add(pit)
            }
        } catch { throw .bus(error) }
        self.pio = pio
        var mmio = Bus()
        if config.balloon {
            let model = BalloonModel(targetPages: UInt32(clamping: config.balloonTarget / BalloonModel.pageSize),
                                     statsInterval: UInt64(config.balloonStatsInterval * 1e9))
            let device = VirtioMMIODevice(model: model, memory: memory, interrupt: line(Layout.virtioFirstIRQ),
                                          clock: clock, scheduler: timers,
                                          onError: { [logger] in logger.warning("virtio-balloon: \($0); the device needs a reset") })
            do { try mmio.insert(device, at: BusRange(base: Layout.virtioMMIOBase, length: VirtioMMIORegister.windowSize)) } catch {
                throw .bus(error)
            }
            timers.add(device)
            balloon = BalloonControl(device: device)
        } else {
            balloon = nil
        }
        if config.testDevices {
            do {
                try mmio.insert(PCTestDevice.Scratch(size: PCTestDevice.memorySize),
                                at: BusRange(base: PCTestDevice.memoryBase, length: UInt64(PCTestDevice.memorySize)))
            } catch { throw .bus(error) }
        }
        self.mmio = mmio

        do {
            let supported = try kvm.supportedCPUID()
            let longMode = config.entry == .long || image.format == .elf64
            var vcpus: [VCPU] = []
            for index in 0..<config.cpus {
                let vcpu = try vm.createVCPU(id: UInt32(index))
                try vcpu.setCPUID(CPUIDTable.build(supported: supported, vcpu: index, cpuCount: config.cpus))
                if config.interruptControllers { try Self.wireLocalInterrupts(vcpu) }
                // With interrupt controllers, vCPUs other than 0 stay in reset until INIT/SIPI.
                if linux && index == 0 {
                    let reset = try vcpu.specialRegisters()
                    try vcpu.setSpecialRegisters(LinuxBoot.specialRegisters(from: reset))
                    try vcpu.setRegisters(LinuxBoot.entryRegisters(entry: image.entry))
                } else if linux {
                    // Application processors wait for INIT/SIPI (or, without interrupt controllers, do not exist).
                } else if multiboot && index == 0 {
                    let reset = try vcpu.specialRegisters()
                    try vcpu.setSpecialRegisters(MultibootBoot.specialRegisters(from: reset, infoAddress: multibootInfo))
                    try vcpu.setRegisters(MultibootBoot.entryRegisters(entry: image.entry, infoAddress: multibootInfo))
                } else if !multiboot && (index == 0 || !config.interruptControllers) {
                    let reset = try vcpu.specialRegisters()
                    try vcpu.setSpecialRegisters(longMode ? BootState.longModeSpecialRegisters(from: reset)
                                                          : BootState.realModeSpecialRegisters(from: reset))
                    try vcpu.setRegisters(BootState.entryRegisters(entry: image.entry, mode: longMode ? .long : .real, vcpu: index))
                }
                vcpus.append(vcpu)
            }
            self.vcpus = vcpus
        } catch { throw .kvm(error) }
        logBuilt(image: image)
    }

    /// The built machine at info level (memory map, devices), for `--log-level info`.
    private func logBuilt(image: LoadedImage) {
        let regions = memory.regions.map { "0x\(String($0.guestStart, radix: 16))+\($0.size >> 20)M" }.joined(separator: " ")
        logger.info("VM built: \(config.cpus) vCPU(s), \(config.memorySize >> 20) MiB RAM [\(regions)], \(image.format) image entered at 0x\(String(image.entry, radix: 16)), interrupt controllers \(config.interruptControllers ? "in KVM" : "none")")
        for (kind, bus) in [("port", pio), ("mmio", mmio)] {
            for entry in bus.entries {
                logger.debug("\(kind) \(entry.range): \(String(describing: type(of: entry.device)).split(separator: "<").first ?? "device")")
            }
        }
    }

    /// Programs LINT0 as ExtINT and LINT1 as NMI, as PC firmware does, so the 8259's interrupts
    /// reach the vCPU (KVM only passes PIC interrupts to a LAPIC whose LINT0 accepts ExtINT).
    static func wireLocalInterrupts(_ vcpu: VCPU) throws(KVMError) {
        var registers = try vcpu.localAPICRegisters()
        func set(_ offset: Int, _ value: UInt32) { LittleEndian.store(value, into: &registers, at: offset) }
        set(0x350, 0x700) // LVT LINT0: ExtINT, unmasked
        set(0x360, 0x400) // LVT LINT1: NMI, unmasked
        try vcpu.setLocalAPICRegisters(registers)
    }

    /// The CMOS bytes PC firmware leaves for memory size: KiB above 1 MiB (0x30/0x31, up to
    /// 63 MiB), 64 KiB blocks above 16 MiB (0x34/0x35, up to the hole), 64 KiB blocks above 4 GiB
    /// (0x5B-0x5D).
    static func cmosMemorySize(_ ramSize: UInt64) -> [UInt8: UInt8] {
        let low = min(ramSize, Layout.mmioHoleStart)
        let extendedKiB = min(low > Layout.mib ? (low - Layout.mib) / 1024 : 0, 0xFFFF)
        let above16M = min(low > 16 * Layout.mib ? (low - 16 * Layout.mib) >> 16 : 0, 0xFFFF)
        let above4G = ramSize > low ? (ramSize - low) >> 16 : 0
        return [0x30: UInt8(extendedKiB & 0xFF), 0x31: UInt8(extendedKiB >> 8),
                0x17: UInt8(extendedKiB & 0xFF), 0x18: UInt8(extendedKiB >> 8),
                0x34: UInt8(above16M & 0xFF), 0x35: UInt8(above16M >> 8),
                0x5B: UInt8(above4G & 0xFF), 0x5C: UInt8((above4G >> 8) & 0xFF), 0x5D: UInt8((above4G >> 16) & 0xFF)]
    }

    /// Reads the whole image, with a distinct error for missing, unreadable, directory and empty.
    static func readImage(_ path: String, limit: UInt64 = Layout.maximumRAM) throws(VMMError) -> [UInt8] {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; the file's type is then checked
        // on the descriptor itself, so what is read is what was checked.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { throw .imageUnreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .imageUnreadable(path: path, reason: String(cString: strerror(errno))) }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw .imageUnreadable(path: path, reason: "is a directory")
        default: throw .imageUnreadable(path: path, reason: "is not a regular file")
        }
        // The size is checked before anything is read: /dev/zero's kind of input never gets here,
        // and a file larger than where it goes is refused at once.
        let size = UInt64(max(0, info.st_size))
        guard size <= limit else { throw .image(path: path, .tooLarge(size: Int(clamping: size), room: limit)) }
        guard size > 0 else { throw .image(path: path, .empty) }
        let bytes: [UInt8]
        do { bytes = try FileDescriptor(rawValue: fd).readAll(count: Int(size)) } catch {
            throw .imageUnreadable(path: path, reason: error.description)
        }
        guard bytes.count == Int(size) else { throw .imageUnreadable(path: path, reason: "shrank while it was read") }
        return bytes
    }

    /// Parses the image (ELF64 or flat) and checks it fits guest RAM and avoids boot structures.
    public static func parseImage(_ bytes: [UInt8], config: VMConfig) throws(VMMError) -> LoadedImage {
        let ram = Layout.ramRanges(size: config.memorySize)
        func isRAM(_ address: UInt64, _ size: UInt64) -> Bool {
            ram.contains { address >= $0.start && address - $0.start <= $0.size && size <= $0.size - (address - $0.start) }
        }
        do {
            let image: LoadedImage
            var reserved: [(name: String, range: Range<UInt64>)] = [
                ("boot-info block", Layout.bootInfo..<Layout.bootInfoEnd),
            ]
            if config.interruptControllers { reserved += Layout.mpAreas }
            let scan = config.format == .multiboot || config.format == .auto ? Multiboot.scan(bytes) : .none
            if config.format == .multiboot || (config.format == .auto && Self.prefersMultiboot(bytes, scan)) {
                switch scan {
                case .header(let header):
                    guard config.entry == .long else {
                        throw VMMError.invalidConfig("--entry real applies to flat binaries; multiboot kernels start in 32-bit protected mode")
                    }
                    var reserved: [(name: String, range: Range<UInt64>)] = []
                    if config.interruptControllers { reserved += Layout.mpAreas }
                    return try Multiboot.load(bytes, header: header).validated(isRAM: isRAM, reserved: reserved)
                case .invalid(let error): throw error
                case .none: throw LoaderError.multiboot("no multiboot header (magic 0x1badb002) in the image")
                }
            }
            let isELF: Bool
            switch config.format {
            case .elf: isELF = true
            case .flat: isELF = false
            case .auto, .multiboot, .linux: isELF = ELF64.isELF(bytes) || config.imagePath.lowercased().hasSuffix(".elf")
            }
            if isELF {
                guard config.entry == .long else {
                    throw VMMError.invalidConfig("--entry real applies to flat binaries; ELF images start in 64-bit mode")
                }
                image = try ELF64.load(bytes)
            } else {
                let address = config.effectiveLoadAddress
                let region = ram.first { address >= $0.start && address < $0.start + $0.size }
                var room = region.map { $0.start + $0.size - address } ?? 0
                if config.entry == .real { room = min(room, Layout.realModeImageLimit - min(address, Layout.realModeImageLimit)) }
                image = try FlatBinary.load(bytes, at: address, room: room)
            }
            if config.entry == .long || image.format == .elf64 {
                reserved.append(("boot page tables and GDT", Layout.bootGDT..<BootState.longModeTablesEnd(ramSize: config.memorySize)))
                reserved.append(("initial stacks", (Layout.stackTop - UInt64(min(config.cpus, Layout.entryStacks)) * Layout.stackSize)..<Layout.stackTop))
            }
            return try image.validated(isRAM: isRAM, reserved: reserved)
        } catch let error as LoaderError {
            throw .image(path: config.imagePath, error)
        } catch let error as VMMError {
            throw error
        } catch {
            throw .invalidConfig("\(error)")
        }
    }

    /// A bzImage or vmlinux, checked against RAM and the areas the Linux boot writes.
    static func parseLinux(_ bytes: [UInt8], config: VMConfig) throws(VMMError) -> LinuxKernel.Image {
        let ram = Layout.ramRanges(size: config.memorySize)
        func isRAM(_ address: UInt64, _ size: UInt64) -> Bool {
            ram.contains { address >= $0.start && address - $0.start <= $0.size && size <= $0.size - (address - $0.start) }
        }
        do {
            let image = LinuxKernel.isBzImage(bytes) ? try LinuxKernel.loadBzImage(bytes) : try LinuxKernel.loadVmlinux(bytes)
            _ = try image.kernel.validated(isRAM: isRAM, reserved: LinuxBoot.reserved(ramSize: config.memorySize,
                                                                                     interruptControllers: config.interruptControllers))
            return image
        } catch {
            throw .image(path: config.imagePath, error)
        }
    }

    /// `--format auto`: a valid multiboot header makes the image a multiboot kernel; a broken one
    /// does too (so it gets its reason), unless the file is an ELF64 x86-64 executable, which
    /// boots as one of ours.
    static func prefersMultiboot(_ bytes: [UInt8], _ scan: Multiboot.Scan) -> Bool {
        switch scan {
        case .none: return false
        case .header: return true
        case .invalid: return !(ELF64.isELF(bytes) && bytes.count > 4 && bytes[4] == 2)
        }
    }

    /// The termination signal (SIGINT, SIGTERM, SIGHUP) a run with `handleSignals` took, or 0.
    public static let terminationSignal = Atomic<Int32>(0)

    /// Runs every vCPU on its own thread until the VM ends, then returns how it ended.
    /// Prints `--stats` to stderr when asked. With `handleSignals` (the single-VM command line), it
    /// takes SIGINT/SIGTERM/SIGHUP itself and puts a terminal in raw mode; host mode, which runs
    /// many machines, handles signals once for all of them and passes false.
    /// `consoleInput` false leaves stdin alone (the debugger reads its commands there).
    public func run(handleSignals: Bool = true, consoleInput: Bool = true) -> RunOutcome {
        let kickSignal = SIGUSR1
        do { try HostThread.installKickHandler(signal: kickSignal) } catch {
            return .vmmFailure(error.description)
        }
        // Set-up is done: from here the thread that runs the VM keeps to its allow-list (a no-op
        // when it already has one, or with --no-seccomp).
        do { try Seccomp.enter(.vmm) } catch { return .vmmFailure(error.description) }
        let terminal = TerminalMode()
        if config.serial == .stdio && handleSignals { terminal.enterRaw() }
        defer { terminal.restore() }

        let unclaimed = UnclaimedAccessLog(logger: logger)
        let control = self.control
        let start = Clocks.monotonicSeconds()
        let runners = vcpus.enumerated().map { index, vcpu in
            VCPURunner(index: index, vcpu: vcpu, pio: pio, mmio: mmio, memory: memory, control: control,
                       unclaimed: unclaimed, detailedStats: config.printStats, kickSignal: kickSignal,
                       tracer: tracer, gate: debugGate, startTime: start)
        }
        var threads: [HostThreadHandle] = []
        var signalWaiter: SignalWaiter?
        do throws(HostError) {
            // Termination signals are taken by the signal waiter's thread, so the terminal is
            // restored and the exit code is right; this run stops it when it ends.
            if handleSignals {
                signalWaiter = try SignalWaiter { received in
                    // Kept for the whole process: the run may have ended another way just before
                    // (a guest reset), and `--on-reboot restart` must not boot again after it.
                    Machine.terminationSignal.store(received, ordering: .releasing)
                    control.finish(.signal(received))
                    return .stop
                }
            }
            if config.serial == .stdio && consoleInput {
                let serial = self.serial
                let escape = isatty(STDIN_FILENO) == 1
                // Left blocked in read(2) on stdin when the run ends; detached, never joined.
                try HostThreadHandle.spawn(.io, name: "console-in") {
                    ConsoleInput.pump(escapeEnabled: escape, control: control) { serial.receive($0) }
                }.detach()
            }
            for runner in runners {
                threads.append(try HostThreadHandle.spawn(.vcpu, name: "vcpu\(runner.index)") { runner.run() })
            }
        } catch {
            control.finish(.vmmFailure(error.description))
        }
        do { try timers.start() } catch { control.finish(.vmmFailure(error.description)) }
        self.threads.withLock { $0 = threads }
        self.runners.withLock { $0 = runners }
        logger.info("\(threads.count) vCPU thread(s) started")
        let vcpus = self.vcpus
        let started = threads
        let kick: @Sendable () -> Void = {
            for vcpu in vcpus { vcpu.requestImmediateExit(true) }
            for thread in started { thread.signal(kickSignal) }
        }
        let gate = debugGate
        gate?.setKick(kick)
        control.setKick {
            if control.isStopping { gate?.end() }
            kick()
        }
        if control.isStopping { // ended before the kick was installed
            gate?.end()
            kick()
        }
        for thread in threads { thread.join() }
        // The kicks hold the vCPUs, and the run control's kick holds the run control itself: left
        // in place, that cycle would keep this machine's KVM file descriptors (and KVM's per-VM
        // kernel task) alive after the run, one set per `--on-reboot restart` boot.
        control.setKick {}
        gate?.setKick {}
        // The waiter would otherwise outlive this run and swallow the signal meant for the next
        // one (--on-reboot restart runs machines one after another); the outcome is already set.
        signalWaiter?.stop()
        timers.stop()
        if unclaimed.pendingSuppressed > 0 {
            logger.notice("\(unclaimed.pendingSuppressed) further unclaimed accesses were not logged")
        }
        // Whatever the guest wrote reaches its reader before the run returns, unless the reader
        // stopped taking it: then the run ends anyway, and says how much was lost.
        if let dropped = serialOutput?.finish(), dropped > 0 {
            logger.warning("serial output: \(dropped) bytes dropped (the reader did not keep up)")
        }
        let outcome = control.result ?? .vmmFailure("vCPU threads ended without an outcome")
        logger.info("run ended after \(formatOneDecimal(Clocks.monotonicSeconds() - start)) s: \(outcome)")
        if config.printStats {
            terminal.restore()
            writeStandardError(statisticsReport() + "\n")
        }
        return outcome
    }
}

extension Machine {
    /// Stops every vCPU outside KVM_RUN; returns once all are parked. Callable from any thread
    /// while `run()` is running.
    public func pause() { control.pause() }

    /// Lets paused vCPUs run again.
    public func resume() { control.resume() }

    /// Ends the run with `.stopped` (status 72); `run()` returns once every vCPU has stopped.
    public func stop() { control.finish(.stopped) }

    /// The kernel thread id of each vCPU thread (nil until it has started), for pinning.
    public func vcpuThreadIDs() -> [Int32?] {
        runners.withLock { $0.map { runner in
            let tid = runner.threadID.load(ordering: .acquiring)
            return tid == 0 ? nil : tid
        } }
    }

    /// What `--stats` prints: exit counts per vCPU, the balloon, the process's memory.
    public func statisticsReport() -> String {
        var lines = runnerStatistics().enumerated().map { $1.report(vcpu: $0) }
        if let balloon { lines.append(balloon.report()) }
        if let memoryLine = memoryReport() { lines.append(memoryLine) }
        return lines.joined(separator: "\n")
    }

    /// The `memory:` line: peak and current RSS of the process and how much is guest RAM.
    public func memoryReport() -> String? {
        ProcessMemory.current()?.report(guestResidentKiB: memory.residentBytes() / 1024)
    }

    /// Each vCPU's exit counters (under a debugger: as of its last park).
    func runnerStatistics() -> [ExitStatistics] {
        runners.withLock { $0.map(\.stats) }
    }

    /// Seconds of host CPU each vCPU thread has used so far (empty before `run()` starts them).
    public func vcpuCPUSeconds() -> [Double] {
        threads.withLock { $0.map { $0.cpuSeconds() ?? 0 } }
    }
}

/// Type-erased UART output, so the machine's serial type does not depend on the target chosen.
public struct AnySerialOutput: SerialOutput {
    private let sink: any SerialOutput
    public init(_ sink: any SerialOutput) { self.sink = sink }
    public func write(_ byte: UInt8) { sink.write(byte) }
}
