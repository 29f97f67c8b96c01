import VMM

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

    public static let noContent = APIResponse(status: 204, body: [])

    static func json<T: Encodable>(_ value: T, status: Int = 200) -> APIResponse {
        APIResponse(status: status, body: StrictJSON.encode(value))
    }

    static func failure(_ failure: APIFailure) -> APIResponse {
        json(FaultReply(fault_message: failure.message), status: failure.status)
    }
}

/// Maps requests to the VM session: Firecracker's paths, methods, status codes and bodies
/// (docs/api.md). Plain Swift, no I/O: the HTTP server calls it on its worker thread, and unit
/// tests call it with fakes.
public struct APIRouter: Sendable {
    public let session: VMSession

    public init(session: VMSession) {
        self.session = session
    }

    /// The methods each path takes, for 405's reason.
    static let routes: [String: [String]] = [
        "/": ["GET"],
        "/version": ["GET"],
        "/machine-config": ["GET", "PUT", "PATCH"],
        "/boot-source": ["PUT"],
        "/actions": ["PUT"],
        "/vm": ["PATCH"],
        "/vm/config": ["GET"],
        "/balloon": ["GET", "PUT", "PATCH"],
        "/balloon/statistics": ["GET", "PATCH"],
    ]

    public func handle(_ request: APIRequest) -> APIResponse {
        let path = Self.normalized(request.path)
        guard let methods = Self.routes[path] else {
            return .failure(.notFound("no such resource: \(Self.printable(path))"))
        }
        guard methods.contains(request.method) else {
            return .failure(.methodNotAllowed("\(Self.printable(path)) takes \(methods.joined(separator: ", ")), not \(Self.printable(request.method))"))
        }
        do {
            return try route(request.method, path, request.body)
        } catch {
            return .failure(error)
        }
    }

    private func route(_ method: String, _ path: String, _ body: [UInt8]) throws(APIFailure) -> APIResponse {
        switch (method, path) {
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

    private func action(_ type: String) throws(APIFailure) -> APIResponse {
        switch type {
        case "InstanceStart":
            try session.start()
            return .noContent
        case "FlushMetrics":
            throw .badRequest("no metrics destination is configured (PUT /metrics)")
        case "SendCtrlAltDel":
            throw .badRequest("SendCtrlAltDel needs an i8042 keyboard controller, which this machine does not emulate")
        default:
            throw .badRequest("action_type must be InstanceStart, FlushMetrics or SendCtrlAltDel, not '\(Self.printable(type))'")
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
    static func printable(_ text: String) -> String {
        let scalars = text.unicodeScalars
        let cleaned = String(String.UnicodeScalarView(scalars.prefix(64).map { $0.value < 0x20 || $0.value == 0x7F ? "?" : $0 }))
        return scalars.count > 64 ? cleaned + "..." : cleaned
    }
}
