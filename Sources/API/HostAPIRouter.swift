import HostMode
import VMM
import VMMCore

/// What an API server serves: a single VM's router or host mode's.
public protocol APIHandler: Sendable {
    func handle(_ request: APIRequest) -> APIResponse
    /// Stops what the handler runs beside the server (the metrics timer).
    func shutdown()
}

extension APIRouter: APIHandler {}

/// `swiftvmm host --api-sock`: the host's VMs, placement and memory (docs/api.md).
///   GET /, GET /version                               the host process as an instance
///   GET /swiftvmm/host                                the last period: pCPUs, each VM's usage, CPUs, memory, balloon
///   GET /swiftvmm/host/vms/NAME/vcpus                 a VM's vCPUs, as GET /swiftvmm/vcpus
///   GET /swiftvmm/host/vms/NAME/balloon/statistics    as GET /balloon/statistics
///   PATCH /swiftvmm/host/vms/NAME/balloon             as PATCH /balloon, unless the coordinator sets balloons
///   GET /swiftvmm/metrics                             Prometheus, every VM's counters labelled with its name
public final class HostAPIRouter: APIHandler {
    private let runner: HostRunner
    private let instanceID: String
    private let replies = APIRouter.ReplyCounts()

    public init(runner: HostRunner, instanceID: String) {
        self.runner = runner
        self.instanceID = instanceID
    }

    public func shutdown() {}

    public func handle(_ request: APIRequest) -> APIResponse {
        let response: APIResponse
        do { response = try respond(request) } catch { response = .failure(error) }
        replies.counts.withLock { $0[response.status, default: 0] &+= 1 }
        return response
    }

    private func respond(_ request: APIRequest) throws(APIFailure) -> APIResponse {
        let path = APIRouter.normalized(request.path)
        let parts = path.split(separator: "/").map(String.init)
        func only(_ method: String) throws(APIFailure) {
            guard request.method == method else {
                throw .methodNotAllowed("\(APIRouter.printable(path)) takes \(method), not \(APIRouter.printable(request.method))")
            }
        }
        switch parts {
        case []:
            try only("GET")
            return .json(InstanceInfo(id: instanceID, state: "Running", vmm_version: VMM.version, app_name: "swiftvmm"))
        case ["version"]:
            try only("GET")
            return .json(VersionInfo(firecracker_version: VMM.version))
        case ["swiftvmm", "host"]:
            try only("GET")
            guard let record = runner.latest else { throw .badRequest("no period has ended yet") }
            return .json(record)
        case ["swiftvmm", "metrics"]:
            try only("GET")
            let vms = runner.vmNames.compactMap { name in runner.machine(named: name).map { (instance: name, vm: $0 as any RunningVM) } }
            let text = VCPUEndpoints.prometheus(vms, requests: replies.counts.withLock { $0 })
            return APIResponse(status: 200, body: Array(text.utf8), contentType: "text/plain; version=0.0.4")
        case let route where route.count >= 5 && route[0] == "swiftvmm" && route[1] == "host" && route[2] == "vms":
            guard let machine = runner.machine(named: route[3]) else {
                throw .notFound("no VM named \(APIRouter.printable(route[3])) (VMs: \(runner.vmNames.joined(separator: ", ")))")
            }
            return try vmRequest(Array(route.dropFirst(4)), method: request.method, body: request.body, machine: machine, path: path)
        default:
            throw .notFound("no such resource: \(APIRouter.printable(path))")
        }
    }

    private func vmRequest(_ rest: [String], method: String, body: [UInt8], machine: Machine, path: String) throws(APIFailure) -> APIResponse {
        switch (method, rest) {
        case ("GET", ["vcpus"]):
            return .json(VCPUEndpoints.list(machine))
        case ("GET", ["balloon", "statistics"]):
            guard let balloon = machine.balloon else { throw .badRequest("this VM has no balloon") }
            return .json(APIRouter.statistics(balloon.status()))
        case ("PATCH", ["balloon"]):
            guard let balloon = machine.balloon else { throw .badRequest("this VM has no balloon") }
            guard !runner.coordinatesMemory else {
                throw .badRequest("the memory coordinator sets this host's balloons (memoryPolicy \"none\" leaves them to the API)")
            }
            let amount = try StrictJSON.decode(BalloonUpdate.self, from: body).value
            let memory = Int(machine.config.memorySize >> 20)
            guard amount >= 0, amount <= memory else { throw .badRequest("amount_mib must be 0 to the VM's \(memory) MiB") }
            balloon.setTarget(bytes: UInt64(amount) << 20)
            return .noContent
        case (_, ["vcpus"]), (_, ["balloon", "statistics"]), (_, ["balloon"]):
            throw .methodNotAllowed("\(APIRouter.printable(path)) does not take \(APIRouter.printable(method))")
        default:
            throw .notFound("no such resource: \(APIRouter.printable(path))")
        }
    }
}
