import Glibc

/// Where a socket of the VMM listens (the gdb stub, the HTTP API) or where its client
/// connects: TCP (loopback unless a host is given) or a Unix socket.
public enum SocketEndpoint: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: UInt16)
    case unix(path: String)

    /// `HOST:PORT`, `:PORT`, `PORT` or `unix:PATH`.
    public init(parsing text: String) throws(HostError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty, path.utf8.count < 108 else { throw .invalid("unix socket path must be 1 to 107 bytes") }
            self = .unix(path: path)
            return
        }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2, let port = UInt16(parts.last ?? ""), port > 0 else {
            throw .invalid("'\(text)' is not HOST:PORT, :PORT or unix:PATH")
        }
        let host = parts.count == 2 && !parts[0].isEmpty ? parts[0] : "127.0.0.1"
        var address = in_addr()
        guard inet_pton(AF_INET, host, &address) == 1 else { throw .invalid("'\(host)' is not an IPv4 address") }
        self = .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): return "\(host):\(port)"
        case .unix(let path): return "unix:\(path)"
        }
    }

    /// A listening socket (close-on-exec) with room for `backlog` connections not yet accepted;
    /// `user` names what listens, for the error line.
    ///
    /// A Unix socket is created with mode 0600 (owner only). Whatever is at its path already is
    /// left alone unless it is a socket nobody serves (left by a VMM that died): a file that is no
    /// socket, and a socket another process listens on, are refused.
    public func listen(for user: String, backlog: Int32 = 4) throws(HostError) -> Int32 {
        if case .unix(let path) = self { try clearStaleSocket(at: path, user: user) }
        let fd = try openSocket(user: user)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        // The socket file takes its mode from the umask at bind: owner-only from the start, so
        // no other user can connect in the moment before a chmod.
        let savedMask = umask(0o177)
        let bound = withSocketAddress { Glibc.bind(fd, $0, $1) }
        umask(savedMask)
        guard bound == 0, Glibc.listen(fd, backlog) == 0 else {
            let error = failure(user, bound == 0 ? "listen" : "bind")
            close(fd)
            throw error
        }
        return fd
    }

    private func clearStaleSocket(at path: String, user: String) throws(HostError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return } // nothing there
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw .socket("\(user): \(path) exists and is not a socket; refusing to replace it")
        }
        if let probe = try? connect(for: user) {
            close(probe)
            throw .socket("\(user): \(path) is served by another process (is another swiftvmm using it?)")
        }
        unlink(path)
    }

    /// A socket connected to this endpoint.
    public func connect(for user: String) throws(HostError) -> Int32 {
        let fd = try openSocket(user: user)
        guard withSocketAddress({ Glibc.connect(fd, $0, $1) }) == 0 else {
            let error = failure(user, "connect")
            close(fd)
            throw error
        }
        return fd
    }

    private func openSocket(user: String) throws(HostError) -> Int32 {
        let family = if case .unix = self { AF_UNIX } else { AF_INET }
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure(user, "socket") }
        return fd
    }

    private func failure(_ user: String, _ call: String) -> HostError {
        let verb = call == "connect" ? "cannot connect to" : "cannot listen on"
        return .socket("\(user): \(verb) \(self): \(call): \(String(cString: strerror(errno)))")
    }

    /// Calls `body` with this endpoint as a sockaddr and its length.
    private func withSocketAddress(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        switch self {
        case .tcp(let host, let port):
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &address.sin_addr)
            return Self.asSocketAddress(&address, body)
        case .unix(let path):
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            // Safe: the path is shorter than sun_path (checked when parsing), so the copy and its
            // NUL stay inside the field.
            withUnsafeMutableBytes(of: &address.sun_path) { field in
                for (index, byte) in path.utf8.enumerated() { field[index] = byte }
                field[path.utf8.count] = 0
            }
            return Self.asSocketAddress(&address, body)
        }
    }

    /// Safe: Address is sockaddr_in or sockaddr_un, each a valid sockaddr of its own size, and
    /// `body` (bind or connect) only reads it during the call.
    private static func asSocketAddress<Address>(_ address: inout Address, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<Address>.size)) }
        }
    }
}
