import Glibc

/// The client side of the control socket: sends one request line, reads the reply up to its
/// final `ok` or `error: ...` line.
public enum ControlClient {
    public struct Reply: Sendable, Equatable {
        /// The reply's lines before the final one.
        public var text: String
        /// The text after `error: `, when the request failed.
        public var error: String?
    }

    public static func send(_ request: String, to endpoint: SocketEndpoint, timeoutSeconds: Int32 = 10) throws(VMMError) -> Reply {
        let fd = try endpoint.connect(for: "control")
        defer { close(fd) }
        var bytes = Array((request + "\n").utf8)[...]
        while !bytes.isEmpty {
            // Safe: send only reads the slice's bytes, lent for the call.
            let written = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { throw .socket("control: sending to \(endpoint) failed: \(String(cString: strerror(errno)))") }
            bytes = bytes.dropFirst(written)
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if let reply = parse(received) { return reply }
            var waiting = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&waiting, 1, timeoutSeconds * 1000)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { throw .socket("control: no reply from \(endpoint) within \(timeoutSeconds) s") }
            // Safe: read writes at most buffer.count bytes into the buffer it is lent for the call.
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw .socket("control: \(endpoint) closed the connection before replying") }
            received.append(contentsOf: buffer[0..<count])
        }
    }

    /// The reply once `bytes` hold a complete one (ending with an `ok` or `error:` line).
    static func parse(_ bytes: [UInt8]) -> Reply? {
        guard bytes.last == UInt8(ascii: "\n") else { return nil }
        var lines = String(decoding: bytes.dropLast(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let last = lines.popLast() else { return nil }
        if last == "ok" { return Reply(text: lines.joined(separator: "\n"), error: nil) }
        if last.hasPrefix("error: ") { return Reply(text: lines.joined(separator: "\n"), error: String(last.dropFirst(7))) }
        return nil
    }
}
