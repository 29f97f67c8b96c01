import Devices
import Glibc
import Host
import Replay
import Synchronization
import VMMCore

/// Fault tolerance (docs/replay.md): a primary runs the guest in deterministic mode and streams
/// its log to a backup, which replays it as it arrives; the primary's serial output leaves only
/// once the backup has the log up to the exit that wrote it. When the primary dies the backup
/// replays to the end of what it received, goes live and takes over the output.
///
/// The stream is the log's header and chunks, with three frames of its own in the place of a
/// chunk's length (which is at most 1 MiB): the primary's output file, the bytes it has written
/// out so far, and a heartbeat. The backup answers with u64 acknowledgements: exits received.
enum FTFrame {
    /// u64 device, u64 inode, u64 size at start, u8 regular file: where the primary's output goes.
    static let output: UInt32 = 0xFFFF_FFF0
    /// u64: serial bytes the primary has written out.
    static let written: UInt32 = 0xFFFF_FFF1
    /// Nothing: the primary is alive (sent while its guest waits in HLT).
    static let heartbeat: UInt32 = 0xFFFF_FFF2
}

enum FTLimits {
    /// Output the primary holds for the backup's acknowledgement before its guest waits.
    static let heldOutput = 1 << 20
    /// Chunks the backup holds before it stops reading (and the primary's sends wait).
    static let queuedChunks = 64
    /// Held output waits at most this long (ns) for its chunk to be sent.
    static let flushAfter: UInt64 = 200_000
    /// A waiting primary says it is alive this often (ns).
    static let heartbeat: UInt64 = 500_000_000
    /// How long (ms) a backup waits for the header, and a primary at its end for the last
    /// acknowledgement.
    static let silenceMilliseconds = 5000
    /// Output the backup keeps beyond the primary's last report of what it wrote.
    static let keptOutput = 16 << 20
}

/// The exit being handled, shared by the deterministic driver and the output gate.
final class ExitCounter: Sendable {
    let value = Atomic<UInt64>(0)
}

/// Where a serial output goes: two processes appending to the same regular file can tell
/// exactly how much of the guest's output the file holds.
struct OutputIdentity: Equatable, Sendable {
    var device: UInt64 = 0, inode: UInt64 = 0, size: UInt64 = 0, regular = false

    static func of(fd: Int32) -> OutputIdentity {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return OutputIdentity() }
        return OutputIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: UInt64(max(0, info.st_size)),
                              regular: info.st_mode & S_IFMT == S_IFREG)
    }

    func sameFile(as other: OutputIdentity) -> Bool { regular && other.regular && device == other.device && inode == other.inode }
}

/// The UART's output in a fault-tolerant pair.
///
/// Primary: each byte waits, tagged with its exit, until the backup acknowledged the log through
/// that exit (the output rule), then goes to the real output. Backup: bytes are counted and kept
/// (those past the primary's last report of what it wrote) until a takeover, which writes what
/// the primary did not: from the shared output file's length when both write to the same file,
/// else from the primary's last report.
final class FTSerialGate: SerialOutput, @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `lock`.
    enum Role { case primary, backup }
    let role: Role
    private let inner: (any SerialOutput)?
    private let exits: ExitCounter
    private let lock = ConditionLock()
    private var open = false
    // primary
    private var held: [UInt8] = [], heldExits: [UInt64] = [], heldStart = 0
    // backup
    private var produced: UInt64 = 0
    private var kept: [UInt8] = [], keptFrom: UInt64 = 0
    private var primaryWritten: UInt64 = 0
    private var primaryOutput: OutputIdentity?
    private(set) var lostBytes: UInt64 = 0

    init(role: Role, inner: (any SerialOutput)?, exits: ExitCounter) {
        (self.role, self.inner, self.exits) = (role, inner, exits)
    }

    func write(_ byte: UInt8) {
        lock.withLock {
            if open {
                inner?.write(byte)
                return
            }
            switch role {
            case .primary:
                held.append(byte)
                heldExits.append(exits.value.load(ordering: .relaxed) &+ 1) // written while this exit is dispatched
            case .backup:
                produced &+= 1
                kept.append(byte)
                if kept.count > FTLimits.keptOutput {
                    kept.removeFirst(kept.count - FTLimits.keptOutput)
                    keptFrom = produced - UInt64(kept.count)
                }
            }
        }
    }

    /// Primary: bytes held for the backup's acknowledgement.
    var heldCount: Int { lock.withLock { held.count - heldStart } }

    /// Primary: the backup has the log through `exit`: its output goes.
    func release(through exit: UInt64) {
        lock.withLock {
            while heldStart < held.count, heldExits[heldStart] <= exit {
                inner?.write(held[heldStart])
                heldStart += 1
            }
            if heldStart > 4096 && heldStart * 2 > held.count {
                held.removeFirst(heldStart)
                heldExits.removeFirst(heldStart)
                heldStart = 0
            }
        }
    }

    /// Everything held goes, and so does all later output (the backup is gone, or the run ended).
    func openAll() {
        lock.withLock {
            for index in heldStart..<held.count { inner?.write(held[index]) }
            (held, heldExits, heldStart, open) = ([], [], 0, true)
        }
    }

    /// Backup: the primary's output file, as it reported at start.
    func setPrimaryOutput(_ identity: OutputIdentity) { lock.withLock { primaryOutput = identity } }

    /// Backup: the primary has written `bytes` of output; the kept bytes before that go.
    func primaryWrote(_ bytes: UInt64) {
        lock.withLock {
            primaryWritten = max(primaryWritten, bytes)
            let drop = min(UInt64(kept.count), primaryWritten.saturatingSubtract(keptFrom))
            if drop > 0 {
                kept.removeFirst(Int(drop))
                keptFrom &+= drop
            }
        }
    }

    /// Backup: the primary is gone; writes what it had not and opens. `ownOutput` is where this
    /// process's output goes. Returns how the starting point was found, for the log line.
    @discardableResult
    func takeOver(ownOutput: OutputIdentity?) -> String {
        lock.withLock {
            var from = primaryWritten, how = "from the primary's last report (\(primaryWritten) bytes)"
            if let own = ownOutput, let theirs = primaryOutput, own.sameFile(as: theirs) {
                from = own.size.saturatingSubtract(theirs.size)
                how = "from the shared output file's length (\(from) bytes)"
            }
            if from < keptFrom {
                // More than keptOutput ahead of the primary's last report: that much is gone.
                lostBytes &+= keptFrom - from
                how += "; \(keptFrom - from) bytes past what the backup keeps are lost"
                from = keptFrom
            }
            let start = Int(min(from - keptFrom, UInt64(kept.count)))
            for byte in kept[start...] { inner?.write(byte) }
            (kept, open) = ([], true)
            return how
        }
    }
}

/// The primary's side of the link: one backup accepted before the guest starts; chunks sent
/// by the vCPU thread (with a send timeout: a backup that stops reading is gone after
/// `silenceMilliseconds`), acknowledgements read by a thread of their own.
final class FTPrimaryLink: @unchecked Sendable {
    // @unchecked: `fd` is fixed; the rest is atomic or only touched by the vCPU thread.
    let endpoint: SocketEndpoint
    let fd: FileDescriptor
    let gate: FTSerialGate
    let acknowledged = Atomic<UInt64>(0)
    private let alive = Atomic<Bool>(true)
    /// Frames go whole, one at a time: the vCPU thread sends chunks, the serial writer reports
    /// what it wrote. Holds the last report sent.
    private let sending = Locked<UInt64>(0)
    var lastFlush: UInt64 = 0
    var lastHeartbeat: UInt64 = 0

    /// Listens on `endpoint` and waits for the backup to connect.
    init(listening endpoint: SocketEndpoint, gate: FTSerialGate) throws(VMMError) {
        let listener = try VMMError.host { () throws(HostError) in try endpoint.listen(for: "ft primary", backlog: 1) }
        defer {
            close(listener)
            if case .unix(let path) = endpoint { unlink(path) }
        }
        writeStandardError("swiftvmm: ft: waiting for the backup on \(endpoint)\n")
        let connection: FileDescriptor
        do { connection = try FileDescriptor(rawValue: listener).accept() } catch { throw .socket("ft primary: accept on \(endpoint): \(error)") }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(connection.rawValue, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        keepAlive(connection.rawValue, endpoint)
        (self.endpoint, fd, self.gate) = (endpoint, connection, gate)
    }

    deinit { fd.close() }

    var isAlive: Bool { alive.load(ordering: .acquiring) }

    /// Whether the run is stopping: a send waiting for a backup that reads nothing gives up then.
    /// Set before the guest runs.
    var isStopping: @Sendable () -> Bool = { false }

    /// Sends `bytes` (the vCPU thread, the serial writer, and the machine at its end); a
    /// failure is the backup gone. A backup that reads slowly is waited for (that is the
    /// bounded lag); one that died fails the write (EPIPE, ECONNRESET).
    func send(_ bytes: [UInt8], exits: UInt64) {
        let failure: String? = sending.withLock { _ in
            guard isAlive else { return nil }
            return writeWaiting(bytes)
        }
        if let failure { lost(failure, exits: exits) }
    }

    /// write(2), not send(2): the vCPU thread's allow-list has it, and SIGPIPE is ignored (EPIPE).
    /// The socket's send timeout (1 s) lets a full socket be retried while the run goes on, and
    /// given up when it stops.
    private func writeWaiting(_ bytes: [UInt8]) -> String? {
        var rest = bytes[...]
        while !rest.isEmpty {
            do throws(Errno) {
                let written = try fd.write(rest)
                guard written > 0 else { return "the link took nothing" }
                rest = rest.dropFirst(written)
            } catch where error.wouldBlock {
                if isStopping() { return "the run is stopping" }
            } catch {
                return "\(error)"
            }
        }
        return nil
    }
    /// Reports how much output this primary has written, when that changed: called by the serial
    /// writer right after each write(2), so a backup taking over repeats at most the bytes of a
    /// write whose report the primary's death cut off.
    func sendWritten(_ bytes: UInt64, exits: UInt64) {
        var writer = StateWriter()
        writer.u32(FTFrame.written)
        writer.u64(bytes)
        let failure: String? = sending.withLock { sent in
            guard isAlive, bytes > sent else { return nil }
            sent = bytes
            return writeWaiting(writer.bytes)
        }
        if let failure { lost(failure, exits: exits) }
    }

    func sendHeartbeat(exits: UInt64) {
        var writer = StateWriter()
        writer.u32(FTFrame.heartbeat)
        send(writer.bytes, exits: exits)
    }

    func sendOutputIdentity(_ identity: OutputIdentity) {
        var writer = StateWriter()
        writer.u32(FTFrame.output)
        writer.u64(identity.device)
        writer.u64(identity.inode)
        writer.u64(identity.size)
        writer.bool(identity.regular)
        send(writer.bytes, exits: 0)
    }

    /// The acknowledgement reader's body: until the backup closes or the link fails.
    func readAcknowledgements() {
        var buffer = [UInt8](repeating: 0, count: 8)
        while isAlive {
            guard readExactly(fd, &buffer, silence: nil) else {
                lost("it closed the link", exits: acknowledged.load(ordering: .relaxed))
                return
            }
            let exits = LittleEndian.load(buffer, at: 0, size: 8)
            acknowledged.store(exits, ordering: .releasing)
            gate.release(through: exits)
        }
    }

    /// The backup is gone: the primary goes on alone, its output no longer held.
    func lost(_ why: String, exits: UInt64) {
        guard alive.exchange(false, ordering: .acquiringAndReleasing) else { return }
        let through = max(exits, acknowledged.load(ordering: .acquiring))
        writeStandardError("swiftvmm: ft: the backup went away after exit \(through) (\(why)); the primary goes on alone\n")
        gate.openAll()
    }

    /// At the end: waits (at most the silence limit) for the backup to acknowledge `exits`.
    func awaitAcknowledgement(of exits: UInt64) {
        let deadline = Clocks.monotonicNanoseconds().saturatingAdd(UInt64(FTLimits.silenceMilliseconds) * 1_000_000)
        while isAlive && acknowledged.load(ordering: .acquiring) < exits && Clocks.monotonicNanoseconds() < deadline { usleep(1000) }
    }

    /// The run is over: the last report of what was written, then the link closes.
    func finish(written: UInt64, exits: UInt64) {
        sendWritten(written, exits: exits)
        alive.store(false, ordering: .releasing)
        shutdown(fd.rawValue, Int32(SHUT_RDWR))
    }
}

/// Across hosts, TCP keepalive finds a peer whose host died (2 s idle, then 3 probes 1 s apart);
/// a live peer's kernel answers them however busy the VMM is.
func keepAlive(_ fd: Int32, _ endpoint: SocketEndpoint) {
    guard case .tcp = endpoint else { return }
    var on: Int32 = 1, idle: Int32 = 2, interval: Int32 = 1, count: Int32 = 3
    let size = socklen_t(MemoryLayout<Int32>.size)
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, size)
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, size)
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, size)
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, size)
}

/// Reads exactly `buffer.count` bytes; false at the end of the stream, on an error, or after
/// `silence` ms without data.
func readExactly(_ fd: FileDescriptor, _ buffer: inout [UInt8], silence: Int?) -> Bool {
    var done = 0
    while done < buffer.count {
        if let silence {
            guard let ready = try? fd.poll(.readable, milliseconds: silence), !ready.isEmpty else { return false }
        }
        let count = buffer.withUnsafeMutableBytes { raw in
            // Safe: reads at most the rest of the array's own storage, lent for the call.
            (try? fd.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[done...]))) ?? -1
        }
        guard count > 0 else { return false }
        done += count
    }
    return true
}

/// The backup's side: connects to the primary, reads the log's header, then a thread receives
/// chunks (queued for the replay, at most `queuedChunks`) and acknowledges each. The end of the
/// stream (the primary died, or closed the link) is the end of the log: the replay then goes live.
final class FTStreamSource: ReplayChunkSource, @unchecked Sendable {
    // @unchecked: the queue and its flags are guarded by `lock`; `counter` is the receiver's own.
    let endpoint: SocketEndpoint
    let fd: FileDescriptor
    let header: ReplayHeader
    var gate: FTSerialGate?
    var isStream: Bool { true }
    private let lock = ConditionLock()
    private var queue: [(length: UInt32, checksum: UInt64, payload: [UInt8])] = []
    private var ended = false
    private var failure: ReplayLogError?
    private var stopping = false
    private var counter = ReplayLogDecoder()

    /// Connects (retrying for `seconds` while the primary is not yet listening) and reads the header.
    init(connecting endpoint: SocketEndpoint, seconds: Int = 30) throws(VMMError) {
        var connection: Int32 = -1
        let deadline = Clocks.monotonicNanoseconds().saturatingAdd(UInt64(seconds) * 1_000_000_000)
        while connection < 0 {
            do { connection = try endpoint.connect(for: "ft backup") } catch {
                guard Clocks.monotonicNanoseconds() < deadline else { throw .socket("\(error)") }
                usleep(50_000)
            }
        }
        let fd = FileDescriptor(rawValue: connection)
        keepAlive(connection, endpoint)
        do {
            header = try ReplayHeader.read { count in
                var bytes = [UInt8](repeating: 0, count: count)
                return readExactly(fd, &bytes, silence: FTLimits.silenceMilliseconds) ? bytes : nil
            }.header
        } catch {
            fd.close()
            throw .replayLog("ft backup: the primary at \(endpoint) sent a bad log header: \(error)")
        }
        (self.endpoint, self.fd) = (endpoint, fd)
    }

    deinit { fd.close() }

    /// The receiver's body: frames until the stream ends.
    func receive() {
        // No silence limit: a primary whose guest computes sends nothing for a while, and a
        // backup that guessed it dead would run the guest beside it. Its death closes the link
        // (across hosts, keepalive finds it).
        var frame = [UInt8](repeating: 0, count: 4)
        while readExactly(fd, &frame, silence: nil) {
            let tag = UInt32(LittleEndian.load(frame, at: 0, size: 4))
            switch tag {
            case FTFrame.heartbeat: continue
            case FTFrame.written:
                var value = [UInt8](repeating: 0, count: 8)
                guard readExactly(fd, &value, silence: nil) else { break }
                gate?.primaryWrote(LittleEndian.load(value, at: 0, size: 8))
                continue
            case FTFrame.output:
                var fields = [UInt8](repeating: 0, count: 25)
                guard readExactly(fd, &fields, silence: nil) else { break }
                gate?.setPrimaryOutput(OutputIdentity(device: LittleEndian.load(fields, at: 0, size: 8), inode: LittleEndian.load(fields, at: 8, size: 8),
                                                      size: LittleEndian.load(fields, at: 16, size: 8), regular: fields[24] == 1))
                continue
            default:
                guard tag >= 1, tag <= UInt32(ReplayLog.maximumChunk) else { return fail(.corrupt("a frame tagged 0x\(String(tag, radix: 16)) in the stream")) }
                var checksum = [UInt8](repeating: 0, count: 8), payload = [UInt8](repeating: 0, count: Int(tag))
                guard readExactly(fd, &checksum, silence: nil), readExactly(fd, &payload, silence: nil) else { break }
                let sum = LittleEndian.load(checksum, at: 0, size: 8)
                do {
                    try counter.feed(length: tag, checksum: sum, payload: payload)
                    while try counter.next() != nil {}
                } catch { return fail(error) }
                let admitted = lock.withLock {
                    while queue.count >= FTLimits.queuedChunks && !stopping { lock.wait(until: Clocks.monotonicNanoseconds() + 20_000_000) }
                    guard !stopping else { return false }
                    queue.append((tag, sum, payload))
                    lock.broadcast()
                    return true
                }
                guard admitted else { break }
                var ack = StateWriter()
                ack.u64(counter.exits)
                do { try fd.writeAll(ack.bytes) } catch { break }
                continue
            }
            break
        }
        lock.withLock {
            ended = true
            lock.broadcast()
        }
    }

    private func fail(_ error: ReplayLogError) {
        lock.withLock {
            (failure, ended) = (error, true)
            lock.broadcast()
        }
    }

    /// What the replay does while it waits for the primary (parks for a pause); set before it runs.
    var whileWaiting: (@Sendable () -> Void)?

    /// The next chunk, waiting for it; nil once the stream ended and the queue is empty (or the
    /// run is stopping).
    func nextChunk(afterExit exits: UInt64) throws(ReplayLogError) -> (length: UInt32, checksum: UInt64, payload: [UInt8])? {
        typealias Chunk = (length: UInt32, checksum: UInt64, payload: [UInt8])
        while true {
            let (chunk, error, done): (Chunk?, ReplayLogError?, Bool) = lock.withLock {
                if queue.isEmpty && !ended && !stopping { lock.wait(until: Clocks.monotonicNanoseconds() + 20_000_000) }
                if !queue.isEmpty {
                    lock.broadcast()
                    return (queue.removeFirst(), nil, true)
                }
                return (nil, failure, ended || stopping)
            }
            if done {
                if let error { throw error }
                return chunk
            }
            whileWaiting?() // outside the lock: the receiver goes on queueing meanwhile
        }
    }

    /// Waits (at most the silence limit) for the primary to close the stream.
    func awaitEnd() {
        let deadline = Clocks.monotonicNanoseconds().saturatingAdd(UInt64(FTLimits.silenceMilliseconds) * 1_000_000)
        lock.withLock {
            while !ended && !stopping && Clocks.monotonicNanoseconds() < deadline { lock.wait(until: Clocks.monotonicNanoseconds() + 20_000_000) }
        }
    }

    /// The run is ending: the receiver and a waiting replay let go (from any thread: the
    /// receiver, blocked in a read, sees it within the silence limit or when the primary closes).
    func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
    }
}
