import Glibc

/// Writes all of `text` to `fd`, retrying short writes and EINTR; false when the fd refuses.
@discardableResult
public func writeAll(_ text: String, to fd: Int32) -> Bool {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return false }
        offset += written
    }
    return true
}

/// Writes `text` to stderr with write(2): safe from any thread, no shared FILE state.
public func writeStandardError(_ text: String) {
    writeAll(text, to: STDERR_FILENO)
}
