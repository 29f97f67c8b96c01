import Glibc

/// A one-line progress report on stderr for long operations (prefaulting memory, later
/// snapshots and migrations): redrawn in place on a terminal, silent when stderr is not one.
public final class ProgressLine: @unchecked Sendable { // used by the one thread that runs the operation
    private let what: String
    private let enabled = isatty(STDERR_FILENO) == 1
    private var shown = false

    public init(what: String) { self.what = what }

    public func update(done: Int, total: Int) {
        guard enabled, total > 0 else { return }
        shown = true
        let percent = Int((Double(done) / Double(total) * 100).rounded(.down))
        writeStandardError("\r\(what): \(percent)% (\(done >> 20) of \(total >> 20) MiB)")
    }

    public func finish() {
        if shown { writeStandardError("\n") }
        shown = false
    }
}
