import VMMCore
import Debugging
import Glibc
import Synchronization

/// `--trace-exits`: writes one line per selected VM exit to stderr or a file, whole lines at a
/// time so vCPUs never interleave inside a line.
public final class ExitTracer: Sendable {
    public let filter: ExitFilter
    private let output: FileDescriptorOutput
    private let writing = Locked(())

    public init(filter: ExitFilter, path: String?) throws(VMMError) {
        self.filter = filter
        if let path {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw .traceOutput(path: path, reason: String(cString: strerror(errno))) }
            output = FileDescriptorOutput(fd: fd, ownsDescriptor: true)
        } else {
            output = FileDescriptorOutput(fd: STDERR_FILENO)
        }
    }

    func record(_ event: ExitEvent) {
        let line = event.traceLine + "\n"
        writing.withLock { _ in output.write(text: line) }
    }
}
