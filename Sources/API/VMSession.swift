import Boot
import Host
import Synchronization
import VMM

/// A running VM as the API sees it; `Machine` is one, tests use fakes.
public protocol RunningVM: AnyObject, Sendable {
    var isPaused: Bool { get }
    var isStopping: Bool { get }
    func pause()
    func resume()
    /// Ends the run as a host stop (status 72).
    func stop()
    /// Bytes of guest RAM the host holds now.
    func guestResidentBytes() -> Int
    /// How resident guest RAM is backed, with page sharing on (nil otherwise).
    func pageSharing() -> PageSharing?
    /// Each vCPU's steal time as its guest's steal-time record holds it (nil: not enabled).
    func guestStealNanoseconds() -> [UInt64?]
    var balloonHandle: (any BalloonHandle)? { get }
    /// Each vCPU thread's kernel id (nil until it started).
    func vcpuThreadIDs() -> [Int32?]
    /// Each vCPU's exit counts by reason, as of now.
    func liveExitCounts() -> [[ExitStatistics.Reason: UInt64]]
    /// Saves the paused VM's state and memory (PUT /snapshot/create); `diff`: only what changed
    /// since the last snapshot, into its memory file.
    func saveSnapshot(statePath: String, memoryPath: String, diff: Bool) throws(SnapshotError) -> SnapshotReport
    /// Starts a live migration on a thread of its own (PUT /migrate).
    func startMigration(_ request: MigrationRequest) throws(MigrationError)
    /// The current or last migration (GET /migrate).
    func migrationProgress() -> MigrationProgress?
    /// Presses the ACPI power button (wakes a guest suspended to RAM); false without one.
    func pressPowerButton() -> Bool
}

/// The balloon as the API drives it; `BalloonControl` is one.
public protocol BalloonHandle: Sendable {
    func setTarget(bytes: UInt64)
    func setStatsInterval(seconds: Double)
    func status() -> BalloonControl.Status
    var deflateOnOOM: Bool { get }
    var statsIntervalSeconds: Double { get }
    /// Times the device gave up on a queue the guest broke.
    var queueErrors: Int { get }
}

extension BalloonControl: BalloonHandle {}

extension Machine: RunningVM {
    public var balloonHandle: (any BalloonHandle)? { balloon }
    public func guestResidentBytes() -> Int { memory.residentBytes() }
}

/// What starts the session's VM: a boot (`InstanceStart`), or a restore (`PUT /snapshot/load`)
/// with this process's own settings, started paused unless `resume`.
public enum StartRequest: Sendable {
    case boot(VMConfig)
    case restore(SnapshotSource, runtime: VMConfig, resume: Bool)
}

/// Builds and starts the session's VM: the running VM, or why it could not be built.
public typealias VMStarter = @Sendable (StartRequest) -> Result<any RunningVM, APIFailure>

/// The one VM an API server manages: configured through the API before it boots (`swiftvmm
/// serve`), or already running (`swiftvmm run --api-sock`). Every request goes through this
/// state, under one lock; nothing here blocks on the guest.
public final class VMSession: Sendable {
    enum Phase {
        case configuring
        case starting
        case running(any RunningVM)
    }

    struct State {
        var phase: Phase
        var machine: MachineConfiguration
        var bootSource: BootSource?
        var balloon: BalloonConfiguration?
        /// `PUT /drives/{id}`, in the order they were first put.
        var drives: [Drive] = []
        /// `PUT /network-interfaces/{id}`, in the order they were first put.
        var interfaces: [NetworkInterfaceConfiguration] = []
        /// Everything else the command line set (serial, PIT, devices...), kept as it is.
        var base: VMConfig
    }

    public let instanceID: String
    private let state: Mutex<State>
    private let starter: VMStarter?

    /// A session whose VM is configured through the API and started by `starter`. `base` holds
    /// the settings the API has no fields for (serial output, PIT, logging...).
    public init(instanceID: String, base: VMConfig, starter: @escaping VMStarter) {
        self.instanceID = instanceID
        self.starter = starter
        state = Mutex(State(phase: .configuring, machine: Self.machineConfiguration(of: base), bootSource: nil,
                            balloon: nil, base: base))
    }

    /// A session for a VM the command line built and started.
    public init(instanceID: String, running vm: any RunningVM, config: VMConfig) {
        self.instanceID = instanceID
        starter = nil
        var balloon: BalloonConfiguration?
        if config.balloon {
            balloon = BalloonConfiguration(amount_mib: Int(config.balloonTarget >> 20), deflate_on_oom: config.balloonDeflateOnOOM,
                                           stats_polling_interval_s: Self.wholeSeconds(config.balloonStatsInterval))
        }
        let boot = BootSource(kernel_image_path: config.imagePath, boot_args: config.commandLine.isEmpty ? nil : config.commandLine,
                              initrd_path: config.initrd)
        state = Mutex(State(phase: .running(vm), machine: Self.machineConfiguration(of: config), bootSource: boot,
                            balloon: balloon, base: config))
    }

    /// An interval in Firecracker's whole seconds: a sub-second one (`--balloon-stats-interval
    /// 0.2`) is 1, never 0, which would say statistics are off.
    static func wholeSeconds(_ seconds: Double) -> Int {
        guard seconds > 0 else { return 0 }
        return seconds < 1 ? 1 : Int(min(seconds, 3600))
    }

    static func machineConfiguration(of config: VMConfig) -> MachineConfiguration {
        MachineConfiguration(vcpu_count: config.cpus, mem_size_mib: Int(config.memorySize >> 20),
                             track_dirty_pages: config.trackDirtyPages, huge_pages: config.hugePages ? "Transparent" : "None")
    }

    // MARK: reads

    /// "Not started", "Running" or "Paused".
    public var stateName: String {
        state.withLock { state in
            switch state.phase {
            case .configuring, .starting: return "Not started"
            case .running(let vm): return vm.isPaused ? "Paused" : "Running"
            }
        }
    }

    var machineConfiguration: MachineConfiguration { state.withLock { $0.machine } }

    var fullConfiguration: FullVmConfiguration {
        state.withLock { state in
            var balloon = state.balloon
            if case .running(let vm) = state.phase, let handle = vm.balloonHandle, var current = balloon {
                current.amount_mib = Int(handle.status().targetBytes >> 20)
                current.stats_polling_interval_s = Self.wholeSeconds(handle.statsIntervalSeconds)
                balloon = current
            }
            return FullVmConfiguration(balloon: balloon, drives: state.drives, boot_source: state.bootSource, machine_config: state.machine,
                                       network_interfaces: state.interfaces)
        }
    }

    /// The running VM, or the failure a request that needs one gets.
    func running() throws(APIFailure) -> any RunningVM {
        let phase = state.withLock { $0.phase }
        guard case .running(let vm) = phase else { throw .badRequest("the microVM has not been started (PUT /actions InstanceStart)") }
        return vm
    }

    // MARK: pre-boot configuration

    private func configuring<R>(_ body: (inout State) throws(APIFailure) -> R) throws(APIFailure) -> R {
        try state.withLock { (state: inout State) throws(APIFailure) -> R in
            guard case .configuring = state.phase else {
                throw .badRequest("the requested operation is not supported after starting the microVM")
            }
            return try body(&state)
        }
    }

    func setMachineConfiguration(_ configuration: MachineConfiguration) throws(APIFailure) {
        try Self.check(configuration)
        try configuring { state throws(APIFailure) in state.machine = configuration }
    }

    func updateMachineConfiguration(_ update: MachineConfigurationUpdate) throws(APIFailure) {
        try configuring { state throws(APIFailure) in
            let updated = update.applied(to: state.machine)
            try Self.check(updated)
            state.machine = updated
        }
    }

    func setBootSource(_ source: BootSource) throws(APIFailure) {
        guard !source.kernel_image_path.isEmpty else { throw .badRequest("kernel_image_path must not be empty") }
        try configuring { state throws(APIFailure) in state.bootSource = source }
    }

    func setBalloon(_ balloon: BalloonConfiguration) throws(APIFailure) {
        try Self.checkStatsInterval(balloon.stats_polling_interval_s)
        guard balloon.amount_mib >= 0 else { throw .badRequest("amount_mib must not be negative") }
        try configuring { state throws(APIFailure) in
            guard UInt64(balloon.amount_mib) <= UInt64(state.machine.mem_size_mib) else {
                throw .badRequest("amount_mib \(balloon.amount_mib) is more than the guest's \(state.machine.mem_size_mib) MiB")
            }
            state.balloon = balloon
        }
    }

    /// Adds or replaces (same drive_id) a drive; `id` is the path's.
    func setDrive(id: String, _ drive: Drive) throws(APIFailure) {
        guard drive.drive_id == id else { throw .badRequest("drive_id '\(drive.drive_id.printableExcerpt())' differs from the path's '\(id.printableExcerpt())'") }
        guard DiskConfig.validID(id) else { throw .badRequest("drive_id must be 1-20 letters, digits, -, _ or .") }
        guard !drive.path_on_host.isEmpty, !drive.path_on_host.utf8.contains(0) else { throw .badRequest("path_on_host must not be empty") }
        guard drive.cache_type == nil || drive.cache_type == "Unsafe" || drive.cache_type == "Writeback" else {
            throw .badRequest("cache_type must be Unsafe or Writeback")
        }
        guard drive.io_engine == nil || drive.io_engine == "Sync" else { throw .badRequest("io_engine must be Sync") }
        if let partuuid = drive.partuuid {
            guard !partuuid.isEmpty, partuuid.utf8.count <= 64, partuuid.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || (48...57).contains($0) || (65...70).contains($0) || (97...102).contains($0) }) else {
                throw .badRequest("partuuid must be hexadecimal digits and dashes")
            }
        }
        try configuring { state throws(APIFailure) in
            if drive.is_root_device, let other = state.drives.first(where: { $0.is_root_device && $0.drive_id != id }) {
                throw .badRequest("drive \(other.drive_id) is already the root device")
            }
            let used = state.drives.count + state.interfaces.count
            try Self.put(drive, into: &state.drives, replacing: { $0.drive_id == id }, slotsUsed: used)
        }
    }

    /// Replaces the entry `replacing` picks, or appends `item` while a virtio-mmio slot is free
    /// (one is kept for the balloon): drives and network interfaces share the slots.
    private static func put<Item>(_ item: Item, into list: inout [Item], replacing: (Item) -> Bool, slotsUsed: Int) throws(APIFailure) {
        if let index = list.firstIndex(where: replacing) {
            list[index] = item
            return
        }
        guard slotsUsed + 1 < Platform.virtioMaximum else {
            throw .badRequest("drives and network interfaces fill the \(Platform.virtioMaximum - 1) virtio-mmio slots")
        }
        list.append(item)
    }

    /// Adds or replaces (same iface_id) a network interface; `id` is the path's.
    func setNetworkInterface(id: String, _ interface: NetworkInterfaceConfiguration) throws(APIFailure) {
        guard interface.iface_id == id else { throw .badRequest("iface_id '\(interface.iface_id.printableExcerpt())' differs from the path's '\(id.printableExcerpt())'") }
        guard DiskConfig.validID(id) else { throw .badRequest("iface_id must be 1-20 letters, digits, -, _ or .") }
        guard NetConfig.validTapName(interface.host_dev_name) else { throw .badRequest("host_dev_name must be an interface name of 1-15 bytes") }
        if let mac = interface.guest_mac, NetConfig.parseMAC(mac) == nil { throw .badRequest("guest_mac must be a unicast aa:bb:cc:dd:ee:ff") }
        try configuring { state throws(APIFailure) in
            let used = state.drives.count + state.interfaces.count
            try Self.put(interface, into: &state.interfaces, replacing: { $0.iface_id == id }, slotsUsed: used)
        }
    }

    /// The drives as disks: the root device first (Linux's /dev/vda), then the others in order;
    /// and the boot argument that names the root device.
    static func disks(of drives: [Drive]) -> (disks: [DiskConfig], rootArgument: String?) {
        let ordered = drives.filter(\.is_root_device) + drives.filter { !$0.is_root_device }
        let disks = ordered.map { DiskConfig(path: $0.path_on_host, readOnly: $0.is_read_only, id: $0.drive_id) }
        guard let root = ordered.first, root.is_root_device else { return (disks, nil) }
        let device = root.partuuid.map { "PARTUUID=\($0)" } ?? "/dev/vda"
        return (disks, "root=\(device) \(root.is_read_only ? "ro" : "rw")")
    }

    static func check(_ configuration: MachineConfiguration) throws(APIFailure) {
        let maximumMiB = Int(Layout.maximumRAM >> 20), minimumMiB = Int(Layout.minimumRAM >> 20)
        guard configuration.vcpu_count >= 1, configuration.vcpu_count <= Layout.maximumVCPUs else {
            throw .badRequest("vcpu_count must be 1 to \(Layout.maximumVCPUs)")
        }
        guard configuration.mem_size_mib >= minimumMiB, configuration.mem_size_mib <= maximumMiB else {
            throw .badRequest("mem_size_mib must be \(minimumMiB) to \(maximumMiB)")
        }
        guard !configuration.smt else { throw .badRequest("smt is not supported: each vCPU is a core of its own") }
        guard configuration.huge_pages == "None" || configuration.huge_pages == "Transparent" else {
            throw .badRequest("huge_pages must be None or Transparent (2M hugetlbfs pages are not supported)")
        }
        guard configuration.cpu_template == nil || configuration.cpu_template == "None" else {
            throw .badRequest("cpu_template must be None (CPU templates are not supported)")
        }
    }

    static func checkStatsInterval(_ seconds: Int) throws(APIFailure) {
        guard seconds >= 0, seconds <= 3600 else { throw .badRequest("stats_polling_interval_s must be 0 to 3600") }
    }

    /// The VM that now runs in place of the last one (a reset with `--on-reboot restart`).
    public func replaceRunning(_ vm: any RunningVM) {
        state.withLock { $0.phase = .running(vm) }
    }

    // MARK: InstanceStart

    /// Builds and boots the configured VM: returns once it runs (or why it could not).
    func start() throws(APIFailure) {
        let config = try state.withLock { (state: inout State) throws(APIFailure) -> VMConfig in
            guard case .configuring = state.phase else { throw .badRequest("the microVM is already running") }
            guard let boot = state.bootSource else { throw .badRequest("no boot source: PUT /boot-source first") }
            var config = state.base
            config.imagePath = boot.kernel_image_path
            config.commandLine = boot.boot_args ?? ""
            config.initrd = boot.initrd_path
            config.cpus = state.machine.vcpu_count
            config.memorySize = UInt64(state.machine.mem_size_mib) << 20
            config.hugePages = state.machine.huge_pages == "Transparent"
            config.trackDirtyPages = state.machine.track_dirty_pages
            if let balloon = state.balloon {
                config.balloon = true
                config.balloonTarget = UInt64(balloon.amount_mib) << 20
                config.balloonDeflateOnOOM = balloon.deflate_on_oom
                config.balloonStatsInterval = Double(balloon.stats_polling_interval_s)
            }
            let (disks, root) = Self.disks(of: state.drives)
            config.disks = disks
            config.nets = state.interfaces.map { NetConfig(tap: $0.host_dev_name, mac: $0.guest_mac.flatMap(NetConfig.parseMAC), id: $0.iface_id) }
            if let root { config.commandLine = [config.commandLine, root].filter { !$0.isEmpty }.joined(separator: " ") }
            state.phase = .starting
            return config
        }
        try launch(.boot(config))
    }

    /// Restores a snapshot instead of a boot (`PUT /snapshot/load`, before anything started):
    /// the machine's shape comes from the snapshot, the rest from the command line.
    func load(_ source: SnapshotSource, resume: Bool) throws(APIFailure) {
        let runtime = try state.withLock { (state: inout State) throws(APIFailure) -> VMConfig in
            guard case .configuring = state.phase else { throw .badRequest("a snapshot can only be loaded before the microVM starts") }
            state.phase = .starting
            return state.base
        }
        try launch(.restore(source, runtime: runtime, resume: resume))
        // What the API reports of the machine follows the restored one.
        state.withLock { state in
            guard case .running(let vm) = state.phase, let machine = vm as? Machine else { return }
            state.machine = Self.machineConfiguration(of: machine.config)
            state.bootSource = BootSource(kernel_image_path: machine.config.imagePath,
                                          boot_args: machine.config.commandLine.isEmpty ? nil : machine.config.commandLine, initrd_path: nil)
            if machine.config.balloon, let handle = machine.balloonHandle {
                state.balloon = BalloonConfiguration(amount_mib: Int(handle.status().targetBytes >> 20), deflate_on_oom: handle.deflateOnOOM,
                                                     stats_polling_interval_s: Self.wholeSeconds(handle.statsIntervalSeconds))
            }
        }
    }

    private func launch(_ request: StartRequest) throws(APIFailure) {
        guard let starter else {
            state.withLock { $0.phase = .configuring }
            throw .badRequest("the microVM is already running")
        }
        switch starter(request) {
        case .success(let vm):
            state.withLock { $0.phase = .running(vm) }
        case .failure(let failure):
            state.withLock { $0.phase = .configuring }
            throw failure
        }
    }
}
