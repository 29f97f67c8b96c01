import API
import CommandLineParsing
import Glibc
import Host
import Logging
import VMM

/// `swiftvmm serve`: a VMM with no VM yet, configured and started through the API, as
/// `firecracker --api-sock` is. The process ends with the guest's exit status once it ends.
struct Serve {
    /// The run options that still make sense before the API has said what to boot. (An array:
    /// a Set here cost every start-up a scan of the binary's protocol conformances.)
    static let sharedOptions: [String] = [
        "serial", "pit", "irqchip", "test-devices", "stats", "trace-exits", "trace-file", "log-level", "kvm-device", "no-seccomp",
        "entry", "format", "load-address", "on-reboot", "prefault", "page-sharing", "track-dirty-pages",
    ]

    static let spec = CommandSpec(
        name: "serve",
        abstract: "Serve the API on a Unix socket and boot the VM it configures (PUT /boot-source, /machine-config, then /actions InstanceStart).",
        discussion: """
        The API is Firecracker's (docs/api.md). The exit status is the guest's, as for run, once it \
        has started; a signal before that ends the process with 128+N.
        """,
        options: [apiSocketOption, OptionSpec("id", help: "The instance id GET / reports (default: swiftvmm-PID).")]
            + VMOptions.options.filter { sharedOptions.contains($0.name) }
    )

    let socket: String
    let id: String
    let vm: VMOptions

    init(_ arguments: ParsedArguments) throws(UsageError) {
        guard let socket = arguments.value("api-sock") else { throw arguments.error("missing --api-sock PATH") }
        self.socket = socket
        id = arguments.value("id") ?? "swiftvmm-\(getpid())"
        vm = try VMOptions(arguments, imageRequired: false)
    }

    func run() -> Never {
        bootstrapLogging(level: vm.logLevel)
        startSandbox(disabled: vm.noSeccomp)
        let mailbox = StartMailbox()
        let session = VMSession(instanceID: id, base: vm.config) { config in mailbox.start(config) }
        let server: APIServer
        do { server = try APIServer(path: socket, router: APIRouter(session: session)) } catch { fail(error.description, code: error.exitCode) }
        // This thread builds the machine (its filter allows KVM's VM calls) and runs it.
        guard let machine = mailbox.waitForStart(build: { (request: StartRequest) throws(VMMError) -> Machine in
            switch request {
            case .boot(let config): return try Machine(config: config, logger: Logger(label: "swiftvmm"))
            case .restore(let source, let runtime, let resume):
                let machine = try Machine(restoring: source, runtime: runtime, logger: Logger(label: "swiftvmm"))
                if !resume { machine.startPaused() }
                return machine
            }
        }) else {
            server.shutdown()
            exit(128 + Machine.terminationSignal.load(ordering: .acquiring))
        }
        var outcome = machine.run()
        while outcome == .reboot && vm.onReboot == .restart {
            let signal = Machine.terminationSignal.load(ordering: .acquiring)
            if signal != 0 { outcome = .signal(signal); break }
            let next = vm.buildMachine(config: machine.config)
            session.replaceRunning(next)
            outcome = next.run()
        }
        if outcome == .migrated { machine.awaitMigrationReport(seconds: 5) }
        server.shutdown()
        finish(outcome)
    }
}

/// `--api-sock PATH`, for `run` and `serve`.
let apiSocketOption = OptionSpec("api-sock", valueName: "path", help: "Serve the HTTP API (Firecracker's, docs/api.md) on this Unix socket, mode 0600; removed at exit.")

/// Hands `InstanceStart`'s configuration from the API worker to the thread that builds and runs
/// the machine, and the result back.
final class StartMailbox: @unchecked Sendable {
    // @unchecked: every field is touched with `lock` held.
    private let lock = ConditionLock()
    private var request: StartRequest?
    private var reply: Result<any RunningVM, APIFailure>?
    private var signalled = false

    /// Called on the API worker: blocks until the machine is built (or failed to be), or a
    /// termination signal ends the wait (the server's shutdown joins this worker).
    func start(_ config: StartRequest) -> Result<any RunningVM, APIFailure> {
        lock.withLock {
            request = config
            reply = nil
            lock.broadcast()
            while reply == nil && !signalled { lock.wait() }
            return reply ?? .failure(APIFailure(status: 503, message: "the VMM is stopping"))
        }
    }

    /// Called on the main thread: builds each requested machine until one builds, and returns
    /// it; nil when a termination signal came first.
    func waitForStart(build: (StartRequest) throws(VMMError) -> Machine) -> Machine? {
        let waiter = try? SignalWaiter { [self] received in
            Machine.terminationSignal.store(received, ordering: .releasing)
            lock.withLock {
                signalled = true
                lock.broadcast()
            }
            return .stop
        }
        defer { waiter?.stop() }
        while true {
            let config: StartRequest? = lock.withLock {
                while request == nil && !signalled { lock.wait() }
                defer { request = nil }
                return signalled ? nil : request
            }
            guard let config else { return nil }
            let result: Result<any RunningVM, APIFailure>
            var machine: Machine?
            do {
                machine = try build(config)
                result = .success(machine!)
            } catch {
                result = .failure(.badRequest(error.description))
            }
            lock.withLock {
                reply = result
                lock.broadcast()
            }
            if let machine { return machine }
        }
    }
}
