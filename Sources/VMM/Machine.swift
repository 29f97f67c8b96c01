import Devices
import Glibc
import KVM
import Loaders
import Logging
import VMMCore

/// Ports of the fixed PC devices (see docs/guest-abi.md).
public enum Ports {
    public static let com1: UInt64 = 0x3f8
    public static let debugExit = UInt64(DebugExit.defaultPort)
}

/// A built VM: memory loaded, vCPUs in their entry state, devices on the buses. `run()` runs it.
public final class Machine {
    public let config: VMConfig
    public let memory: GuestMemory
    public let image: LoadedImage
    let kvm: KVMSystem
    let vm: VirtualMachine
    let vcpus: [VCPU]
    let pio: Bus
    let mmio: Bus
    let serial: Serial16550<DisconnectedInterruptLine, AnySerialOutput>
    let control: RunControl
    let logger: Logger

    /// Builds the VM described by `config`; every failure is a VMMError naming its cause.
    public init(config: VMConfig, logger: Logger = Logger(label: "swiftvmm")) throws(VMMError) {
        try config.validate()
        self.config = config
        self.logger = logger
        let bytes = try Self.readImage(config.imagePath)

        let kvm: KVMSystem
        do {
            kvm = try KVMSystem(path: config.kvmDevice)
            try kvm.require(KVMCapability.required)
        } catch { throw .kvmUnavailable(error) }
        let maxVCPUs = max(kvm.check(.maxVCPUs), 4) // KVM's documented fallback when the cap is absent
        guard config.cpus <= maxVCPUs else {
            throw .invalidConfig("cpu count \(config.cpus) exceeds KVM's limit of \(maxVCPUs)")
        }
        self.kvm = kvm

        let image = try Self.parseImage(bytes, config: config)
        self.image = image

        do {
            memory = try GuestMemory(ranges: Layout.ramRanges(size: config.memorySize).map { ($0.start, Int($0.size)) },
                                     hugePages: config.hugePages)
        } catch { throw .memory(error) }
        do {
            for segment in image.segments {
                try memory.write(segment.bytes, at: segment.address)
                let tail = segment.memorySize - UInt64(segment.bytes.count)
                if tail > 0 { try memory.fill(segment.address + UInt64(segment.bytes.count), length: Int(tail)) }
            }
            let imageEnd = image.segments.map { $0.address + $0.memorySize }.max() ?? 0
            let imageStart = image.segments.map(\.address).min() ?? 0
            let longMode = config.entry == .long || image.format == .elf64
            if longMode { try BootState.writeLongModeTables(to: memory, ramSize: config.memorySize) }
            try BootInfo(ramSize: config.memorySize, cpuCount: UInt32(config.cpus), longMode: longMode,
                         commandLine: config.commandLine, imageStart: imageStart, imageEnd: imageEnd).write(to: memory)
        } catch { throw .memory(error) }

        let control = RunControl(vcpuCount: config.cpus)
        self.control = control
        let output: AnySerialOutput
        switch config.serial {
        case .stdio: output = AnySerialOutput(FileDescriptorOutput(fd: STDOUT_FILENO))
        case .file(let path): output = AnySerialOutput(try FileDescriptorOutput(path: path))
        case .none: output = AnySerialOutput(DiscardOutput())
        }
        serial = Serial16550(interrupt: DisconnectedInterruptLine(), output: output)
        var pio = Bus()
        do {
            try pio.insert(serial, at: BusRange(base: Ports.com1, length: 8))
            try pio.insert(DebugExit { control.finish(.debugExit(status: $0)) }, at: BusRange(base: Ports.debugExit, length: 1))
        } catch { throw .bus(error) }
        self.pio = pio
        self.mmio = Bus()

        do {
            vm = try kvm.createVM()
            try vm.setTSSAddress(Layout.vmxTSS)
            for (slot, region) in memory.regions.enumerated() {
                try vm.setUserMemoryRegion(slot: UInt32(slot), guestAddress: region.guestStart,
                                           size: UInt64(region.size), hostAddress: region.hostAddress)
            }
            let supported = try kvm.supportedCPUID()
            var vcpus: [VCPU] = []
            for index in 0..<config.cpus {
                let vcpu = try vm.createVCPU(id: UInt32(index))
                try vcpu.setCPUID(CPUIDTable.build(supported: supported, vcpu: index, cpuCount: config.cpus))
                let reset = try vcpu.specialRegisters()
                let longMode = config.entry == .long || image.format == .elf64
                try vcpu.setSpecialRegisters(longMode ? BootState.longModeSpecialRegisters(from: reset)
                                                      : BootState.realModeSpecialRegisters(from: reset))
                try vcpu.setRegisters(BootState.entryRegisters(entry: image.entry, mode: longMode ? .long : .real, vcpu: index))
                vcpus.append(vcpu)
            }
            self.vcpus = vcpus
        } catch { throw .kvm(error) }
    }

    /// Reads the whole image, with a distinct error for missing, unreadable, directory and empty.
    static func readImage(_ path: String) throws(VMMError) -> [UInt8] {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw .imageUnreadable(path: path, reason: String(cString: strerror(errno)))
        }
        guard info.st_mode & S_IFMT != S_IFDIR else { throw .imageUnreadable(path: path, reason: "is a directory") }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .imageUnreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .imageUnreadable(path: path, reason: String(cString: strerror(errno)))
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
            guard UInt64(bytes.count) <= Layout.maximumRAM else {
                throw .image(path: path, .tooLarge(size: bytes.count, room: Layout.maximumRAM))
            }
        }
        guard !bytes.isEmpty else { throw .image(path: path, .empty) }
        return bytes
    }

    /// Parses the image (ELF64 or flat) and checks it fits guest RAM and avoids boot structures.
    static func parseImage(_ bytes: [UInt8], config: VMConfig) throws(VMMError) -> LoadedImage {
        let ram = Layout.ramRanges(size: config.memorySize)
        func isRAM(_ address: UInt64, _ size: UInt64) -> Bool {
            ram.contains { address >= $0.start && address - $0.start <= $0.size && size <= $0.size - (address - $0.start) }
        }
        do {
            let image: LoadedImage
            var reserved: [(name: String, range: Range<UInt64>)] = [
                ("boot-info block", Layout.bootInfo..<Layout.bootInfoEnd),
            ]
            let isELF: Bool
            switch config.format {
            case .elf: isELF = true
            case .flat: isELF = false
            case .auto: isELF = ELF64.isELF(bytes) || config.imagePath.lowercased().hasSuffix(".elf")
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
                reserved.append(("initial stacks", (Layout.stackTop - UInt64(config.cpus) * Layout.stackSize)..<Layout.stackTop))
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

    /// Runs every vCPU on its own thread until the VM ends, then returns how it ended.
    /// Prints `--stats` to stderr when asked.
    public func run() -> RunOutcome {
        let kickSignal = SIGUSR1
        do { try HostThread.installKickHandler(signal: kickSignal) } catch {
            return .vmmFailure(error.description)
        }
        // Termination signals are taken by a dedicated thread (sigwait), so the terminal is
        // restored and the exit code is right; every other thread blocks them.
        var termination = sigset_t()
        sigemptyset(&termination)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&termination, signal) }
        pthread_sigmask(SIG_BLOCK, &termination, nil)

        let terminal = TerminalMode()
        if config.serial == .stdio { terminal.enterRaw() }
        defer { terminal.restore() }

        let unclaimed = UnclaimedAccessLog(logger: logger)
        let control = self.control
        let runners = vcpus.enumerated().map { index, vcpu in
            VCPURunner(index: index, vcpu: vcpu, pio: pio, mmio: mmio, control: control,
                       unclaimed: unclaimed, detailedStats: config.printStats, kickSignal: kickSignal)
        }
        var threads: [HostThreadHandle] = []
        let signalSet = termination
        do {
            _ = try HostThreadHandle.spawn {
                var set = signalSet
                var received: Int32 = 0
                while sigwait(&set, &received) != 0 {}
                control.finish(.signal(received))
            }
            if config.serial == .stdio {
                let serial = self.serial
                let escape = isatty(STDIN_FILENO) == 1
                _ = try HostThreadHandle.spawn {
                    ConsoleInput.pump(escapeEnabled: escape, control: control) { serial.receive($0) }
                }
            }
            for runner in runners {
                threads.append(try HostThreadHandle.spawn { runner.run() })
            }
        } catch {
            control.finish(.vmmFailure(error.description))
        }
        let vcpus = self.vcpus
        let started = threads
        let kick: @Sendable () -> Void = {
            for vcpu in vcpus { vcpu.requestImmediateExit(true) }
            for thread in started { thread.signal(kickSignal) }
        }
        control.setKick(kick)
        if control.isStopping { kick() } // ended before the kick was installed
        for thread in threads { thread.join() }
        if unclaimed.pendingSuppressed > 0 {
            logger.notice("\(unclaimed.pendingSuppressed) further unclaimed accesses were not logged")
        }
        let outcome = control.result ?? .vmmFailure("vCPU threads ended without an outcome")
        if config.printStats {
            terminal.restore()
            for runner in runners { writeStandardError(runner.stats.report(vcpu: runner.index) + "\n") }
            if let usage = ProcessMemory.current() {
                writeStandardError(usage.report(guestResidentKiB: memory.residentBytes() / 1024) + "\n")
            }
        }
        return outcome
    }
}

/// Type-erased UART output, so the machine's serial type does not depend on the target chosen.
public struct AnySerialOutput: SerialOutput {
    private let sink: any SerialOutput
    public init(_ sink: any SerialOutput) { self.sink = sink }
    public func write(_ byte: UInt8) { sink.write(byte) }
}
