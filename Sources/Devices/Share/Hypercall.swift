import VMMCore

/// The share's hypercalls (docs/guest-abi.md, "File hypercalls"). Each has a doorbell port
/// (CPL 0: `outl` of the parameter block's address) and a doorbell address in the share's MMIO
/// window (CPL 3, where port I/O is not a fast path: a 32- or 64-bit store of the address).
///
/// The parameter block, at a guest-physical address, is the same for every call: a result the
/// VMM writes (int64: value or -errno) followed by four arguments (uint64).
public enum Hypercall: UInt8, CaseIterable, Sendable {
    case open = 1, close, read, write, pread, pwrite, lseek, fstat, stat, unlink, mkdir, rmdir, rename
    case getcwd, chdir, getdents, fsync, clockGettime

    public var name: String {
        switch self {
        case .clockGettime: "clock_gettime"
        default: String(describing: self)
        }
    }

    /// Bytes of a parameter block: result, then four arguments.
    public static let blockSize = 40
    /// What a read of the window's (and the first port's) offset 0 returns: "SVHC".
    public static let magic: UInt32 = 0x4348_5653
    public static let version: UInt32 = 1
    /// Offsets in the MMIO window: magic, version, flags (bit 0: read-only share), the open-file
    /// limit; doorbell n at `doorbellOffset + 8 n`.
    public enum Window {
        public static let magic: UInt64 = 0, version: UInt64 = 4, flags: UInt64 = 8, openFileLimit: UInt64 = 12
        public static let doorbellOffset: UInt64 = 0x100
        public static let size: UInt64 = 0x1000
    }
    /// Ports in the doorbell block: port 0 reads the magic, port n rings call n.
    public static let portCount: UInt64 = 32

    /// svmm_stat, what fstat and stat write: inode, size, blocks (u64); mode, nlink, uid, gid
    /// (u32); atime, mtime, ctime (i64 nanoseconds since the epoch).
    public static let statSize = 64
}

/// Per-call counts and time spent in the VMM serving each hypercall, for `--stats` (a table in
/// the shape of `strace -c`).
public final class HypercallStatistics: Sendable {
    struct Entry {
        var calls: UInt64 = 0, errors: UInt64 = 0, nanoseconds: UInt64 = 0
    }

    struct Counts {
        var entries = [Entry](repeating: Entry(), count: Hypercall.allCases.count + 1)
        /// Doorbells rung with a block outside RAM (nothing to answer in), or an unknown call.
        var badBlocks: UInt64 = 0, unknownCalls: UInt64 = 0
    }

    private let counts = Locked(Counts())

    public init() {}

    func record(_ call: Hypercall, failed: Bool, nanoseconds: UInt64) {
        counts.withLock { counts in
            let index = Int(call.rawValue)
            counts.entries[index].calls &+= 1
            if failed { counts.entries[index].errors &+= 1 }
            counts.entries[index].nanoseconds &+= nanoseconds
        }
    }

    func recordBadBlock() { counts.withLock { $0.badBlocks &+= 1 } }
    func recordUnknownCall() { counts.withLock { $0.unknownCalls &+= 1 } }

    /// Calls and errors of `call` so far.
    public func count(_ call: Hypercall) -> (calls: UInt64, errors: UInt64) {
        counts.withLock { let entry = $0.entries[Int(call.rawValue)]; return (entry.calls, entry.errors) }
    }

    /// Every call served so far.
    public var totalCalls: UInt64 { counts.withLock { $0.entries.reduce(0) { $0 &+ $1.calls } } }

    /// The `--stats` table: share of time, seconds, µs per call, calls and errors per hypercall,
    /// busiest first, as `strace -c` prints them. The time is the VMM's own (the host file call
    /// and the block's decoding); the guest also pays the exit, ~20-30 µs on PVM.
    public func report() -> String {
        let snapshot = counts.withLock { $0 }
        let used: [(Hypercall, Entry)] = Hypercall.allCases.map { ($0, snapshot.entries[Int($0.rawValue)]) }.filter { $0.1.calls > 0 }
            .sorted { (a: (Hypercall, Entry), b: (Hypercall, Entry)) -> Bool in
                a.1.nanoseconds != b.1.nanoseconds ? a.1.nanoseconds > b.1.nanoseconds : a.0.rawValue < b.0.rawValue
            }
        let total = used.reduce(UInt64(0)) { $0 &+ $1.1.nanoseconds }
        func row(_ nanoseconds: UInt64, _ calls: UInt64, _ errors: UInt64, _ name: String) -> String {
            let hundredths = total > 0 ? UInt64(Double(nanoseconds) / Double(total) * 10_000) : 0
            let perCall = calls > 0 ? nanoseconds / calls / 1000 : 0
            let columns: [String] = [pad(decimal(hundredths, places: 2), 6), pad(decimal(nanoseconds / 1000, places: 6), 11),
                                     pad(String(perCall), 11), pad(String(calls), 9), pad(errors > 0 ? String(errors) : "", 9), name]
            return columns.joined(separator: " ")
        }
        var lines = ["share hypercalls:", "% time     seconds  usecs/call     calls    errors call",
                     "------ ----------- ----------- --------- --------- ----------------"]
        lines += used.map { row($0.1.nanoseconds, $0.1.calls, $0.1.errors, $0.0.name) }
        lines.append("------ ----------- ----------- --------- --------- ----------------")
        lines.append(row(total, used.reduce(0) { $0 &+ $1.1.calls }, used.reduce(0) { $0 &+ $1.1.errors }, "total"))
        if snapshot.badBlocks > 0 || snapshot.unknownCalls > 0 {
            lines.append("  ignored: blocks outside RAM=\(snapshot.badBlocks) unknown calls=\(snapshot.unknownCalls)")
        }
        return lines.joined(separator: "\n")
    }

    /// `value` / 10^places with `places` decimals, in integers (no Foundation in the VMM).
    private func decimal(_ value: UInt64, places: Int) -> String {
        var scale: UInt64 = 1
        for _ in 0..<places { scale *= 10 }
        let fraction = String(value % scale)
        return "\(value / scale)." + String(repeating: "0", count: places - fraction.count) + fraction
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}
