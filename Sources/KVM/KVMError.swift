import Glibc

/// A failed KVM or host call: names the call and carries errno.
public struct KVMError: Error, Equatable, CustomStringConvertible {
    /// The ioctl or system call that failed (for example "KVM_CREATE_VM").
    public let call: String
    /// The errno the call left behind.
    public let errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String {
        "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// Runs `body` until it returns something other than -1/EINTR; throws KVMError on failure.
@inline(__always)
func retryingEINTR(_ call: @autoclosure () -> String, _ body: () -> Int32) throws(KVMError) -> Int32 {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        throw KVMError(call(), errno: code)
    }
}
