import FoundationEssentials
import Placement

/// `swiftvmm host CONFIG`: the VMs to run in one process and how to manage them (docs/host.md).
public struct HostConfig: Codable, Sendable {
    public struct VM: Codable, Sendable {
        public var name: String
        public var image: String
        /// Guest RAM, the most the VM can have ("1G").
        public var memory: ByteSize
        public var cpus: Int?
        public var cmdline: String?
        /// Initial affinity per vCPU: a list of host CPUs each; absent = every host CPU.
        public var affinity: [[Int]]?
        public var balloon: Bool?
        /// Initial balloon size: the VM starts with memory - balloonTarget usable.
        public var balloonTarget: ByteSize?
        /// "none" (default), "stdio" or "file:PATH".
        public var serial: String?
    }

    public struct CoordinatorValues: Codable, Sendable {
        public var lowWatermark: ByteSize?
        public var highWatermark: ByteSize?
        public var floor: ByteSize?
        public var step: ByteSize?
    }

    public var vms: [VM]
    /// Seconds between controller rounds.
    public var period: Double?
    /// "none", "round-robin" or "load-aware" (default).
    public var placement: String?
    /// "none" or "coordinator" (default when any VM has a balloon).
    public var memoryPolicy: String?
    /// Host CPUs the VMs may use (default: every online CPU).
    public var hostCPUs: [Int]?
    /// Memory the host keeps for itself (default 1G).
    public var hostReserve: ByteSize?
    public var coordinator: CoordinatorValues?
    /// Seconds between balloon statistics requests (default: the period).
    public var statsInterval: Double?

    /// Reads and checks a config file; errors name the file and the problem in one line.
    public static func load(path: String) throws(VMMError) -> HostConfig {
        let bytes: [UInt8]
        do { bytes = try Machine.readImage(path) } catch {
            if case .imageUnreadable(_, let reason) = error { throw .invalidConfig("cannot read host config \(path): \(reason)") }
            throw .invalidConfig("host config \(path) is empty")
        }
        let config: HostConfig
        do { config = try JSONDecoder().decode(HostConfig.self, from: Data(bytes)) } catch {
            throw .invalidConfig("host config \(path): \(Self.describe(error))")
        }
        try config.validate()
        return config
    }

    func validate() throws(VMMError) {
        guard !vms.isEmpty else { throw .invalidConfig("host config lists no VMs") }
        var names = Set<String>()
        for vm in vms {
            guard !vm.name.isEmpty, names.insert(vm.name).inserted else { throw .invalidConfig("VM name '\(vm.name)' is empty or repeated") }
            if let affinity = vm.affinity, affinity.count != (vm.cpus ?? 1) {
                throw .invalidConfig("VM \(vm.name): affinity lists \(affinity.count) vCPUs, it has \(vm.cpus ?? 1)")
            }
            if let cpus = vm.affinity?.flatMap({ $0 }), let bad = cpus.first(where: { !effectiveHostCPUs.contains($0) }) {
                throw .invalidConfig("VM \(vm.name): affinity names CPU \(bad), not one of the host CPUs \(effectiveHostCPUs)")
            }
        }
        guard ["none", "round-robin", "load-aware"].contains(placement ?? "load-aware") else {
            throw .invalidConfig("placement '\(placement ?? "")' is not none, round-robin or load-aware")
        }
        guard ["none", "coordinator"].contains(memoryPolicy ?? "coordinator") else {
            throw .invalidConfig("memoryPolicy '\(memoryPolicy ?? "")' is not none or coordinator")
        }
        guard (period ?? 1) >= 0.1, (period ?? 1) <= 60 else { throw .invalidConfig("period must be 0.1 to 60 seconds") }
        guard !effectiveHostCPUs.isEmpty else { throw .invalidConfig("no host CPUs to run on") }
    }

    /// The host CPUs the VMs use.
    public var effectiveHostCPUs: [Int] {
        let online = onlineHostCPUs()
        return hostCPUs.map { $0.filter(online.contains) } ?? online
    }

    /// The run configuration of one VM.
    func machineConfig(_ vm: VM) throws(VMMError) -> VMConfig {
        var config = VMConfig(imagePath: vm.image)
        config.memorySize = vm.memory.bytes
        config.cpus = vm.cpus ?? 1
        config.commandLine = vm.cmdline ?? ""
        config.balloon = vm.balloon ?? false
        config.balloonTarget = vm.balloonTarget?.bytes ?? 0
        // Twice a period by default, so the coordinator decides on numbers at most half a period old.
        config.balloonStatsInterval = config.balloon ? (statsInterval ?? (period ?? 1) / 2) : 1
        guard let serial = SerialTarget(parsing: vm.serial ?? "none") else {
            throw .invalidConfig("VM \(vm.name): serial '\(vm.serial ?? "")' is not stdio, none or file:PATH")
        }
        config.serial = serial
        return config
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "missing \"\(key.stringValue)\"\(path(context.codingPath))"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
             DecodingError.dataCorrupted(let context):
            return "\(context.debugDescription)\(path(context.codingPath))"
        default:
            return "\(error)"
        }
    }

    private static func path(_ keys: [CodingKey]) -> String {
        keys.isEmpty ? "" : " at " + keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
}

extension ByteSize: Codable {
    /// A size is a string with an optional K/M/G suffix ("512M") or a number of bytes.
    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let bytes = try? container.decode(UInt64.self) {
            self.init(bytes: bytes)
            return
        }
        let text = try container.decode(String.self)
        guard let size = ByteSize(parsing: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "'\(text)' is not a size such as 512M")
        }
        self = size
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
