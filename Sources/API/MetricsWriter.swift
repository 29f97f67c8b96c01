import FoundationEssentials
import Glibc
import Host
import VMM

/// `PUT /metrics`: one JSON line of the VM's counters to a file or FIFO every `interval` seconds
/// and on `FlushMetrics`, as Firecracker does. The destination is opened non-blocking: a line a
/// FIFO nobody reads cannot take is dropped and counted (`lines_dropped` in the next line).
final class MetricsWriter: @unchecked Sendable {
    // @unchecked: `fd`, `written` and `dropped` are guarded by `lock` (the timer thread's).
    static let interval: UInt64 = 60_000_000_000

    private let timer = ServiceThread()
    private var lock: ConditionLock { timer.lock }
    private var fd: Int32 = -1
    private var written: UInt64 = 0
    private var dropped: UInt64 = 0
    private let line: @Sendable () -> [String: JSONValue]

    /// `line` gives each line's fields (read on the writer's own thread, or the worker's).
    init(line: @escaping @Sendable () -> [String: JSONValue]) {
        self.line = line
    }

    var isConfigured: Bool { lock.withLock { fd >= 0 } }

    /// Opens `path` (once: Firecracker refuses a second PUT /metrics too) and starts the timer.
    func configure(path: String) throws(APIFailure) {
        let configured = lock.withLock { fd >= 0 }
        guard !configured else { throw .badRequest("metrics are already configured") }
        let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0o600)
        guard opened >= 0 else { throw .badRequest("cannot open metrics_path \(APIRouter.printable(path)): \(String(cString: strerror(errno)))") }
        lock.withLock { fd = opened }
        do { try timer.start(.api, name: "metrics") { [self] in periodic() } } catch {
            lock.withLock { fd = -1 }
            close(opened)
            throw .internalError("cannot start the metrics thread: \(error)")
        }
    }

    /// Writes one line now.
    func flush() throws(APIFailure) {
        guard isConfigured else { throw .badRequest("no metrics destination is configured (PUT /metrics)") }
        write()
    }

    func stop() {
        timer.stop()
        lock.withLock {
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    private func periodic() {
        while true {
            let done = lock.withLock { () -> Bool in
                let deadline = Clocks.monotonicNanoseconds().saturatingAdd(Self.interval)
                while !timer.stopRequested && Clocks.monotonicNanoseconds() < deadline { lock.wait(until: deadline) }
                return timer.stopRequested
            }
            if done { return }
            write()
        }
    }

    private func write() {
        var fields = line()
        let (target, counts) = lock.withLock { (fd, (written, dropped)) }
        guard target >= 0 else { return }
        fields["utc_timestamp_ms"] = .number(Double(time(nil)) * 1000)
        fields["lines_written"] = .number(Double(counts.0))
        fields["lines_dropped"] = .number(Double(counts.1))
        let bytes = StrictJSON.encode(fields) + [0x0A]
        // Safe: write(2) reads `count` bytes of the array's storage, lent for the call.
        let result = bytes.withUnsafeBytes { Glibc.write(target, $0.baseAddress, $0.count) }
        lock.withLock { if result == bytes.count { written &+= 1 } else { dropped &+= 1 } }
    }
}

/// A JSON value, for the metrics line (whose shape follows what the VM has).
enum JSONValue: Encodable, Sendable {
    case number(Double)
    case string(String)
    case object([String: JSONValue])
    case array([JSONValue])

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .number(let value):
            if value.rounded() == value, abs(value) < 9e15 { try container.encode(Int64(value)) } else { try container.encode(value) }
        case .string(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        }
    }
}
