import Boot
import Devices
import Glibc
import Host
import KVM
import Logging
import VMMCore

/// Where a restore finds a snapshot: its state file and memory file, and whether RAM is read
/// into memory up front (eager) or mapped from the file and read as the guest touches it (lazy).
public struct SnapshotSource: Sendable, Equatable {
    public var statePath: String
    public var memoryPath: String
    public var eager: Bool
    /// Track dirty pages from the restore on (the API's enable_diff_snapshots), so Diff
    /// snapshots can follow a first Full one.
    public var trackDirtyPages: Bool

    public init(statePath: String, memoryPath: String, eager: Bool = false, trackDirtyPages: Bool = false) {
        (self.statePath, self.memoryPath, self.eager, self.trackDirtyPages) = (statePath, memoryPath, eager, trackDirtyPages)
    }
}

/// What a snapshot took and how long, for the API's reply, `--stats` and the benchmark.
public struct SnapshotReport: Sendable, Equatable {
    public var stateBytes: Int
    public var memoryBytesWritten: UInt64
    public var guestRAM: UInt64
    public var stateMilliseconds: Double
    public var memoryMilliseconds: Double

    public init(stateBytes: Int, memoryBytesWritten: UInt64, guestRAM: UInt64, stateMilliseconds: Double, memoryMilliseconds: Double) {
        (self.stateBytes, self.memoryBytesWritten, self.guestRAM) = (stateBytes, memoryBytesWritten, guestRAM)
        (self.stateMilliseconds, self.memoryMilliseconds) = (stateMilliseconds, memoryMilliseconds)
    }
}

/// The machine's shape as a snapshot records it: what a restore must rebuild before it can
/// put the state back (section CONF). Everything else (serial target, logging, statistics,
/// the API socket) is the restoring command line's.
struct SnapshotConfig: Equatable {
    var vmmVersion = version
    var memorySize: UInt64 = 0
    var cpus = 1
    var interruptControllers = true
    var kernelPIT = false
    var balloon = false
    var balloonDeflateOnOOM = true
    var testDevices = false
    var imagePath = ""
    var commandLine = ""
    var tscKHz: UInt32 = 0
    /// The disks, reopened at the same paths by a restore: a disk is shared storage, its
    /// contents are not in the snapshot (docs/snapshot.md).
    var disks: [DiskConfig] = []
    /// The network interfaces (tap, MAC, name): a restore attaches to the same tap name.
    var nets: [NetConfig] = []

    init(_ config: VMConfig, tscKHz: UInt32) {
        (memorySize, cpus, interruptControllers) = (config.memorySize, config.cpus, config.interruptControllers)
        (kernelPIT, balloon, balloonDeflateOnOOM, testDevices) = (config.pit == .kernel, config.balloon, config.balloonDeflateOnOOM, config.testDevices)
        (imagePath, commandLine, self.tscKHz) = (config.imagePath, config.commandLine, tscKHz)
        nets = config.nets.indices.map { NetConfig(tap: config.nets[$0].tap, mac: config.netMAC($0), id: config.netID($0)) }
        disks = config.disks.indices.map { DiskConfig(path: config.disks[$0].path, readOnly: config.disks[$0].readOnly, id: config.diskID($0)) }
    }

    var encoded: [UInt8] {
        var out = StateWriter()
        out.string(vmmVersion)
        out.u64(memorySize)
        out.u32(UInt32(cpus))
        for flag in [interruptControllers, kernelPIT, balloon, balloonDeflateOnOOM, testDevices] { out.bool(flag) }
        out.string(imagePath)
        out.string(commandLine)
        out.u32(tscKHz)
        out.u32(UInt32(disks.count))
        for disk in disks {
            out.string(disk.path)
            out.bool(disk.readOnly)
            out.string(disk.id ?? "")
        }
        out.u32(UInt32(nets.count))
        for net in nets {
            out.string(net.tap)
            out.raw(net.mac ?? [0, 0, 0, 0, 0, 0])
            out.string(net.id ?? "")
        }
        return out.bytes
    }

    init(decoding bytes: [UInt8]) throws(StateError) {
        var input = StateReader(bytes, context: "configuration")
        vmmVersion = try input.string("swiftvmm version", maximum: 64)
        memorySize = try input.u64("memory size")
        guard memorySize >= Layout.minimumRAM, memorySize <= Layout.maximumRAM, memorySize % 4096 == 0 else {
            throw .invalid("configuration: memory size \(memorySize)")
        }
        cpus = try input.count("vCPU count", maximum: Layout.maximumVCPUs)
        guard cpus >= 1 else { throw .invalid("configuration: no vCPUs") }
        interruptControllers = try input.bool("interrupt controllers")
        kernelPIT = try input.bool("kernel PIT")
        balloon = try input.bool("balloon")
        balloonDeflateOnOOM = try input.bool("deflate on OOM")
        testDevices = try input.bool("test devices")
        imagePath = try input.string("image path")
        commandLine = try input.string("command line", maximum: Layout.commandLineMax)
        tscKHz = try input.u32("TSC kHz")
        if !input.isAtEnd { // snapshots of swiftvmm before disks end here
            for _ in 0..<(try input.count("disks", maximum: Platform.virtioMaximum)) {
                let path = try input.string("disk path")
                let readOnly = try input.bool("disk read-only")
                let id = try input.string("disk id", maximum: BlockModel.idLength)
                guard !path.isEmpty, DiskConfig.validID(id) else { throw .invalid("configuration: disk \(path.printableExcerpt()) named \(id.printableExcerpt())") }
                disks.append(DiskConfig(path: path, readOnly: readOnly, id: id))
            }
        }
        if !input.isAtEnd { // and before network interfaces here
            for _ in 0..<(try input.count("network interfaces", maximum: Platform.virtioMaximum)) {
                let tap = try input.string("tap", maximum: 16)
                let mac = try input.raw("MAC", count: 6)
                let id = try input.string("interface id", maximum: BlockModel.idLength)
                guard NetConfig.validTapName(tap), DiskConfig.validID(id), mac[0] & 1 == 0 else {
                    throw .invalid("configuration: network interface \(id.printableExcerpt()) on tap \(tap.printableExcerpt())")
                }
                nets.append(NetConfig(tap: tap, mac: mac, id: id))
            }
        }
        try input.finish()
    }

    /// The restoring command line's settings with this machine's shape.
    func applied(to runtime: VMConfig) -> VMConfig {
        var config = runtime
        (config.imagePath, config.commandLine, config.memorySize, config.cpus) = (imagePath, commandLine, memorySize, cpus)
        config.interruptControllers = interruptControllers
        config.pit = kernelPIT ? .kernel : .emulated
        (config.balloon, config.balloonDeflateOnOOM, config.testDevices) = (balloon, balloonDeflateOnOOM, testDevices)
        (config.disks, config.nets) = (disks, nets)
        // Device state (the balloon's target and interval among it) comes from the snapshot.
        (config.balloonTarget, config.balloonStatsInterval) = (0, 1)
        (config.format, config.modules, config.initrd) = (.auto, [], nil)
        return config
    }
}

/// The sections of a snapshot, and the two directions: a paused machine into them, and them
/// back into a machine being built.
enum MachineSnapshot {
    static let configTag = "CONF", memoryMapTag = "MMAP", kvmTag = "KVMS", cpuidTag = "CPID", vcpuTag = "VCPU"
    static let vmTag = "KVMV", deviceTag = "DEVS"

    // MARK: saving

    /// The machine's shape: what a destination checks before anything is copied (CONF, MMAP,
    /// KVMS, CPID).
    static func shapeSections(of machine: Machine, support: KVMStateSupport) -> [SnapshotFile.Section] {
        var sections: [SnapshotFile.Section] = []
        sections.append(.init(configTag, SnapshotConfig(machine.config, tscKHz: machine.tscKHz).encoded))
        var map = StateWriter()
        map.u32(UInt32(machine.memory.regions.count))
        for (region, offset) in zip(machine.memory.regions, machine.memory.fileOffsets) {
            map.u64(region.guestStart)
            map.u64(UInt64(region.size))
            map.u64(offset)
        }
        sections.append(.init(memoryMapTag, map.bytes))
        var kvm = StateWriter()
        kvm.u32(UInt32(support.xsaveSize))
        kvm.bool(support.specialRegisters2)
        sections.append(.init(kvmTag, kvm.bytes))
        for index in machine.vcpus.indices {
            sections.append(.init(cpuidTag, index: UInt32(index), encode(cpuid: machine.cpuid[index])))
        }
        return sections
    }

    /// Everything: the shape, each vCPU's and the VM's KVM state, every device's.
    static func sections(of machine: Machine, support: KVMStateSupport) throws(SnapshotError) -> [SnapshotFile.Section] {
        var sections = shapeSections(of: machine, support: support)
        do {
            for (index, vcpu) in machine.vcpus.enumerated() {
                sections.append(.init(vcpuTag, index: UInt32(index), encode(try vcpu.saveState(support))))
            }
            let vmState = try machine.vm.saveState(irqchip: machine.config.interruptControllers, pit: machine.config.pit == .kernel)
            sections.append(.init(vmTag, encode(vmState)))
        } catch { throw .failed(error.description) }
        let now = SystemMonotonicClock().nanoseconds()
        var devices = StateWriter()
        devices.u32(UInt32(machine.snapshotDevices.count))
        for (name, device) in machine.snapshotDevices {
            devices.string(name)
            devices.blob(device.saveState(now: now))
        }
        sections.append(.init(deviceTag, devices.bytes))
        return sections
    }

    static func encode(cpuid: [CPUIDEntry]) -> [UInt8] {
        var out = StateWriter()
        out.u32(UInt32(cpuid.count))
        for entry in cpuid {
            for value in [entry.function, entry.index, entry.flags, entry.eax, entry.ebx, entry.ecx, entry.edx] { out.u32(value) }
        }
        return out.bytes
    }

    static func encode(_ state: VCPUState) -> [UInt8] {
        var out = StateWriter()
        for part in [state.registers, state.specialRegisters, state.xsave, state.xcrs, state.debugRegisters, state.localAPIC, state.events] {
            out.blob(part)
        }
        out.bool(state.specialRegisters2)
        out.u32(state.mpState)
        out.u32(UInt32(state.msrs.count))
        for msr in state.msrs {
            out.u32(msr.index)
            out.u64(msr.value)
        }
        return out.bytes
    }

    static func encode(_ state: VMState) -> [UInt8] {
        var out = StateWriter()
        out.u32(UInt32(state.irqchips.count))
        for chip in state.irqchips { out.blob(chip) }
        out.bool(state.pit != nil)
        out.blob(state.pit ?? [])
        out.u64(state.clock)
        return out.bytes
    }

    // MARK: restoring

    /// A state file read and checked, with the parts a restore needs decoded: from a snapshot's
    /// files, or received by a migration (its RAM already filled).
    struct Loaded {
        enum Memory {
            case file(path: String, eager: Bool)
            case received(GuestMemory)
        }
        /// Where the state came from, for messages: the state file's path, or the migration.
        let origin: String
        let file: SnapshotFile
        let memorySource: Memory
        let config: SnapshotConfig
        let xsaveSize: Int
        let specialRegisters2: Bool

        init(_ source: SnapshotSource) throws(VMMError) {
            let file: SnapshotFile
            do { file = try SnapshotFile.read(from: source.statePath) } catch { throw .snapshot(error) }
            try self.init(file, origin: source.statePath, memory: .file(path: source.memoryPath, eager: source.eager))
        }

        init(_ file: SnapshotFile, origin: String, memory: Memory) throws(VMMError) {
            (self.file, self.origin, self.memorySource) = (file, origin, memory)
            do throws(StateError) {
                config = try SnapshotConfig(decoding: try file.section(configTag))
                var kvm = StateReader(try file.section(kvmTag), context: "KVM support")
                xsaveSize = Int(try kvm.u32("XSAVE size"))
                specialRegisters2 = try kvm.bool("SREGS2")
                try kvm.finish()
                guard xsaveSize >= 4096, xsaveSize <= KVMStateSupport.maximumXSAVESize else { throw StateError.invalid("XSAVE size \(xsaveSize)") }
            } catch { throw .snapshot(.state(origin, error)) }
        }

        /// Where RAM comes from, for the log.
        var memoryDescription: String {
            switch memorySource {
            case .file(let path, let eager): return "\(eager ? "read" : "mapped") from \(path)"
            case .received: return "received"
            }
        }

        /// The checks a destination makes before anything is copied: the shape (CONF, MMAP,
        /// KVMS, CPID sections) against this host's KVM, as a restore would make them.
        static func checkShape(_ file: SnapshotFile, kvm: KVMSystem) throws(VMMError) -> SnapshotConfig {
            let shape = try Loaded(file, origin: "the migration", memory: .file(path: "", eager: false))
            let support: KVMStateSupport
            let supported: [CPUIDEntry]
            do { (support, supported) = (try kvm.stateSupport(), try kvm.supportedCPUID()) } catch { throw .kvm(error) }
            guard support.xsaveSize == shape.xsaveSize, support.specialRegisters2 == shape.specialRegisters2 else {
                throw .snapshot(.incompatible("this KVM's XSAVE area is \(support.xsaveSize) bytes (the source's \(shape.xsaveSize)), SREGS2 \(support.specialRegisters2) (\(shape.specialRegisters2))"))
            }
            let memory = Layout.ramRanges(size: shape.config.memorySize)
            do throws(StateError) {
                var map = StateReader(try file.section(memoryMapTag), context: "memory map")
                let count = try map.count("regions", maximum: 16)
                var offset: UInt64 = 0
                guard count == memory.count else { throw StateError.invalid("memory map: \(count) regions, this swiftvmm lays out \(memory.count)") }
                for range in memory {
                    let saved = (try map.u64("start"), try map.u64("size"), try map.u64("file offset"))
                    guard saved == (range.start, range.size, offset) else { throw StateError.invalid("memory map differs from this swiftvmm's") }
                    offset += range.size
                }
            } catch { throw shape.fail(error) }
            for index in 0..<shape.config.cpus { _ = try shape.cpuid(index, supported: supported, cpuCount: shape.config.cpus) }
            return shape.config
        }

        func fail(_ error: StateError) -> VMMError { .snapshot(.state(origin, error)) }

        /// Checks the saved memory map against the one this machine was built with.
        func checkMemoryMap(_ memory: GuestMemory) throws(VMMError) {
            do throws(StateError) {
                var map = StateReader(try file.section(memoryMapTag), context: "memory map")
                let count = try map.count("regions", maximum: 16)
                guard count == memory.regions.count else { throw StateError.invalid("memory map: \(count) regions, this machine has \(memory.regions.count)") }
                for (region, offset) in zip(memory.regions, memory.fileOffsets) {
                    let saved = (try map.u64("start"), try map.u64("size"), try map.u64("file offset"))
                    guard saved == (region.guestStart, UInt64(region.size), offset) else {
                        throw StateError.invalid("memory map: region 0x\(hex(saved.0))+\(saved.1) differs from this machine's 0x\(hex(region.guestStart))+\(region.size)")
                    }
                }
                try map.finish()
            } catch { throw fail(error) }
        }

        /// Fills guest RAM from the memory file: mapped lazily, or read now.
        func loadMemory(_ memory: GuestMemory, logger: Logger) throws(VMMError) {
            guard case .file(let path, let eager) = memorySource else { return }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw .snapshot(.file(path, Errno.current.description)) }
            defer { close(fd) }
            do {
                if eager { _ = try memory.readMemoryFile(fd) } else { try memory.mapMemoryFile(fd) }
            } catch { throw .snapshot(.file(path, error.description)) }
        }

        /// RAM a migration already filled, which the machine takes instead of allocating its own.
        var receivedMemory: GuestMemory? {
            if case .received(let memory) = memorySource { return memory }
            return nil
        }

        /// The CPUID table vCPU `index` saw; refused when it claims a feature this host's table
        /// (as this swiftvmm builds it here) lacks.
        func cpuid(_ index: Int, supported: [CPUIDEntry], cpuCount: Int) throws(VMMError) -> [CPUIDEntry] {
            var entries: [CPUIDEntry] = []
            do throws(StateError) {
                var input = StateReader(try file.section(cpuidTag, index: UInt32(index)), context: "CPUID \(index)")
                for _ in 0..<(try input.count("entries", maximum: 256)) {
                    var fields: [UInt32] = []
                    for _ in 0..<7 { fields.append(try input.u32("entry")) }
                    entries.append(CPUIDEntry(function: fields[0], index: fields[1], flags: fields[2],
                                              eax: fields[3], ebx: fields[4], ecx: fields[5], edx: fields[6]))
                }
                try input.finish()
            } catch { throw fail(error) }
            let here = CPUIDTable.build(supported: supported, vcpu: index, cpuCount: cpuCount)
            if let missing = CPUFeatures.missing(saved: entries, here: here) {
                throw .snapshot(.incompatible("the guest saw CPU features this host lacks (\(missing))"))
            }
            return entries
        }

        func vcpuState(_ index: Int) throws(VMMError) -> VCPUState {
            do throws(StateError) {
                var input = StateReader(try file.section(vcpuTag, index: UInt32(index)), context: "vcpu\(index)")
                var state = VCPUState()
                let sizes = VCPUState.expectedSizes(specialRegisters2: specialRegisters2)
                state.registers = try input.blob("registers", exactly: sizes["registers"]!)
                state.specialRegisters = try input.blob("special registers", exactly: sizes["special registers"]!)
                state.xsave = try input.blob("XSAVE area", exactly: xsaveSize)
                state.xcrs = try input.blob("XCRs", exactly: sizes["xcrs"]!)
                state.debugRegisters = try input.blob("debug registers", exactly: sizes["debug registers"]!)
                state.localAPIC = try input.blob("local APIC", exactly: sizes["local APIC"]!)
                state.events = try input.blob("events", exactly: sizes["events"]!)
                state.specialRegisters2 = try input.bool("SREGS2")
                guard state.specialRegisters2 == specialRegisters2 else { throw StateError.invalid("vcpu\(index): SREGS2 flag differs") }
                state.mpState = try input.u32("MP state")
                guard state.mpState <= 8 else { throw StateError.invalid("vcpu\(index): MP state \(state.mpState)") }
                for _ in 0..<(try input.count("MSRs", maximum: KVMStateSupport.maximumMSRs)) {
                    state.msrs.append((try input.u32("MSR index"), try input.u64("MSR value")))
                }
                try input.finish()
                return state
            } catch { throw fail(error) }
        }

        func vmState() throws(VMMError) -> VMState {
            do throws(StateError) {
                var input = StateReader(try file.section(vmTag), context: "VM state")
                var state = VMState()
                let chips = try input.count("interrupt controllers", maximum: 3)
                guard chips == (config.interruptControllers ? 3 : 0) else { throw StateError.invalid("VM state: \(chips) interrupt controllers") }
                for _ in 0..<chips { state.irqchips.append(try input.blob("irqchip", exactly: VMState.irqchipSize)) }
                let hasPIT = try input.bool("PIT present")
                let pit = try input.blob("PIT", maximum: VMState.pitSize)
                guard hasPIT == config.kernelPIT, !hasPIT || pit.count == VMState.pitSize else { throw StateError.invalid("VM state: PIT") }
                state.pit = hasPIT ? pit : nil
                state.clock = try input.u64("clock")
                try input.finish()
                return state
            } catch { throw fail(error) }
        }

        /// Each saved device's bytes by name; the machine must have exactly these devices.
        func deviceStates(expected names: [String]) throws(VMMError) -> [String: [UInt8]] {
            do throws(StateError) {
                var input = StateReader(try file.section(deviceTag), context: "devices")
                var states: [String: [UInt8]] = [:]
                for _ in 0..<(try input.count("devices", maximum: 64)) {
                    let name = try input.string("device name", maximum: 64)
                    guard states[name] == nil else { throw StateError.invalid("devices: \(name) appears twice") }
                    states[name] = try input.blob("device \(name)", maximum: 1 << 20)
                }
                try input.finish()
                guard Set(states.keys) == Set(names) else {
                    throw StateError.invalid("devices: the snapshot has \(states.keys.sorted().joined(separator: ",")), this machine \(names.sorted().joined(separator: ","))")
                }
                return states
            } catch { throw fail(error) }
        }

        /// Puts everything back into the machine being built, in KVM's order: interrupt
        /// controllers and PIT, our devices (re-raising their lines), each vCPU, then the clock.
        func restore(vm: VirtualMachine, vcpus: [VCPU], devices: [(String, any SnapshotDevice)], support: KVMStateSupport,
                     logger: Logger) throws(VMMError) {
            guard support.xsaveSize == xsaveSize, support.specialRegisters2 == specialRegisters2 else {
                throw .snapshot(.incompatible("this KVM's XSAVE area is \(support.xsaveSize) bytes (the snapshot's \(xsaveSize)), SREGS2 \(support.specialRegisters2) (\(specialRegisters2))"))
            }
            let vmState = try vmState()
            let states = try deviceStates(expected: devices.map(\.0))
            let vcpuStates = try (0..<vcpus.count).map { index throws(VMMError) in try vcpuState(index) }
            do { try vm.restoreDevices(vmState) } catch { throw .snapshot(.incompatible(error.description)) }
            let now = SystemMonotonicClock().nanoseconds()
            for (name, device) in devices {
                do { try device.restoreState(states[name]!, now: now) } catch { throw fail(error) }
            }
            for (index, vcpu) in vcpus.enumerated() {
                do { try vcpu.restoreState(vcpuStates[index], support) } catch {
                    throw .snapshot(.incompatible("vcpu\(index): \(error)"))
                }
                if config.tscKHz != 0, let here = vcpu.tscKHz(), here != config.tscKHz, !vcpu.setTSCKHz(config.tscKHz) {
                    if index == 0 { logger.warning("restore: the guest's TSC ran at \(config.tscKHz) kHz, here at \(here) kHz; this KVM cannot scale it") }
                }
            }
            do { try vm.restoreClock(vmState.clock) } catch { throw .snapshot(.incompatible(error.description)) }
        }
    }
}

/// Feature bits a restored guest may rely on: those of the leaves that list features.
enum CPUFeatures {
    /// (leaf, subleaf, register index 0-3 for eax-edx, bits that can change at run time).
    static let featureRegisters: [(UInt32, UInt32, Int, UInt32)] = [
        (1, 0, 2, 1 << 27), // ECX; OSXSAVE follows CR4
        (1, 0, 3, 0), (7, 0, 1, 0), (7, 0, 2, 0), (7, 0, 3, 0), (0xD, 1, 0, 0), (0x8000_0001, 0, 2, 0), (0x8000_0001, 0, 3, 0),
    ]

    /// The first feature the saved table has that `here` lacks, described; nil when none.
    static func missing(saved: [CPUIDEntry], here: [CPUIDEntry]) -> String? {
        func find(_ table: [CPUIDEntry], _ leaf: UInt32, _ sub: UInt32) -> CPUIDEntry? {
            table.first { $0.function == leaf && ($0.index == sub || $0.flags & CPUIDEntry.significantIndex == 0) }
        }
        for (leaf, sub, register, dynamic) in featureRegisters {
            guard let old = find(saved, leaf, sub) else { continue }
            let new = find(here, leaf, sub)
            let values: [UInt32] = [old.eax, old.ebx, old.ecx, old.edx]
            let current: [UInt32] = new.map { [$0.eax, $0.ebx, $0.ecx, $0.edx] } ?? [0, 0, 0, 0]
            let lacking = values[register] & ~current[register] & ~dynamic
            if lacking != 0 {
                return "CPUID 0x\(hex(UInt64(leaf))).\(sub) \(["eax", "ebx", "ecx", "edx"][register]) bits 0x\(hex(UInt64(lacking)))"
            }
        }
        return nil
    }
}

extension Machine {
    /// Saves the paused machine: the state file (written whole, then renamed into place) and
    /// the memory file (sparse: zero pages are holes). The VM must be paused; it stays paused.
    /// A `diff` snapshot (the machine tracking dirty pages) writes only the pages changed since
    /// this machine's last snapshot, into that snapshot's memory file in place.
    /// Why a VM whose guest holds files open on its share cannot be saved or moved: the state
    /// would name host descriptors the restored VM does not have.
    static func openShareFiles(_ count: Int) -> String {
        "the guest holds \(count) file\(count == 1 ? "" : "s") open on its share (--share); a snapshot cannot carry host files: close them first"
    }

    public func saveSnapshot(statePath: String, memoryPath: String, diff: Bool = false) throws(SnapshotError) -> SnapshotReport {
        guard control.isPauseRequested, control.allParked else { throw .notPaused }
        guard let support = stateSupport else { throw .failed("this KVM cannot list the MSRs to save") }
        guard !config.deterministic else { throw .failed("a deterministic VM cannot be snapshotted (its 8259 pair and virtual clock are not saved)") }
        if let open = share?.share.openFiles, open > 0 { throw .failed(Machine.openShareFiles(open)) }
        if diff {
            guard config.trackDirtyPages else { throw .failed("a Diff snapshot needs dirty-page tracking from the start (--track-dirty-pages, track_dirty_pages)") }
            let last = lastSnapshotMemory.withLock { $0 }
            guard last == memoryPath else {
                throw .failed("a Diff snapshot updates the memory file of this VM's last snapshot (\(last ?? "none yet: take a Full one first"))")
            }
        }
        let start = Clocks.monotonicNanoseconds()
        let sections = try MachineSnapshot.sections(of: self, support: support)
        // What changed since the last snapshot; a Full one starts the count again.
        var changed: [[UInt64]] = []
        if config.trackDirtyPages {
            do { changed = try dirtyTracking.take("snapshot") } catch { throw .failed("dirty log: \(error)") }
        }
        let stateDone = Clocks.monotonicNanoseconds()
        let file = SnapshotFile(sections: sections)
        let encoded = file.encoded // encoded once: its size is reported, its bytes written
        let encodedSize = encoded.count
        let state = try file.writePartial(to: statePath, bytes: encoded)
        let written: UInt64
        do throws(SnapshotError) {
            written = diff ? try updateMemoryFile(memoryPath, pages: changed) : try writeMemoryFile(memoryPath)
        } catch {
            state.discard()
            throw error
        }
        let memoryDone = Clocks.monotonicNanoseconds()
        try state.commit()
        lastSnapshotMemory.withLock { $0 = memoryPath }
        logger.info("snapshot: \(statePath) and \(memoryPath) (\(diff ? "diff" : "full"), \(written >> 10) KiB of \(memory.totalSize >> 20) MiB RAM written)")
        return SnapshotReport(stateBytes: encodedSize, memoryBytesWritten: written, guestRAM: UInt64(memory.totalSize),
                              stateMilliseconds: Double(stateDone - start) / 1e6, memoryMilliseconds: Double(memoryDone - stateDone) / 1e6)
    }

    /// A full memory file, written beside its name and renamed into place.
    private func writeMemoryFile(_ memoryPath: String) throws(SnapshotError) -> UInt64 {
        let memoryFile = PartialFile(path: memoryPath)
        let fd = open(memoryFile.temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .file(memoryFile.temporary, Errno.current.description) }
        let written: UInt64
        do throws(GuestMemoryError) {
            defer { close(fd) }
            written = try memory.writeMemoryFile(fd)
            guard fdatasync(fd) == 0 else { throw GuestMemoryError.file("syncing the memory file", errno: errno) }
        } catch {
            memoryFile.discard()
            throw .file(memoryPath, error.description)
        }
        try memoryFile.commit()
        return written
    }

    /// The changed pages written over the last snapshot's memory file (zero pages punched out).
    private func updateMemoryFile(_ memoryPath: String, pages bitmaps: [[UInt64]]) throws(SnapshotError) -> UInt64 {
        let fd = open(memoryPath, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw .file(memoryPath, Errno.current.description) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size == off_t(memory.totalSize) else {
            throw .file(memoryPath, "not this VM's memory file (its size is not the RAM's)")
        }
        var pages: [UInt64] = []
        for (region, words) in zip(memory.regions, bitmaps) {
            let first = region.guestStart / UInt64(memory.pageSize)
            for (word, bits) in words.enumerated() where bits != 0 {
                for bit in 0..<64 where bits & (1 << UInt64(bit)) != 0 { pages.append(first + UInt64(word * 64 + bit)) }
            }
        }
        do throws(GuestMemoryError) {
            let written = try memory.writeMemoryPages(fd, pages: pages)
            guard fdatasync(fd) == 0 else { throw GuestMemoryError.file("syncing the memory file", errno: errno) }
            return written
        } catch { throw .file(memoryPath, error.description) }
    }
}
