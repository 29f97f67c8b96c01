import Glibc

/// An errno value from a failed host call.
public struct Errno: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: Int32
    public init(_ code: Int32) { self.code = code }
    /// The calling thread's errno now.
    public static var current: Errno { Errno(errno) }
    /// EAGAIN (EWOULDBLOCK): a non-blocking descriptor has nothing to give or no room now.
    public var wouldBlock: Bool { code == EAGAIN || code == EWOULDBLOCK }
    public var description: String { String(cString: strerror(code)) }
}

/// A host call that failed, named, with its errno (thread creation, affinity, signal handlers),
/// or a host resource described in words (a socket path another process serves).
public enum HostError: Error, Equatable, Sendable, CustomStringConvertible {
    case call(String, Errno)
    /// Bad input naming a host resource (a socket endpoint): the user's to fix.
    case invalid(String)
    /// A socket that cannot be listened on or connected to.
    case socket(String)

    public var description: String {
        switch self {
        case .call(let name, let error): return "\(name): \(error)"
        case .invalid(let why), .socket(let why): return why
        }
    }
}
