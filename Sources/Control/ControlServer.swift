import VMM
import Host
import VMMCore
import Debugging
import Glibc
import KVM
import Synchronization

/// The control socket (`run --control ENDPOINT`): lets a program or a person drive a running VM —
/// set the balloon's target, read its statistics and the VMM's memory, pause, resume, stop —
/// one text line per request (ControlCommand), while the guest runs. Each client is served on a
/// thread of its own (at most `maximumClients` at once), so a silent or slow client delays no
/// other; a client idle for `idleSeconds` is disconnected, and one that does not read its replies
/// is dropped after `sendTimeoutSeconds`. A client's bytes are untrusted (bounded lines, one-line
/// errors, never a crash).
public final class ControlServer: Sendable {
    private let listener: FileDescriptor
    private let endpoint: SocketEndpoint
    private let target = Locked<Machine?>(nil)
    private let closing = Atomic<Bool>(false)
    private let thread = Locked<HostThreadHandle?>(nil)
    private let activeClients = Atomic<Int>(0)
    /// A request line longer than this is refused and the client disconnected.
    static let maximumLine = 4096
    static let maximumClients = 16
    static let idleSeconds = 60
    static let sendTimeoutSeconds = 5

    /// Listens on `endpoint` and serves requests for whichever machine `serve(_:)` last named.
    public init(endpoint: SocketEndpoint) throws(VMMError) {
        self.endpoint = endpoint
        let listener = FileDescriptor(rawValue: try VMMError.host { () throws(HostError) in try endpoint.listen(for: "control socket") })
        self.listener = listener
        let handle: HostThreadHandle
        do {
            handle = try HostThreadHandle.spawn(.api, name: "control") { [self] in acceptLoop() }
        } catch {
            listener.close()
            throw .host(error)
        }
        thread.withLock { $0 = handle }
    }

    /// The machine requests act on from now (each boot of `--on-reboot restart` is a new one).
    public func serve(_ machine: Machine) {
        target.withLock { $0 = machine }
    }

    /// Stops serving, closes the socket and removes a Unix socket's file.
    public func shutdown() {
        guard !closing.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let handle = thread.withLock { $0 }
        handle?.join()
        // Client threads are detached; each notices `closing` within one 200 ms poll.
        while activeClients.load(ordering: .acquiring) > 0 { usleep(10_000) }
        listener.close()
        if case .unix(let path) = endpoint { unlink(path) }
    }

    private func acceptLoop() {
        while !closing.load(ordering: .acquiring) {
            guard waitReadable(listener) else { continue }
            guard let connection = try? listener.accept() else { continue }
            guard activeClients.add(1, ordering: .acquiringAndReleasing).newValue <= Self.maximumClients else {
                activeClients.subtract(1, ordering: .acquiringAndReleasing)
                _ = send("error: too many control clients (at most \(Self.maximumClients))\n", to: connection)
                connection.close()
                continue
            }
            var timeout = timeval(tv_sec: Self.sendTimeoutSeconds, tv_usec: 0)
            setsockopt(connection.rawValue, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            do {
                let client = try HostThreadHandle.spawn(.api, name: "control-client") { [self] in
                    serveClient(connection)
                    connection.close()
                    activeClients.subtract(1, ordering: .acquiringAndReleasing)
                }
                client.detach()
            } catch {
                activeClients.subtract(1, ordering: .acquiringAndReleasing)
                connection.close()
            }
        }
    }

    /// True when `fd` has input (or hung up) within 200 ms; the loops re-check `closing` between.
    private func waitReadable(_ fd: FileDescriptor) -> Bool {
        (try? fd.poll(.readable, milliseconds: 200).isEmpty == false) ?? false
    }

    private func serveClient(_ fd: FileDescriptor) {
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        var idlePolls = 0
        while !closing.load(ordering: .acquiring) {
            guard waitReadable(fd) else {
                idlePolls += 1
                if idlePolls * 200 >= Self.idleSeconds * 1000 { return }
                continue
            }
            idlePolls = 0
            let count: Int
            do { count = try fd.read(into: &buffer) } catch {
                if error.wouldBlock { continue }
                return
            }
            guard count > 0 else { return }
            pending.append(contentsOf: buffer[0..<count])
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")), newline <= Self.maximumLine {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                let (reply, keepOpen) = respond(to: line)
                guard send(reply, to: fd), keepOpen else { return }
            }
            if pending.count > Self.maximumLine {
                _ = send("error: request longer than \(Self.maximumLine) bytes\n", to: fd)
                return
            }
        }
    }

    /// The reply to one request line (empty for an empty line), and whether to keep the client.
    func respond(to line: String) -> (String, Bool) {
        let command: ControlCommand
        do { command = try ControlCommand.parse(line) } catch { return ("error: \(error)\n", true) }
        if command == .nothing { return ("", true) }
        guard let machine = target.withLock({ $0 }) else { return ("error: no machine is running\n", true) }
        switch Self.execute(command, on: machine) {
        case .success(let text): return (text.isEmpty ? "ok\n" : text + "\nok\n", true)
        case .failure(let error): return ("error: \(error.message)\n", true)
        }
    }

    struct Failure: Error { let message: String }

    /// Carries out `command` on `machine`: the reply's text, or why not.
    static func execute(_ command: ControlCommand, on machine: Machine) -> Result<String, Failure> {
        switch command {
        case .balloonStatus:
            guard let balloon = machine.balloon else { return .failure(Failure(message: "this VM has no balloon (--balloon)")) }
            let status = balloon.status()
            return .success("balloon: driver_ready=\(status.driverReady ? 1 : 0) needs_reset=\(status.needsReset ? 1 : 0)\n" + balloon.report())
        case .balloonTarget(let text):
            guard let balloon = machine.balloon else { return .failure(Failure(message: "this VM has no balloon (--balloon)")) }
            guard let size = ByteSize(parsing: text) else { return .failure(Failure(message: "'\(text)' is not a size (bytes, K, M or G)")) }
            guard size.bytes <= machine.config.memorySize else {
                return .failure(Failure(message: "balloon target \(size) is more than the guest's \(ByteSize(bytes: machine.config.memorySize))"))
            }
            balloon.setTarget(bytes: size.bytes)
            machine.logger.info("control: balloon target set to \(size)")
            return .success("balloon: target_kib=\(balloon.status().targetBytes / 1024)")
        case .memory:
            return machine.memoryReport().map { .success($0) } ?? .failure(Failure(message: "cannot read /proc/self/status"))
        case .stats:
            return .success(machine.statisticsReport())
        case .pause:
            machine.pause()
            return .success("")
        case .resume:
            machine.resume()
            return .success("")
        case .stop:
            machine.stop()
            return .success("")
        case .help:
            return .success(ControlCommand.summary)
        case .nothing:
            return .success("")
        }
    }

    /// Sends the whole reply; false when the client is gone or stopped reading (SO_SNDTIMEO).
    private func send(_ text: String, to fd: FileDescriptor) -> Bool {
        (try? fd.writeAll(Array(text.utf8), socket: true)) != nil
    }
}
