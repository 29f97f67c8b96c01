import VMM
import Host
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
        let fd = FileDescriptor(rawValue: try VMMError.host { () throws(HostError) in try endpoint.connect(for: "control") })
        defer { fd.close() }
        do { try fd.writeAll(Array((request + "\n").utf8), socket: true) } catch {
            throw .socket("control: sending to \(endpoint) failed: \(error)")
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if let reply = parse(received) { return reply }
            let ready: Bool, count: Int
            do {
                ready = try !fd.poll(.readable, milliseconds: Int(timeoutSeconds) * 1000).isEmpty
                count = ready ? try fd.read(into: &buffer) : 0
            } catch { throw .socket("control: reading from \(endpoint) failed: \(error)") }
            guard ready else { throw .socket("control: no reply from \(endpoint) within \(timeoutSeconds) s") }
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
