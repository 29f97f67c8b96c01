import VMM

/// Request and response bodies with Firecracker's field names (its swagger definitions of the same
/// names), so clients written for Firecracker's API read and write them unchanged. Request bodies
/// refuse unknown fields. docs/api.md and docs/openapi.yaml describe them.

/// `GET /`.
public struct InstanceInfo: Codable, Sendable, Equatable {
    public var id: String
    /// "Not started", "Running" or "Paused".
    public var state: String
    public var vmm_version: String
    public var app_name: String
}

/// `GET /version`.
public struct VersionInfo: Codable, Sendable, Equatable {
    public var firecracker_version: String
}

/// `GET|PUT|PATCH /machine-config`. PATCH takes any subset of the fields.
public struct MachineConfiguration: Codable, Sendable, Equatable {
    public var vcpu_count: Int
    public var mem_size_mib: Int
    public var smt: Bool
    public var track_dirty_pages: Bool
    /// "None" or "Transparent" ("2M", hugetlbfs, is refused).
    public var huge_pages: String
    public var cpu_template: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case vcpu_count, mem_size_mib, smt, track_dirty_pages, huge_pages, cpu_template
    }

    public init(vcpu_count: Int, mem_size_mib: Int, smt: Bool = false, track_dirty_pages: Bool = false,
                huge_pages: String = "None", cpu_template: String? = nil) {
        self.vcpu_count = vcpu_count
        self.mem_size_mib = mem_size_mib
        self.smt = smt
        self.track_dirty_pages = track_dirty_pages
        self.huge_pages = huge_pages
        self.cpu_template = cpu_template
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        vcpu_count = try container.decode(Int.self, forKey: .vcpu_count)
        mem_size_mib = try container.decode(Int.self, forKey: .mem_size_mib)
        smt = try container.decodeIfPresent(Bool.self, forKey: .smt) ?? false
        track_dirty_pages = try container.decodeIfPresent(Bool.self, forKey: .track_dirty_pages) ?? false
        huge_pages = try container.decodeIfPresent(String.self, forKey: .huge_pages) ?? "None"
        cpu_template = try container.decodeIfPresent(String.self, forKey: .cpu_template)
    }
}

/// `PATCH /machine-config`: the fields given replace the current ones.
struct MachineConfigurationUpdate: Decodable {
    var vcpu_count: Int?
    var mem_size_mib: Int?
    var smt: Bool?
    var track_dirty_pages: Bool?
    var huge_pages: String?
    var cpu_template: String?

    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(MachineConfiguration.CodingKeys.self)
        let container = try decoder.container(keyedBy: MachineConfiguration.CodingKeys.self)
        vcpu_count = try container.decodeIfPresent(Int.self, forKey: .vcpu_count)
        mem_size_mib = try container.decodeIfPresent(Int.self, forKey: .mem_size_mib)
        smt = try container.decodeIfPresent(Bool.self, forKey: .smt)
        track_dirty_pages = try container.decodeIfPresent(Bool.self, forKey: .track_dirty_pages)
        huge_pages = try container.decodeIfPresent(String.self, forKey: .huge_pages)
        cpu_template = try container.decodeIfPresent(String.self, forKey: .cpu_template)
    }

    func applied(to base: MachineConfiguration) -> MachineConfiguration {
        var result = base
        if let vcpu_count { result.vcpu_count = vcpu_count }
        if let mem_size_mib { result.mem_size_mib = mem_size_mib }
        if let smt { result.smt = smt }
        if let track_dirty_pages { result.track_dirty_pages = track_dirty_pages }
        if let huge_pages { result.huge_pages = huge_pages }
        if let cpu_template { result.cpu_template = cpu_template }
        return result
    }
}

/// `PUT /boot-source`. `kernel_image_path` may name any image `swiftvmm run` boots: a Linux
/// bzImage or vmlinux, a multiboot kernel, an ELF64 or flat binary of ours.
public struct BootSource: Codable, Sendable, Equatable {
    public var kernel_image_path: String
    public var boot_args: String?
    public var initrd_path: String?

    enum CodingKeys: String, CodingKey, CaseIterable { case kernel_image_path, boot_args, initrd_path }

    public init(kernel_image_path: String, boot_args: String? = nil, initrd_path: String? = nil) {
        self.kernel_image_path = kernel_image_path
        self.boot_args = boot_args
        self.initrd_path = initrd_path
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        kernel_image_path = try container.decode(String.self, forKey: .kernel_image_path)
        boot_args = try container.decodeIfPresent(String.self, forKey: .boot_args)
        initrd_path = try container.decodeIfPresent(String.self, forKey: .initrd_path)
    }
}

/// `PUT /drives/{drive_id}`, before the VM starts: a raw image as a virtio-blk disk. The root
/// device becomes the first disk (Linux's /dev/vda) and adds `root=` to the boot arguments.
/// `cache_type` Unsafe and Writeback both honour the guest's flushes; `io_engine` is Sync.
public struct Drive: Codable, Sendable, Equatable {
    public var drive_id: String
    public var path_on_host: String
    public var is_root_device: Bool
    public var is_read_only: Bool
    public var partuuid: String?
    public var cache_type: String?
    public var io_engine: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case drive_id, path_on_host, is_root_device, is_read_only, partuuid, cache_type, io_engine, rate_limiter, socket
    }

    public init(drive_id: String, path_on_host: String, is_root_device: Bool = false, is_read_only: Bool = false, partuuid: String? = nil) {
        (self.drive_id, self.path_on_host, self.is_root_device, self.is_read_only) = (drive_id, path_on_host, is_root_device, is_read_only)
        self.partuuid = partuuid
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        drive_id = try container.decode(String.self, forKey: .drive_id)
        path_on_host = try container.decode(String.self, forKey: .path_on_host)
        is_root_device = try container.decode(Bool.self, forKey: .is_root_device)
        is_read_only = try container.decodeIfPresent(Bool.self, forKey: .is_read_only) ?? false
        partuuid = try container.decodeIfPresent(String.self, forKey: .partuuid)
        cache_type = try container.decodeIfPresent(String.self, forKey: .cache_type)
        io_engine = try container.decodeIfPresent(String.self, forKey: .io_engine)
        if container.contains(.rate_limiter) { throw APIFailure.badRequest("rate_limiter is not supported for drives") }
        if container.contains(.socket) { throw APIFailure.badRequest("vhost-user drives (socket) are not supported") }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(drive_id, forKey: .drive_id)
        try container.encode(path_on_host, forKey: .path_on_host)
        try container.encode(is_root_device, forKey: .is_root_device)
        try container.encode(is_read_only, forKey: .is_read_only)
        try container.encodeIfPresent(partuuid, forKey: .partuuid)
        try container.encodeIfPresent(cache_type, forKey: .cache_type)
        try container.encodeIfPresent(io_engine, forKey: .io_engine)
    }
}

/// `PUT /network-interfaces/{iface_id}`, before the VM starts: a virtio-net interface on a host
/// tap (attached, or created and removed at the end).
public struct NetworkInterfaceConfiguration: Codable, Sendable, Equatable {
    public var iface_id: String
    public var host_dev_name: String
    public var guest_mac: String?

    enum CodingKeys: String, CodingKey, CaseIterable { case iface_id, host_dev_name, guest_mac, rx_rate_limiter, tx_rate_limiter }

    public init(iface_id: String, host_dev_name: String, guest_mac: String? = nil) {
        (self.iface_id, self.host_dev_name, self.guest_mac) = (iface_id, host_dev_name, guest_mac)
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        iface_id = try container.decode(String.self, forKey: .iface_id)
        host_dev_name = try container.decode(String.self, forKey: .host_dev_name)
        guest_mac = try container.decodeIfPresent(String.self, forKey: .guest_mac)
        if container.contains(.rx_rate_limiter) || container.contains(.tx_rate_limiter) {
            throw APIFailure.badRequest("rate limiters are not supported for network interfaces")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(iface_id, forKey: .iface_id)
        try container.encode(host_dev_name, forKey: .host_dev_name)
        try container.encodeIfPresent(guest_mac, forKey: .guest_mac)
    }
}

/// `PUT|GET /balloon`.
public struct BalloonConfiguration: Codable, Sendable, Equatable {
    public var amount_mib: Int
    public var deflate_on_oom: Bool
    public var stats_polling_interval_s: Int

    enum CodingKeys: String, CodingKey, CaseIterable {
        case amount_mib, deflate_on_oom, stats_polling_interval_s, free_page_hinting, free_page_reporting
    }

    public init(amount_mib: Int, deflate_on_oom: Bool, stats_polling_interval_s: Int) {
        self.amount_mib = amount_mib
        self.deflate_on_oom = deflate_on_oom
        self.stats_polling_interval_s = stats_polling_interval_s
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        amount_mib = try container.decode(Int.self, forKey: .amount_mib)
        deflate_on_oom = try container.decode(Bool.self, forKey: .deflate_on_oom)
        stats_polling_interval_s = try container.decodeIfPresent(Int.self, forKey: .stats_polling_interval_s) ?? 0
        // Free page hinting and reporting are virtio-balloon features this device does not offer.
        if try container.decodeIfPresent(Bool.self, forKey: .free_page_hinting) == true {
            throw APIFailure.badRequest("free_page_hinting is not supported by this balloon")
        }
        if try container.decodeIfPresent(Bool.self, forKey: .free_page_reporting) == true {
            throw APIFailure.badRequest("free_page_reporting is not supported by this balloon")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(amount_mib, forKey: .amount_mib)
        try container.encode(deflate_on_oom, forKey: .deflate_on_oom)
        try container.encode(stats_polling_interval_s, forKey: .stats_polling_interval_s)
    }
}

/// `GET /balloon/statistics`: the device's target and size, and the guest's last statistics
/// (virtio-balloon tags, Firecracker's names; a tag the guest never sent is left out).
public struct BalloonStatisticsReply: Codable, Sendable, Equatable {
    public var target_pages: UInt64
    public var actual_pages: UInt64
    public var target_mib: UInt64
    public var actual_mib: UInt64
    public var swap_in: UInt64?
    public var swap_out: UInt64?
    public var major_faults: UInt64?
    public var minor_faults: UInt64?
    public var free_memory: UInt64?
    public var total_memory: UInt64?
    public var available_memory: UInt64?
    public var disk_caches: UInt64?
    public var hugetlb_allocations: UInt64?
    public var hugetlb_failures: UInt64?
}

/// `GET /vm/config`.
public struct FullVmConfiguration: Codable, Sendable, Equatable {
    public var balloon: BalloonConfiguration?
    public var drives: [Drive] = []
    public var boot_source: BootSource?
    public var machine_config: MachineConfiguration
    public var network_interfaces: [NetworkInterfaceConfiguration] = []

    enum CodingKeys: String, CodingKey {
        case balloon, drives
        case boot_source = "boot-source"
        case machine_config = "machine-config"
        case network_interfaces = "network-interfaces"
    }
}

/// `PUT /metrics`.
typealias MetricsConfiguration = OneField<MetricsPathField, String>
enum MetricsPathField: FieldName { static let name = "metrics_path" }

/// `PUT /logger`: every field optional, as in Firecracker.
struct LoggerConfiguration: Decodable {
    var level: String?
    var log_path: String?
    var show_level: Bool?
    var show_log_origin: Bool?
    var module: String?

    enum CodingKeys: String, CodingKey, CaseIterable { case level, log_path, show_level, show_log_origin, module }

    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        level = try container.decodeIfPresent(String.self, forKey: .level)
        log_path = try container.decodeIfPresent(String.self, forKey: .log_path)
        show_level = try container.decodeIfPresent(Bool.self, forKey: .show_level)
        show_log_origin = try container.decodeIfPresent(Bool.self, forKey: .show_log_origin)
        module = try container.decodeIfPresent(String.self, forKey: .module)
    }
}

/// A request body of one required field: `PUT /actions` (action_type), `PATCH /vm` (state),
/// `PATCH /balloon` (amount_mib), `PATCH /balloon/statistics` (stats_polling_interval_s).
struct OneField<Name: FieldName, Value: Decodable>: Decodable {
    let value: Value

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        if let unknown = container.allKeys.first(where: { $0.stringValue != Name.name }) {
            throw APIFailure.badRequest("unknown field '\(unknown.stringValue)'")
        }
        value = try container.decode(Value.self, forKey: AnyCodingKey(stringValue: Name.name))
    }
}

protocol FieldName { static var name: String { get } }
enum ActionTypeField: FieldName { static let name = "action_type" }
enum StateField: FieldName { static let name = "state" }
enum AmountField: FieldName { static let name = "amount_mib" }
enum StatsIntervalField: FieldName { static let name = "stats_polling_interval_s" }
typealias InstanceActionInfo = OneField<ActionTypeField, String>
typealias VmState = OneField<StateField, String>
typealias BalloonUpdate = OneField<AmountField, Int>
typealias BalloonStatsUpdate = OneField<StatsIntervalField, Int>

/// Every error reply's body.
struct FaultReply: Encodable {
    var fault_message: String
}

/// `PUT /snapshot/create`: a paused VM's state and memory to files.
struct SnapshotCreateParams: Decodable {
    /// "Full" (the default). "Diff" needs dirty-page tracking, which this VMM does not have yet.
    var snapshot_type: String
    var snapshot_path: String
    var mem_file_path: String

    enum CodingKeys: String, CodingKey, CaseIterable {
        case snapshot_type, snapshot_path, mem_file_path, version
    }

    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        snapshot_type = try container.decodeIfPresent(String.self, forKey: .snapshot_type) ?? "Full"
        snapshot_path = try container.decode(String.self, forKey: .snapshot_path)
        mem_file_path = try container.decode(String.self, forKey: .mem_file_path)
        _ = try container.decodeIfPresent(String.self, forKey: .version) // Firecracker's, deprecated there
    }
}

/// `PUT /snapshot/load`'s memory backend: a file (Firecracker also knows "Uffd", a page-fault
/// handler process, which this VMM does not offer).
struct MemoryBackend: Decodable {
    var backend_type: String
    var backend_path: String

    enum CodingKeys: String, CodingKey, CaseIterable { case backend_type, backend_path }

    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        backend_type = try container.decode(String.self, forKey: .backend_type)
        backend_path = try container.decode(String.self, forKey: .backend_path)
    }
}

/// `PUT /snapshot/load`, before anything was started.
struct SnapshotLoadParams: Decodable {
    var snapshot_path: String
    var mem_backend: MemoryBackend?
    /// Firecracker's older field for a file backend.
    var mem_file_path: String?
    var enable_diff_snapshots: Bool
    var resume_vm: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case snapshot_path, mem_backend, mem_file_path, enable_diff_snapshots, resume_vm
    }

    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        snapshot_path = try container.decode(String.self, forKey: .snapshot_path)
        mem_backend = try container.decodeIfPresent(MemoryBackend.self, forKey: .mem_backend)
        mem_file_path = try container.decodeIfPresent(String.self, forKey: .mem_file_path)
        enable_diff_snapshots = try container.decodeIfPresent(Bool.self, forKey: .enable_diff_snapshots) ?? false
        resume_vm = try container.decodeIfPresent(Bool.self, forKey: .resume_vm) ?? false
    }
}

/// `PUT /migrate` (swiftvmm's own; Firecracker has no live migration).
struct MigrateParams: Decodable {
    var destination_url: String
    var downtime_ms: Int
    var timeout_s: Int
    /// "precopy" (the default) or "naive" (pause, copy everything, resume there).
    var mode: String

    enum CodingKeys: String, CodingKey, CaseIterable { case destination_url, downtime_ms, timeout_s, mode }

    init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        destination_url = try container.decode(String.self, forKey: .destination_url)
        downtime_ms = try container.decodeIfPresent(Int.self, forKey: .downtime_ms) ?? 50
        timeout_s = try container.decodeIfPresent(Int.self, forKey: .timeout_s) ?? 60
        mode = try container.decodeIfPresent(String.self, forKey: .mode) ?? "precopy"
    }
}

/// `GET /migrate`: the current or last migration.
public struct MigrationStatus: Codable, Sendable, Equatable {
    public var state: String
    public var destination_url: String
    public var mode: String
    public var iteration: Int
    public var pages_sent: UInt64
    public var zero_pages_sent: UInt64
    public var bytes_sent: UInt64
    public var dirty_pages: UInt64
    public var dirty_rate_mib_s: Double
    public var bandwidth_mib_s: Double
    public var estimated_downtime_ms: Double?
    public var elapsed_ms: Double
    public var downtime_ms: Double?
    public var guest_ram_bytes: UInt64
    public var error: String?

    init(_ progress: MigrationProgress) {
        state = progress.phase.rawValue
        destination_url = progress.destination
        mode = progress.naive ? "naive" : "precopy"
        iteration = progress.iteration
        (pages_sent, zero_pages_sent, bytes_sent) = (progress.pagesSent, progress.zeroPagesSent, progress.bytesSent)
        (dirty_pages, dirty_rate_mib_s, bandwidth_mib_s) = (progress.dirtyPages, progress.dirtyRateMiBps, progress.bandwidthMiBps)
        estimated_downtime_ms = progress.estimatedDowntimeMilliseconds.isFinite ? progress.estimatedDowntimeMilliseconds : nil
        (elapsed_ms, downtime_ms, guest_ram_bytes, error) = (progress.elapsedMilliseconds, progress.downtimeMilliseconds, progress.guestRAMBytes, progress.error)
    }
}
