import Host
import VMM
import VMMCore
import Logging

/// One HTTP request as the router sees it: the server has framed it and bounded its body.
public struct APIRequest: Sendable {
    public var method: String
    public var path: String
    public var body: [UInt8]

    public init(method: String, path: String, body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.body = body
    }
}

/// The reply: a status, and a JSON body (none for 204).
public struct APIResponse: Sendable, Equatable {
    public var status: Int
    public var body: [UInt8]
    public var contentType = "application/json"

    public static let noContent = APIResponse(status: 204, body: [])

    static func json<T: Encodable>(_ value: T, status: Int = 200) -> APIResponse {
        APIResponse(status: status, body: StrictJSON.encode(value))
    }

    static func failure(_ failure: APIFailure) -> APIResponse {
        json(FaultReply(fault_message: failure.message), status: failure.status)
    }
}

/// Maps requests to the VM session: Firecracker's paths, methods, status codes and bodies
/// (docs/api.md), and swiftvmm's own under /swiftvmm/. Plain Swift, no host I/O beyond reading
/// /proc for the vCPU endpoints: the HTTP server calls it on its worker thread, and unit tests
/// call it with fakes.
public final class APIRouter: Sendable {
    public let session: VMSession
    /// Replies given so far, by status (the Prometheus endpoint and the metrics lines report them).
    private let replies: ReplyCounts
    let metrics: MetricsWriter

    public init(session: VMSession) {
        self.session = session
        let replies = ReplyCounts()
        self.replies = replies
        metrics = MetricsWriter { Self.metricsLine(session, replies.counts.withLock { $0 }) }
    }

    /// Stops the metrics timer and closes its destination (the server's shutdown calls this).
    public func shutdown() { metrics.stop() }

    final class ReplyCounts: Sendable {
        let counts = Locked<[Int: UInt64]>([:])
    }

    /// One metrics line: the VM's state, each vCPU's exits, the balloon, the API's replies.
    static func metricsLine(_ session: VMSession, _ replies: [Int: UInt64]) -> [String: JSONValue] {
        var line: [String: JSONValue] = [
            "vm": .object(["state": .string(session.stateName)]),
            "api_server": .object(["replies": .object(Dictionary(uniqueKeysWithValues: replies.map { (String($0.key), .number(Double($0.value))) }))]),
        ]
        if let vm = try? session.running() {
            line["vcpus"] = .array(VCPUEndpoints.list(vm).vcpus.map { vcpu in
                .object(["index": .number(Double(vcpu.index)), "exits_total": .number(Double(vcpu.exits_total)),
                         "exits": .object(vcpu.exits.mapValues { .number(Double($0)) }),
                         "run_time_ns": .number(Double(vcpu.run_time_ns)), "wait_time_ns": .number(Double(vcpu.wait_time_ns))])
            })
            if let status = vm.balloonHandle?.status() {
                line["balloon"] = .object(["target_mib": .number(Double(status.targetBytes >> 20)), "actual_mib": .number(Double(status.actualBytes >> 20))])
            }
        }
        return line
    }

    /// The methods each path takes, for 405's reason.
    static let routes: [String: [String]] = [
        "/": ["GET"],
        "/version": ["GET"],
        "/machine-config": ["GET", "PUT", "PATCH"],
        "/boot-source": ["PUT"],
        "/drives/*": ["PUT"],
        "/network-interfaces/*": ["PUT"],
        "/actions": ["PUT"],
        "/vm": ["PATCH"],
        "/vm/config": ["GET"],
        "/balloon": ["GET", "PUT", "PATCH"],
        "/balloon/statistics": ["GET", "PATCH"],
        "/metrics": ["PUT"],
        "/logger": ["PUT"],
        "/swiftvmm/vcpus": ["GET"],
        "/swiftvmm/vcpus/*/affinity": ["PUT"],
        "/swiftvmm/metrics": ["GET"],
        "/swiftvmm/memory": ["GET"],
        "/swiftvmm/balloon": ["GET"],
        "/swiftvmm/actions": ["PUT"],
        "/snapshot/create": ["PUT"],
        "/snapshot/load": ["PUT"],
        "/migrate": ["GET", "PUT"],
    ]

    /// The route a path takes: itself, or its pattern with the vCPU index as `*`.
    static func route(of path: String) -> (route: String, parameter: String?) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 5, parts[1] == "swiftvmm", parts[2] == "vcpus", parts[4] == "affinity" {
            return ("/swiftvmm/vcpus/*/affinity", String(parts[3]))
        }
        if parts.count == 3, parts[1] == "drives" || parts[1] == "network-interfaces", !parts[2].isEmpty {
            return ("/\(parts[1])/*", String(parts[2]))
        }
        return (path, nil)
    }

    public func handle(_ request: APIRequest) -> APIResponse {
        let response = respond(to: request)
        replies.counts.withLock { $0[response.status, default: 0] &+= 1 }
        return response
    }

    private func respond(to request: APIRequest) -> APIResponse {
        let (path, parameter) = Self.route(of: Self.normalized(request.path))
        guard let methods = Self.routes[path] else {
            return .failure(.notFound("no such resource: \(Self.printable(path))"))
        }
        guard methods.contains(request.method) else {
            return .failure(.methodNotAllowed("\(Self.printable(path)) takes \(methods.joined(separator: ", ")), not \(Self.printable(request.method))"))
        }
        do {
            return try route(request.method, path, parameter, request.body)
        } catch {
            return .failure(error)
        }
    }

    private func route(_ method: String, _ path: String, _ parameter: String?, _ body: [UInt8]) throws(APIFailure) -> APIResponse {
        switch (method, path) {
        case ("PUT", "/metrics"):
            try metrics.configure(path: StrictJSON.decode(MetricsConfiguration.self, from: body).value)
            return .noContent
        case ("PUT", "/logger"):
            try Self.configureLogger(StrictJSON.decode(LoggerConfiguration.self, from: body))
            return .noContent
        case ("GET", "/swiftvmm/vcpus"):
            return .json(VCPUEndpoints.list(try session.running()))
        case ("PUT", "/swiftvmm/vcpus/*/affinity"):
            try VCPUEndpoints.setAffinity(try session.running(), vcpu: parameter ?? "", body: body)
            return .noContent
        case ("GET", "/swiftvmm/metrics"):
            let text = VCPUEndpoints.prometheus([(session.instanceID, try session.running())], requests: replies.counts.withLock { $0 })
            return APIResponse(status: 200, body: Array(text.utf8), contentType: "text/plain; version=0.0.4")
        case ("GET", "/swiftvmm/memory"):
            return .json(try MachineEndpoints.memory(try session.running(), guestMemoryMiB: session.machineConfiguration.mem_size_mib))
        case ("GET", "/swiftvmm/balloon"):
            return .json(MachineEndpoints.balloon(try runningBalloon()))
        case ("PUT", "/swiftvmm/actions"):
            let type = try StrictJSON.decode(SwiftVMMAction.self, from: body).value
            try MachineEndpoints.action(try session.running(), type)
            return .noContent
        case ("GET", "/"):
            return .json(InstanceInfo(id: session.instanceID, state: session.stateName, vmm_version: VMM.version, app_name: "swiftvmm"))
        case ("GET", "/version"):
            return .json(VersionInfo(firecracker_version: VMM.version))
        case ("GET", "/machine-config"):
            return .json(session.machineConfiguration)
        case ("PUT", "/machine-config"):
            try session.setMachineConfiguration(StrictJSON.decode(MachineConfiguration.self, from: body))
            return .noContent
        case ("PATCH", "/machine-config"):
            try session.updateMachineConfiguration(StrictJSON.decode(MachineConfigurationUpdate.self, from: body))
            return .noContent
        case ("PUT", "/drives/*"):
            try session.setDrive(id: parameter ?? "", StrictJSON.decode(Drive.self, from: body))
            return .noContent
        case ("PUT", "/network-interfaces/*"):
            try session.setNetworkInterface(id: parameter ?? "", StrictJSON.decode(NetworkInterfaceConfiguration.self, from: body))
            return .noContent
        case ("PUT", "/boot-source"):
            try session.setBootSource(StrictJSON.decode(BootSource.self, from: body))
            return .noContent
        case ("PUT", "/actions"):
            return try action(StrictJSON.decode(InstanceActionInfo.self, from: body).value)
        case ("PATCH", "/vm"):
            let wanted = try StrictJSON.decode(VmState.self, from: body).value
            let vm = try session.running()
            switch wanted {
            case "Paused": vm.pause()
            case "Resumed": vm.resume()
            default: throw .badRequest("state must be Paused or Resumed, not '\(Self.printable(wanted))'")
            }
            return .noContent
        case ("PUT", "/snapshot/create"):
            try Self.createSnapshot(StrictJSON.decode(SnapshotCreateParams.self, from: body), vm: try session.running())
            return .noContent
        case ("PUT", "/snapshot/load"):
            let params = try StrictJSON.decode(SnapshotLoadParams.self, from: body)
            try session.load(Self.snapshotSource(params), resume: params.resume_vm)
            return .noContent
        case ("PUT", "/migrate"):
            let vm = try session.running()
            let request = try Self.migrationRequest(StrictJSON.decode(MigrateParams.self, from: body))
            do { try vm.startMigration(request) } catch { throw .badRequest(error.description) }
            return .noContent
        case ("GET", "/migrate"):
            guard let progress = try session.running().migrationProgress() else { throw .badRequest("no migration has been started") }
            return .json(MigrationStatus(progress))
        case ("GET", "/vm/config"):
            return .json(session.fullConfiguration)
        case ("GET", "/balloon"):
            guard let balloon = session.fullConfiguration.balloon else { throw .badRequest("no balloon device is configured") }
            return .json(balloon)
        case ("PUT", "/balloon"):
            try session.setBalloon(StrictJSON.decode(BalloonConfiguration.self, from: body))
            return .noContent
        case ("PATCH", "/balloon"):
            let update = try StrictJSON.decode(BalloonUpdate.self, from: body)
            let handle = try runningBalloon()
            let memory = session.machineConfiguration.mem_size_mib
            guard update.value >= 0, update.value <= memory else {
                throw .badRequest("amount_mib must be 0 to the guest's \(memory) MiB")
            }
            handle.setTarget(bytes: UInt64(update.value) << 20)
            return .noContent
        case ("GET", "/balloon/statistics"):
            let handle = try runningBalloon()
            guard handle.statsIntervalSeconds > 0 else {
                throw .badRequest("balloon statistics are not enabled (stats_polling_interval_s is 0)")
            }
            return .json(Self.statistics(handle.status()))
        case ("PATCH", "/balloon/statistics"):
            let update = try StrictJSON.decode(BalloonStatsUpdate.self, from: body)
            try VMSession.checkStatsInterval(update.value)
            let handle = try runningBalloon()
            // As Firecracker: statistics turned off at boot cannot be turned on later, nor off.
            guard handle.statsIntervalSeconds > 0, update.value > 0 else {
                throw .badRequest("balloon statistics cannot be turned on or off after boot")
            }
            handle.setStatsInterval(seconds: Double(update.value))
            return .noContent
        default:
            throw .methodNotAllowed("\(method) \(path) is not handled")
        }
    }

    static func createSnapshot(_ params: SnapshotCreateParams, vm: any RunningVM) throws(APIFailure) {
        guard params.snapshot_type == "Full" || params.snapshot_type == "Diff" else {
            throw .badRequest("snapshot_type must be Full or Diff, not '\(printable(params.snapshot_type))'")
        }
        try checkPath(params.snapshot_path, "snapshot_path")
        try checkPath(params.mem_file_path, "mem_file_path")
        guard params.snapshot_path != params.mem_file_path else { throw .badRequest("snapshot_path and mem_file_path must differ") }
        guard vm.isPaused else { throw .badRequest("the microVM must be paused first (PATCH /vm {\"state\": \"Paused\"})") }
        do { _ = try vm.saveSnapshot(statePath: params.snapshot_path, memoryPath: params.mem_file_path, diff: params.snapshot_type == "Diff") } catch {
            throw .badRequest(error.description)
        }
    }

    static func snapshotSource(_ params: SnapshotLoadParams) throws(APIFailure) -> SnapshotSource {
        try checkPath(params.snapshot_path, "snapshot_path")
        let memory: String
        switch (params.mem_backend, params.mem_file_path) {
        case (let backend?, nil):
            guard backend.backend_type == "File" else {
                throw .badRequest("backend_type must be File (a Uffd page-fault handler is not supported), not '\(printable(backend.backend_type))'")
            }
            memory = backend.backend_path
        case (nil, let path?): memory = path
        default: throw .badRequest("give mem_backend or mem_file_path, exactly one")
        }
        try checkPath(memory, "backend_path")
        return SnapshotSource(statePath: params.snapshot_path, memoryPath: memory, trackDirtyPages: params.enable_diff_snapshots)
    }

    /// `unix:PATH` or `tcp:HOST:PORT` (or the HOST:PORT and :PORT the other endpoints take).
    static func migrationRequest(_ params: MigrateParams) throws(APIFailure) -> MigrationRequest {
        guard params.mode == "precopy" || params.mode == "naive" else { throw .badRequest("mode must be precopy or naive, not '\(printable(params.mode))'") }
        let url = params.destination_url.hasPrefix("tcp:") ? String(params.destination_url.dropFirst(4)) : params.destination_url
        let destination: SocketEndpoint
        do { destination = try SocketEndpoint(parsing: url) } catch { throw .badRequest("destination_url: \(error)") }
        return MigrationRequest(destination: destination, downtimeMilliseconds: params.downtime_ms, timeoutSeconds: params.timeout_s,
                                naive: params.mode == "naive")
    }

    static func checkPath(_ path: String, _ field: String) throws(APIFailure) {
        guard !path.isEmpty, path.utf8.count < 4096, !path.utf8.contains(0) else { throw .badRequest("\(field) must be a path (non-empty, no NUL)") }
    }

    private func action(_ type: String) throws(APIFailure) -> APIResponse {
        switch type {
        case "InstanceStart":
            try session.start()
            return .noContent
        case "FlushMetrics":
            try metrics.flush()
            return .noContent
        case "SendCtrlAltDel":
            throw .badRequest("SendCtrlAltDel needs an i8042 keyboard controller, which this machine does not emulate")
        default:
            throw .badRequest("action_type must be InstanceStart, FlushMetrics or SendCtrlAltDel, not '\(Self.printable(type))'")
        }
    }

    /// Firecracker's levels (any case): Error, Warning, Info, Debug, Trace, Off.
    static func configureLogger(_ configuration: LoggerConfiguration) throws(APIFailure) {
        let levels: [String: Logger.Level?] = ["error": .error, "warning": .warning, "warn": .warning, "info": .info,
                                               "debug": .debug, "trace": .trace, "off": nil]
        let name = (configuration.level ?? "Info").lowercased()
        guard let level = levels[name] else {
            throw .badRequest("level must be Error, Warning, Info, Debug, Trace or Off, not '\(printable(configuration.level ?? ""))'")
        }
        do {
            try LogControl.shared.configure(path: configuration.log_path, level: level, showLevel: configuration.show_level ?? false,
                                            showOrigin: configuration.show_log_origin ?? false, module: configuration.module)
        } catch {
            throw .badRequest("cannot open log_path \(printable(configuration.log_path ?? "")): \(error)")
        }
    }

    private func runningBalloon() throws(APIFailure) -> any BalloonHandle {
        let vm = try session.running()
        guard let handle = vm.balloonHandle else { throw .badRequest("no balloon device is configured") }
        return handle
    }

    static func statistics(_ status: BalloonControl.Status) -> BalloonStatisticsReply {
        let values = status.statistics?.values ?? [:]
        let pageMiB = UInt64(1 << 20) / 4096
        return BalloonStatisticsReply(
            target_pages: UInt64(status.targetPages), actual_pages: UInt64(status.actualPages),
            target_mib: UInt64(status.targetPages) / pageMiB, actual_mib: UInt64(status.actualPages) / pageMiB,
            swap_in: values[.swapIn], swap_out: values[.swapOut], major_faults: values[.majorFaults],
            minor_faults: values[.minorFaults], free_memory: values[.freeMemory], total_memory: values[.totalMemory],
            available_memory: values[.availableMemory], disk_caches: values[.diskCaches],
            hugetlb_allocations: values[.hugetlbAllocations], hugetlb_failures: values[.hugetlbFailures])
    }

    /// The path without its query and a trailing slash ("/balloon/?x" is "/balloon").
    static func normalized(_ path: String) -> String {
        var text = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? path
        while text.count > 1 && text.hasSuffix("/") { text.removeLast() }
        return text.isEmpty ? "/" : text
    }

    /// At most 64 characters of client text, control characters replaced, for a fault message.
    static func printable(_ text: String) -> String { text.printableExcerpt() }
}
