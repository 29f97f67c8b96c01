/// Writes all of `text` to `fd`, retrying short writes and EINTR; false when the fd refuses.
@discardableResult
public func writeAll(_ text: String, to fd: FileDescriptor) -> Bool {
    (try? fd.writeAll(Array(text.utf8))) != nil
}

/// Writes `text` to stderr with write(2): safe from any thread, no shared FILE state.
public func writeStandardError(_ text: String) {
    writeAll(text, to: .standardError)
}
