import Boot
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
    /// The file hypercall device, when the VM has a share (`--share`).
    public let share: ShareDevice?
    /// The virtio-blk disks (`--disk`), in slot order.
    let disks: [Disk]
    /// The virtio-net interfaces (`--net`), in slot order.
    let nets: [NetworkInterface]
    /// ACPI S3 and the PM registers (with the interrupt controllers).
    let sleep: SleepState?
    /// Deterministic mode's 8259 pair, virtual clock and held input (nil otherwise).
    let deterministic: DeterministicPlatform?
    /// Deterministic mode at the vCPU's exits: recording, replaying, or neither.
    let replayDriver: ReplayDriver?
    /// Where vCPUs park for a debugger (`config.debug`).
    public let debugGate: DebugGate?
    let tracer: ExitTracer?
    public let logger: Logger
    private let threads = Locked<[HostThreadHandle]>([])
    private let runners = Locked<[VCPURunner]>([])

    // A machine built but never run still ends its serial writer thread.
    deinit { serialOutput?.finish(timeout: 0) }

    /// The image's symbols, for a debugger (`config.debug`; empty otherwise).
    public let symbols: SymbolTable

    /// The state calls this KVM has (nil when it cannot list its MSRs: no snapshots then).
    let stateSupport: KVMStateSupport?
    /// The CPUID table each vCPU was given (a snapshot saves what the guest saw).
    let cpuid: [[CPUIDEntry]]
    /// The guest TSC's rate, read once at build: a vCPU ioctl waits for the vCPU to leave
    /// KVM_RUN, which a guest halted in the in-kernel LAPIC may not do for a long time, so a
    /// migration's first message never asks a running vCPU.
    let tscKHz: UInt32
    /// The devices whose state a snapshot saves, by name.
    let snapshotDevices: [(String, any SnapshotDevice)]
    /// The current or last outgoing migration, and whether its completion was reported.
    let migration = Locked<MigrationSource?>(nil)
    let migrationReported = Atomic<Bool>(false)
    /// Which pages changed, for migrations and diff snapshots.
    let dirtyTracking: DirtyTracking
    /// The memory file of this machine's last snapshot: a Diff snapshot updates it in place.
    let lastSnapshotMemory = Locked<String?>(nil)

    /// Builds the VM described by `config` in MachineBuilder's steps; every failure is a
    /// VMMError naming its cause.
    public convenience init(config: VMConfig, logger: Logger = Logger(label: "swiftvmm")) throws(VMMError) {
        try self.init(config: config, logger: logger, snapshot: nil)
    }

    /// Rebuilds the machine a snapshot saved and puts its state back: the same steps, with the
    /// snapshot's configuration, RAM from its memory file, the CPUID the guest saw, and every
    /// device's and vCPU's state instead of a boot. `runtime` gives what is this process's
    /// choice (serial output, statistics, logging, page sharing). The VM starts paused when
    /// `startPaused`; `run()` then waits for `resume()`.
    public convenience init(restoring source: SnapshotSource, runtime: VMConfig, logger: Logger = Logger(label: "swiftvmm")) throws(VMMError) {
        let snapshot = try MachineSnapshot.Loaded(source)
        var config = snapshot.config.applied(to: runtime)
        config.trackDirtyPages = config.trackDirtyPages || source.trackDirtyPages
        try self.init(config: config, logger: logger, snapshot: snapshot)
    }

    /// Builds the machine a migration sent: its state, and RAM the stream already filled.
    convenience init(migrated state: SnapshotFile, memory: GuestMemory, runtime: VMConfig, logger: Logger) throws(VMMError) {
        let snapshot = try MachineSnapshot.Loaded(state, origin: "the migration", memory: .received(memory))
        try self.init(config: snapshot.config.applied(to: runtime), logger: logger, snapshot: snapshot)
    }

    /// Builds the machine a record/replay log describes, to replay it (`swiftvmm replay`):
    /// `runtime` gives this process's choices (serial output, statistics). A bad log, or one
    /// recorded from other files, is `.replayLog` (status 88).
    public convenience init(replaying logPath: String, runtime: VMConfig, logger: Logger = Logger(label: "swiftvmm")) throws(VMMError) {
        let player: ReplayPlayer
        do { player = try ReplayPlayer(path: logPath) } catch { throw .replayLog("replay log \(logPath): \(error)") }
        let config = try ReplaySetup.config(from: player.header, runtime: runtime, log: logPath)
        try self.init(config: config, logger: logger, snapshot: nil, replay: player)
    }

    /// Builds the backup of a fault-tolerant pair (`--ft-backup`): connects to the primary at
    /// `endpoint`, builds the machine its log's header describes (`runtime.imagePath`, when
    /// given, must be the image the primary runs), and replays the primary's stream until it
    /// ends, then runs on live.
    public convenience init(backupOf endpoint: SocketEndpoint, runtime: VMConfig, logger: Logger = Logger(label: "swiftvmm")) throws(VMMError) {
        let stream = try FTStreamSource(connecting: endpoint)
        let log = "the primary at \(endpoint)"
        var config = try ReplaySetup.config(from: stream.header, runtime: runtime, log: log)
        if !runtime.imagePath.isEmpty {
            let mine = try ReplaySetup.file(runtime.imagePath, limit: config.memorySize)
            guard mine.digest == stream.header.image.digest, mine.size == stream.header.image.size else {
                throw .replayLog("ft backup: \(runtime.imagePath.printableExcerpt()) is not the image the primary runs (\(stream.header.image.path.printableExcerpt()))")
            }
        }
        (config.ftBackup, config.ftPrimary) = (endpoint, nil)
        try self.init(config: config, logger: logger, snapshot: nil, replay: ReplayPlayer(path: log, header: stream.header, source: stream))
    }

    private init(config: VMConfig, logger: Logger, snapshot: MachineSnapshot.Loaded?, replay: ReplayPlayer? = nil) throws(VMMError) {
        try config.validate()
        if config.deterministic && snapshot != nil { throw .invalidConfig("a snapshot cannot be restored in deterministic mode") }
        self.config = config
        self.logger = logger
        let builder = MachineBuilder(config: config, logger: logger)
        var boot: (any BootProtocol)?
        let start = Clocks.monotonicNanoseconds()
        if snapshot == nil {
            let (kernel, options) = try builder.loadImages()
            boot = try builder.pickBootProtocol(kernel, options: options)
            symbols = config.debug ? try Self.symbols(kernel, path: config.imagePath) : SymbolTable([])
        } else {
            symbols = SymbolTable([])
        }
        (kvm, vm, memory) = try builder.createVM(snapshot: snapshot)
        stateSupport = try? kvm.stateSupport()
        dirtyTracking = DirtyTracking(vm: vm, memory: memory)
        control = RunControl(vcpuCount: config.cpus)
        debugGate = config.debug ? DebugGate(vcpuCount: config.cpus) : nil
        tracer = try config.traceExits.map { filter throws(VMMError) in try ExitTracer(filter: filter, path: config.traceFile) }
        let rtcStart = config.rtcStart ?? SystemWallClock().now()
        let platform = config.deterministic ? DeterministicPlatform(rtcStart: rtcStart, nanosecondsPerExit: config.nanosecondsPerExit) : nil
        let devices = try builder.addDevices(vm: vm, memory: memory, control: control, timers: timers, deterministic: platform)
        (pio, mmio, serial, serialOutput, balloon, share) = (devices.pio, devices.mmio, devices.serial, devices.serialOutput, devices.balloon, devices.share)
        (sleep, disks, nets) = (devices.sleep, devices.disks, devices.nets)
        snapshotDevices = devices.stateful
        deterministic = platform
        if let platform {
            let mode: ReplayDriver.Mode
            var link: FTPrimaryLink?
            if let replay {
                mode = .replay(replay)
                (replay.source as? FTStreamSource)?.gate = devices.ftGate
            } else if let path = config.recordPath {
                mode = .record(try ReplayRecorder(path: path, header: try ReplaySetup.header(for: config, rtcStart: rtcStart)))
            } else if let endpoint = config.ftPrimary, let gate = devices.ftGate {
                let header = try ReplaySetup.header(for: config, rtcStart: rtcStart)
                let primary = try FTPrimaryLink(listening: endpoint, gate: gate)
                mode = .record(ReplayRecorder(name: "the backup at \(endpoint)", header: header) { bytes in
                    primary.send(bytes, exits: 0)
                    return nil // a backup that went away leaves the primary running alone
                })
                primary.sendOutputIdentity(devices.serialOutput.map { OutputIdentity.of(fd: $0.descriptor) } ?? OutputIdentity())
                devices.serialOutput?.setAfterWrite { [weak primary] total in primary?.sendWritten(total, exits: 0) }
                link = primary
            } else {
                mode = .free
            }
            replayDriver = ReplayDriver(platform: platform, serial: devices.serial, balloon: devices.balloon, control: control,
                                        memory: memory, mode: mode, interruptControllers: config.interruptControllers,
                                        primaryLink: link, gate: devices.ftGate, serialOutput: devices.serialOutput)
        } else {
            replayDriver = nil
        }
        (vcpus, cpuid) = try builder.createVCPUs(kvm: kvm, vm: vm, snapshot: snapshot)
        tscKHz = vcpus.first?.tscKHz() ?? 0
        if let boot {
            try builder.boot(boot, memory: memory, vcpus: vcpus)
            logBuilt(image: boot.image)
        } else if let snapshot {
            guard let stateSupport else { throw .snapshot(.incompatible("this KVM cannot list the MSRs to restore")) }
            try snapshot.restore(vm: vm, vcpus: vcpus, devices: snapshotDevices, support: stateSupport, logger: logger)
            let milliseconds = formatOneDecimal(Double(Clocks.monotonicNanoseconds() - start) / 1e6)
            logger.info("VM restored from \(snapshot.origin) in \(milliseconds) ms: \(config.cpus) vCPU(s), \(config.memorySize >> 20) MiB RAM, memory \(snapshot.memoryDescription)")
        }
        if config.trackDirtyPages {
            do { try dirtyTracking.start("snapshot") } catch { throw .kvm(error) }
        }
        if config.pageSharing && config.announcePageSharing { Self.announcePageSharing(mergeable: memory.isMergeable, logger: logger) }
    }

    /// Says at start whether page sharing can happen: the kernel took MADV_MERGEABLE, and ksmd
    /// runs (how fast it scans), or what is missing. Host-wide KSM settings are the administrator's.
    public static func announcePageSharing(mergeable: Bool, logger: Logger) {
        guard mergeable else {
            logger.warning("page sharing: the kernel refused MADV_MERGEABLE (built without KSM?): guest RAM is not shared")
            return
        }
        guard let ksm = KSMStatus.read() else {
            logger.warning("page sharing: \(KSMStatus.directory) is missing: this kernel has no KSM")
            return
        }
        if ksm.run == 1 { logger.notice("page sharing: guest RAM is mergeable; \(ksm.summary)") } else { logger.warning("page sharing: guest RAM is mergeable, but \(ksm.summary)") }
    }

    /// How this VM's resident guest RAM is backed (KSM-shared, the zero page, its own), from the
    /// kernel's page information; nil without `--page-sharing` or when it cannot be read (needs
    /// CAP_SYS_ADMIN).
    public func pageSharing() -> PageSharing? {
        guard config.pageSharing else { return nil }
        return try? PageSharing.measure(memory.regions.map { (address: $0.hostAddress, length: $0.size) })
    }

    /// The kernel's symbol table (ELF symbols; empty for other images).
    static func symbols(_ kernel: [UInt8], path: String) throws(VMMError) -> SymbolTable {
        do { return try SymbolTable.parse(kernel) } catch { throw .image(path: path, error) }
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
        let start = Clocks.monotonicSeconds()
        let runners = vcpus.enumerated().map { index, vcpu in
            VCPURunner(index: index, vcpu: vcpu, pio: pio, mmio: mmio, memory: memory, control: control,
                       unclaimed: unclaimed, detailedStats: config.printStats, kickSignal: kickSignal,
                       tracer: tracer, gate: debugGate, startTime: start, features: PVMCompat.Features(cpuid: cpuid[index]),
                       vmwareBackdoor: config.vmwareBackdoor, sleep: sleep, deterministic: index == 0 ? replayDriver : nil)
        }
        let (threads, signalWaiter) = startThreads(runners, handleSignals: handleSignals, consoleInput: consoleInput)
        installKicks(threads, signal: kickSignal)
        for thread in threads { thread.join() }
        // The kicks hold the vCPUs, and the run control's kick holds the run control itself: left
        // in place, that cycle would keep this machine's KVM file descriptors (and KVM's per-VM
        // kernel task) alive after the run, one set per `--on-reboot restart` boot.
        control.setKick {}
        debugGate?.setKick {}
        // The waiter would otherwise outlive this run and swallow the signal meant for the next
        // one (--on-reboot restart runs machines one after another); the outcome is already set.
        signalWaiter?.stop()
        timers.stop()
        deterministic?.timers.removeAll()
        let outcome = finishRun(unclaimed: unclaimed, start: start)
        if config.printStats {
            terminal.restore()
            writeStandardError(statisticsReport() + "\n")
        }
        return outcome
    }

    /// Starts the signal waiter (single-VM runs), the console pump, one thread per vCPU and the
    /// timer thread. A thread that cannot start ends the run as a VMM failure.
    private func startThreads(_ runners: [VCPURunner], handleSignals: Bool, consoleInput: Bool) -> ([HostThreadHandle], SignalWaiter?) {
        let control = self.control
        var threads: [HostThreadHandle] = []
        var signalWaiter: SignalWaiter?
        do throws(HostError) {
            // Termination signals are taken by the signal waiter's thread, so the terminal is
            // restored and the exit code is right; the run stops it when it ends.
            if handleSignals {
                signalWaiter = try SignalWaiter { received in
                    // Kept for the whole process: the run may have ended another way just before
                    // (a guest reset), and `--on-reboot restart` must not boot again after it.
                    Machine.terminationSignal.store(received, ordering: .releasing)
                    control.finish(.signal(received))
                    return .stop
                }
            }
            // A replay's input is the log's; a backup's console is read once it takes over.
            let replaying = if case .replay? = replayDriver?.mode, replayDriver?.isFollowingStream == false { true } else { false }
            if config.serial == .stdio && consoleInput && !replaying {
                let serial = self.serial
                let escape = isatty(STDIN_FILENO) == 1
                let inputs = deterministic?.inputs
                // Left blocked in read(2) on stdin when the run ends; detached, never joined.
                // Deterministic mode holds the bytes for the vCPU, which takes them at an exit.
                try HostThreadHandle.spawn(.io, name: "console-in") {
                    ConsoleInput.pump(escapeEnabled: escape, control: control) { inputs?.offerConsole($0) ?? serial.receive($0) }
                    inputs?.closeConsole()
                }.detach()
            } else {
                deterministic?.inputs.closeConsole()
            }
            if let link = replayDriver?.primaryLink {
                link.isStopping = { control.isStopping }
                try HostThreadHandle.spawn(.io, name: "ft-acks") { link.readAcknowledgements() }.detach()
            }
            if case .replay(let player)? = replayDriver?.mode, let stream = player.source as? FTStreamSource {
                stream.whileWaiting = { if control.mustPark && !control.isStopping { control.parkWhilePaused() } }
                try HostThreadHandle.spawn(.io, name: "ft-stream") { stream.receive() }.detach()
            }
            for runner in runners {
                threads.append(try HostThreadHandle.spawn(share == nil ? .vcpu : .vcpuSharing, name: "vcpu\(runner.index)", prelude: { runner.openSchedStat() }) { runner.run() })
            }
        } catch {
            control.finish(.vmmFailure(error.description))
        }
        do { try timers.start() } catch { control.finish(.vmmFailure(error.description)) }
        self.threads.withLock { $0 = threads }
        self.runners.withLock { $0 = runners }
        logger.info("\(threads.count) vCPU thread(s) started")
        return (threads, signalWaiter)
    }

    /// How the run control and the debug gate stop vCPUs: immediate_exit, then the kick signal
    /// to each vCPU thread (a no-op handler, so a blocked KVM_RUN returns EINTR).
    private func installKicks(_ threads: [HostThreadHandle], signal kickSignal: Int32) {
        let control = self.control
        let vcpus = self.vcpus
        let inputs = deterministic?.inputs
        let stream: FTStreamSource? = if case .replay(let player)? = replayDriver?.mode { player.source as? FTStreamSource } else { nil }
        let kick: @Sendable () -> Void = {
            if control.isStopping { stream?.stop() } // a backup waiting for its primary lets go
            for vcpu in vcpus { vcpu.requestImmediateExit(true) }
            for thread in threads { thread.signal(kickSignal) }
            inputs?.wake() // a deterministic vCPU waiting in HLT
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
    }

    /// After every vCPU thread ended: what was not logged or written, and the outcome.
    private func finishRun(unclaimed: UnclaimedAccessLog, start: Double) -> RunOutcome {
        if unclaimed.pendingSuppressed > 0 {
            logger.notice("\(unclaimed.pendingSuppressed) further unclaimed accesses were not logged")
        }
        // Whatever the guest wrote reaches its reader before the run returns, unless the reader
        // stopped taking it: then the run ends anyway, and says how much was lost.
        if let dropped = serialOutput?.finish(), dropped > 0 {
            logger.warning("serial output: \(dropped) bytes dropped (the reader did not keep up)")
        }
        // A primary tells its backup how much output it wrote out, last: the backup writes the rest.
        replayDriver?.primaryLink?.finish(written: serialOutput?.bytesWritten ?? 0, exits: replayDriver?.exits ?? 0)
        let outcome = control.result ?? .vmmFailure("vCPU threads ended without an outcome")
        logger.info("run ended after \(formatOneDecimal(Clocks.monotonicSeconds() - start)) s: \(outcome)")
        return outcome
    }
}

extension Machine {
    /// Stops every vCPU outside KVM_RUN; returns once all are parked and the disks have
    /// finished what the guest asked of them. Callable from any thread while `run()` is running.
    public func pause() {
        control.pause()
        for disk in disks { disk.drain() }
        for net in nets { net.drain() }
    }

    /// How record/replay saw the run (deterministic mode, once `run()` returned).
    public var replayVerdict: ReplayVerdict? { replayDriver?.verdict }

    /// Lets paused vCPUs run again.
    public func resume() { control.resume() }

    /// Makes `run()` start with every vCPU parked, as if paused before its first instruction
    /// (a restored VM waiting for `resume()`). Returns at once.
    public func startPaused() { control.requestPause() }

    /// The ACPI power button: wakes a guest suspended to RAM (S3), otherwise sets PWRBTN_STS
    /// (an SCI, when the guest enabled it). False on a machine without the PM registers.
    @discardableResult
    public func pressPowerButton() -> Bool {
        guard let sleep else { return false }
        sleep.powerButton()
        return true
    }

    /// Whether the guest is suspended to RAM (ACPI S3).
    public var isSuspended: Bool { sleep?.isSuspended ?? false }

    /// Whether `pause()` holds the vCPUs (until `resume()`).
    public var isPaused: Bool { control.isPauseRequested }

    /// Whether the run has ended or is ending.
    public var isStopping: Bool { control.isStopping }

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
        if let share { lines.append(share.statistics.report()) }
        lines += disks.map { $0.report() } + nets.map { $0.report() }
        if let memoryLine = memoryReport() { lines.append(memoryLine) }
        lines += stealReport()
        if let sharing = pageSharing() { lines.append(sharing.report) }
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

    /// Each vCPU's exit counts by reason, as of now (empty before `run()` starts them).
    public func liveExitCounts() -> [[ExitStatistics.Reason: UInt64]] {
        runners.withLock { $0.map { $0.liveExits.snapshot() } }
    }

    /// Each vCPU thread's time runnable but waiting for a host CPU (schedstat's run_delay): now,
    /// or as the thread ended.
    public func vcpuWaitNanoseconds() -> [UInt64?] {
        // /proc is read with the runners' lock released.
        runners.withLock { $0 }.map { runner in
            let tid = runner.threadID.load(ordering: .acquiring)
            return runner.finalSchedStat.withLock { $0 }?.waitNanoseconds
                ?? (tid == 0 ? nil : ThreadSchedStat.read(thread: tid)?.waitNanoseconds)
        }
    }

    /// Steal seen from both sides, one `--stats` line per vCPU whose guest enabled steal time:
    /// what the guest's record says and the vCPU thread's run_delay on the host.
    public func stealReport() -> [String] {
        let guest = guestStealNanoseconds(), host = vcpuWaitNanoseconds()
        return guest.enumerated().compactMap { index, steal in
            guard let steal else { return nil }
            let wait = index < host.count ? host[index].map { String($0 / 1_000_000) } ?? "?" : "?"
            return "vcpu\(index) steal: guest_reported_ms=\(steal / 1_000_000) host_run_delay_ms=\(wait)"
        }
    }

    /// Each vCPU's steal time as its guest's steal-time record holds it (nil where the guest has
    /// not enabled one, or its vCPU thread has not yet seen it at an exit).
    public func guestStealNanoseconds() -> [UInt64?] {
        runners.withLock { $0.map { StealTimeRecord.steal(msr: $0.stealTimeMSR.load(ordering: .acquiring), memory: memory) } }
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
