import Loaders
import VMMCore

/// Why the boot structures could not be written: the image or a module does not fit, guest
/// memory refused a write, or the configuration cannot be booted this way.
public enum BootError: Error, Equatable, CustomStringConvertible {
    case image(path: String, LoaderError)
    case memory(GuestMemoryError)
    case invalid(String)

    public var description: String {
        switch self {
        case .image(let path, let error): "\(path): \(error)"
        case .memory(let error): error.description
        case .invalid(let why): why
        }
    }
}
