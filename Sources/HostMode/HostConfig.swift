import VMM
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
        /// Guest RAM mergeable for KSM (default: the config's `pageSharing`).
        public var pageSharing: Bool?
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
    /// How vCPUs are placed on host CPUs (default load-aware).
    public var placement: PlacementChoice?
    /// How memory moves between VMs (default: the coordinator when any VM has a balloon).
    public var memoryPolicy: MemoryPolicyChoice?
    /// Host CPUs the VMs may use (default: every online CPU).
    public var hostCPUs: [Int]?
    /// Memory the host keeps for itself (default 1G).
    public var hostReserve: ByteSize?
    public var coordinator: CoordinatorValues?
    /// Seconds between balloon statistics requests (default: the period).
    public var statsInterval: Double?
    /// Admit VMs whose RAM together exceeds what the host has, counting each VM at its RAM less
    /// its initial balloon (default false: every VM's whole RAM must fit).
    public var overcommit: Bool?
    /// Every VM's RAM mergeable for KSM unless the VM says otherwise (default false).
    public var pageSharing: Bool?

    /// Every key a host config may have, by where it stands: a key not listed is a mistake (a
    /// misspelt key would otherwise quietly mean its default).
    static let knownKeys: [String: Set<String>] = [
        "": ["vms", "period", "placement", "memoryPolicy", "hostCPUs", "hostReserve", "coordinator", "statsInterval", "overcommit",
             "pageSharing"],
        "vms": ["name", "image", "memory", "cpus", "cmdline", "affinity", "balloon", "balloonTarget", "serial", "pageSharing"],
        "coordinator": ["lowWatermark", "highWatermark", "floor", "step"],
    ]

    /// Reads and checks a config file; errors name the file and the problem in one line. Image
    /// and serial file paths are taken relative to the config file's directory.
    public static func load(path: String) throws(VMMError) -> HostConfig {
        let bytes: [UInt8]
        do { bytes = try ImageFile.read(path, limit: 16 << 20) } catch {
            switch error {
            case .imageUnreadable(_, let reason): throw .invalidConfig("cannot read host config \(path): \(reason)")
            case .image(_, .tooLarge): throw .invalidConfig("host config \(path) is larger than 16 MiB")
            default: throw .invalidConfig("host config \(path) is empty")
            }
        }
        return try parse(bytes, path: path)
    }

    /// Decodes and checks the bytes of the config file at `path` (which relative paths in it are
    /// taken against).
    public static func parse(_ bytes: [UInt8], path: String) throws(VMMError) -> HostConfig {
        var config: HostConfig
        do {
            try checkKeys(JSONDecoder().decode(JSONValue.self, from: Data(bytes)))
            config = try JSONDecoder().decode(HostConfig.self, from: Data(bytes))
        } catch let error as VMMError {
            throw .invalidConfig("host config \(path): \(error)")
        } catch {
            throw .invalidConfig("host config \(path): \(Self.describe(error))")
        }
        config.resolvePaths(relativeTo: path)
        try config.validate()
        return config
    }

    /// Makes relative image and serial-file paths relative to the config file's directory.
    mutating func resolvePaths(relativeTo configPath: String) {
        guard let slash = configPath.lastIndex(of: "/") else { return } // config in the current directory
        let directory = String(configPath[...slash])
        func resolved(_ path: String) -> String { path.hasPrefix("/") || path.isEmpty ? path : directory + path }
        for index in vms.indices {
            vms[index].image = resolved(vms[index].image)
            if let serial = vms[index].serial, serial.hasPrefix("file:") {
                vms[index].serial = "file:" + resolved(String(serial.dropFirst(5)))
            }
        }
    }

    /// Refuses keys the config format does not have, naming the first one and where it stands.
    static func checkKeys(_ value: JSONValue) throws(VMMError) {
        func check(_ value: JSONValue, section: String, path: String) throws(VMMError) {
            guard case .object(let members) = value, let known = knownKeys[section] else { return }
            if let unknown = members.keys.sorted().first(where: { !known.contains($0) }) {
                throw .invalidConfig("unknown key \"\(unknown)\"\(path.isEmpty ? "" : " at " + path)")
            }
            if case .array(let vms)? = members["vms"], section.isEmpty {
                for (index, vm) in vms.enumerated() { try check(vm, section: "vms", path: "vms.[\(index)]") }
            }
            if let coordinator = members["coordinator"], section.isEmpty {
                try check(coordinator, section: "coordinator", path: "coordinator")
            }
        }
        try check(value, section: "", path: "")
    }

    func validate() throws(VMMError) {
        guard !vms.isEmpty else { throw .invalidConfig("host config lists no VMs") }
        var names = Set<String>()
        for vm in vms {
            guard !vm.name.isEmpty, names.insert(vm.name).inserted else { throw .invalidConfig("VM name '\(vm.name)' is empty or repeated") }
            // Names go into log lines, JSON, plot data and the plot script: plain characters only.
            guard vm.name.utf8.count <= 64, vm.name.utf8.allSatisfy({ Self.nameCharacters.contains($0) }) else {
                throw .invalidConfig("VM name '\(vm.name)' must be 1 to 64 of A-Z a-z 0-9 . _ -")
            }
            if let affinity = vm.affinity, affinity.count != (vm.cpus ?? 1) {
                throw .invalidConfig("VM \(vm.name): affinity lists \(affinity.count) vCPUs, it has \(vm.cpus ?? 1)")
            }
            if let cpus = vm.affinity?.flatMap({ $0 }), let bad = cpus.first(where: { !effectiveHostCPUs.contains($0) }) {
                throw .invalidConfig("VM \(vm.name): affinity names CPU \(bad), not one of the host CPUs \(effectiveHostCPUs)")
            }
        }
        guard (period ?? 1) >= 0.1, (period ?? 1) <= 60 else { throw .invalidConfig("period must be 0.1 to 60 seconds") }
        guard !effectiveHostCPUs.isEmpty else { throw .invalidConfig("no host CPUs to run on") }
        if let low = coordinator?.lowWatermark, let high = coordinator?.highWatermark, low.bytes > high.bytes {
            throw .invalidConfig("coordinator lowWatermark \(low) is above highWatermark \(high)")
        }
        if let interval = statsInterval, !(interval >= 0 && interval <= 3600) {
            throw .invalidConfig("statsInterval must be 0 to 3600 seconds")
        }
    }

    static let nameCharacters = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-".utf8)

    /// Refuses VMs whose memory the host does not have: every VM's whole RAM must fit in the
    /// host's memory less its reserve, or, with `overcommit`, its RAM less its initial balloon.
    public func checkAdmission(hostMemoryBytes: UInt64) throws(VMMError) {
        let reserve = hostReserve?.bytes ?? (1 << 30)
        let room = hostMemoryBytes.saturatingSubtract(reserve)
        let overcommitting = overcommit ?? false
        let needed = vms.reduce(UInt64(0)) { total, vm in
            let committed = overcommitting ? vm.memory.bytes.saturatingSubtract(vm.balloonTarget?.bytes ?? 0) : vm.memory.bytes
            return total.saturatingAdd(committed)
        }
        guard needed <= room else {
            let how = overcommitting ? "RAM less initial balloons" : "RAM (\"overcommit\": true counts RAM less initial balloons)"
            throw .invalidConfig("the VMs need \(ByteSize(bytes: needed)) of \(how), more than the host's "
                                 + "\(ByteSize(bytes: hostMemoryBytes)) less its \(ByteSize(bytes: reserve)) reserve")
        }
    }

    /// The host CPUs the VMs use.
    public var effectiveHostCPUs: [Int] {
        let online = onlineHostCPUs()
        return hostCPUs.map { $0.filter(online.contains) } ?? online
    }

    /// The run configuration of one VM.
    public func machineConfig(_ vm: VM) throws(VMMError) -> VMConfig {
        var config = VMConfig(imagePath: vm.image)
        config.memorySize = vm.memory.bytes
        config.cpus = vm.cpus ?? 1
        config.commandLine = vm.cmdline ?? ""
        config.balloon = vm.balloon ?? false
        config.balloonTarget = vm.balloonTarget?.bytes ?? 0
        config.pageSharing = vm.pageSharing ?? pageSharing ?? false
        config.announcePageSharing = false // HostRunner says it once
        // Twice a period by default, so the coordinator decides on numbers at most half a period old.
        config.balloonStatsInterval = config.balloon ? (statsInterval ?? (period ?? 1) / 2) : 1
        guard let serial = SerialTarget(parsing: vm.serial ?? "none") else {
            throw .invalidConfig("serial '\(vm.serial ?? "")' is not stdio, none or file:PATH")
        }
        config.serial = serial
        return config
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case HostConfigError.badChoice(let why):
            return why
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

/// A config value that must be one of a fixed set of words; decoding anything else fails with a
/// line naming the key, the value and the choices.
public protocol ConfigChoice: RawRepresentable<String>, CaseIterable, Codable, Sendable {
    static var key: String { get }
}

extension ConfigChoice {
    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(rawValue: text) else {
            let choices = Self.allCases.map(\.rawValue)
            let list = choices.dropLast().joined(separator: ", ") + " or " + (choices.last ?? "")
            throw HostConfigError.badChoice("\(Self.key) '\(text)' is not \(list)")
        }
        self = value
    }
}

/// A value decoding refused, already in words.
enum HostConfigError: Error { case badChoice(String) }

/// `placement`: none, round-robin or load-aware (Sources/Placement).
public enum PlacementChoice: String, ConfigChoice {
    case none, roundRobin = "round-robin", loadAware = "load-aware"
    public static let key = "placement"

    /// The policy this choice names.
    func policy() -> any PlacementPolicy {
        switch self {
        case .none: NoPlacement()
        case .roundRobin: RoundRobinPlacement()
        case .loadAware: LoadAwarePlacement()
        }
    }
}

/// `memoryPolicy`: none, or the balloon coordinator (Sources/Coordinator).
public enum MemoryPolicyChoice: String, ConfigChoice {
    case none, coordinator
    public static let key = "memoryPolicy"
}

/// Any JSON value: the host config is read once as this to check its keys.
enum JSONValue: Decodable {
    case object([String: JSONValue])
    case array([JSONValue])
    case scalar

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let object = try? container.decode([String: JSONValue].self) {
            self = .object(object)
        } else if let array = try? container.decode([JSONValue].self) {
            self = .array(array)
        } else {
            self = .scalar
        }
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
