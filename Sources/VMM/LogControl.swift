import Glibc
import Host
import Logging
import Synchronization

/// Where the VMM's log lines go and from which level: stderr at `--log-level` until the API's
/// `PUT /logger` names a file or FIFO and a level. Every Logger's handler reads this, so a change
/// takes effect on every thread at once. Writes never block: the destination is opened
/// non-blocking, and a line a full FIFO cannot take is dropped and counted.
public final class LogControl: Sendable {
    public static let shared = LogControl()

    struct State {
        var level: Logger.Level = .warning
        var fd: Int32 = STDERR_FILENO
        var showLevel = true
        var showOrigin = false
        /// Only lines whose source module starts with this (nil: all).
        var module: String?
        /// Firecracker's level "Off": nothing is written.
        var off = false
        var dropped: UInt64 = 0
    }

    private let state = Mutex(State())

    public var level: Logger.Level { state.withLock { $0.level } }
    public var droppedLines: UInt64 { state.withLock { $0.dropped } }

    public func setLevel(_ level: Logger.Level) { state.withLock { $0.level = level } }

    /// Sends lines to `path` (appended; a FIFO is opened without waiting for a reader), or keeps
    /// the current destination when nil, from `level` on.
    /// `level` nil: Firecracker's "Off".
    public func configure(path: String?, level: Logger.Level?, showLevel: Bool, showOrigin: Bool, module: String?) throws(HostError) {
        var fd: Int32?
        if let path {
            let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0o600)
            guard opened >= 0 else { throw .call("open \(path)", .current) }
            fd = opened
        }
        let previous = state.withLock { state -> Int32? in
            let old = fd != nil && state.fd != STDERR_FILENO ? state.fd : nil
            if let fd { state.fd = fd }
            state.level = level ?? .critical
            state.off = level == nil
            state.showLevel = showLevel
            state.showOrigin = showOrigin
            state.module = module
            return old
        }
        if let previous { close(previous) }
    }

    /// One formatted line to the destination: "TIME LEVEL LABEL: [SOURCE] MESSAGE".
    func write(level: Logger.Level, label: String, source: String, message: String, file: String, line: UInt) {
        let (fd, showLevel, showOrigin, module, off) = state.withLock { ($0.fd, $0.showLevel, $0.showOrigin, $0.module, $0.off) }
        if off { return }
        if let module, !source.hasPrefix(module) { return }
        var text = Self.timestamp()
        if showLevel { text += " \(level)" }
        text += " \(label):"
        if showOrigin { text += " \(file.split(separator: "/").last.map(String.init) ?? file):\(line)" }
        text += " [\(source)] \(message)\n"
        let bytes = Array(text.utf8)
        // Safe: write(2) reads `count` bytes of the array's storage, lent for the call.
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if written != bytes.count { state.withLock { $0.dropped &+= 1 } }
    }

    static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// swift-log's handler for every VMM logger: level and destination from `LogControl.shared`.
public struct ControlledLogHandler: LogHandler {
    public let label: String
    public var metadata: Logger.Metadata = [:]

    public init(label: String) { self.label = label }

    public var logLevel: Logger.Level {
        get { LogControl.shared.level }
        set { LogControl.shared.setLevel(newValue) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        LogControl.shared.write(level: event.level, label: label, source: event.source, message: event.message.description,
                                file: event.file, line: event.line)
    }
}
