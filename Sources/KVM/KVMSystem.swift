import CKVM
import Glibc

/// A KVM capability the VMM depends on, checked at start so a missing one fails with its name.
public struct KVMCapability: Sendable, CustomStringConvertible {
    public let name: String
    let number: Int32

    public static let userMemory = KVMCapability(name: "KVM_CAP_USER_MEMORY", number: KVM_CAP_USER_MEMORY)
    public static let setTSSAddress = KVMCapability(name: "KVM_CAP_SET_TSS_ADDR", number: KVM_CAP_SET_TSS_ADDR)
    public static let extendedCPUID = KVMCapability(name: "KVM_CAP_EXT_CPUID", number: KVM_CAP_EXT_CPUID)
    public static let immediateExit = KVMCapability(name: "KVM_CAP_IMMEDIATE_EXIT", number: KVM_CAP_IMMEDIATE_EXIT)
    public static let maxVCPUs = KVMCapability(name: "KVM_CAP_MAX_VCPUS", number: KVM_CAP_MAX_VCPUS)
    public static let irqchip = KVMCapability(name: "KVM_CAP_IRQCHIP", number: KVM_CAP_IRQCHIP)
    public static let pit2 = KVMCapability(name: "KVM_CAP_PIT2", number: KVM_CAP_PIT2)

    /// What the VMM core cannot run without.
    public static let required: [KVMCapability] = [.userMemory, .setTSSAddress, .extendedCPUID, .immediateExit]

    /// A capability by its raw number (for tests and diagnostics).
    public init(name: String, number: Int32) {
        self.name = name
        self.number = number
    }

    public var description: String { name }
}

/// Why the KVM device could not be used.
public enum KVMOpenError: Error, Equatable, CustomStringConvertible {
    case missing(path: String)
    case permissionDenied(path: String)
    case notKVM(path: String, errno: Int32)
    case unsupportedAPIVersion(Int32)
    case missingCapability(String)
    case failed(KVMError)

    public var description: String {
        switch self {
        case .missing(let path): return "\(path) does not exist: KVM is not available on this host"
        case .permissionDenied(let path): return "no permission to open \(path) (add yourself to the kvm group or run as root)"
        case .notKVM(let path, let errno): return "\(path) is not a KVM device (\(String(cString: strerror(errno))))"
        case .unsupportedAPIVersion(let version): return "KVM API version \(version) is not supported (need 12)"
        case .missingCapability(let name): return "KVM lacks the required capability \(name)"
        case .failed(let error): return error.description
        }
    }
}

/// The KVM system handle (/dev/kvm): API version, capabilities, supported CPUID, VM creation.
public final class KVMSystem: Sendable {
    let fd: Int32
    /// Size of each vCPU's kvm_run mapping.
    public let vcpuMmapSize: Int

    /// Opens the KVM device at `path` and checks the API version.
    public init(path: String = "/dev/kvm") throws(KVMOpenError) {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            switch code {
            case ENOENT, ENODEV, ENXIO: throw .missing(path: path)
            case EACCES, EPERM: throw .permissionDenied(path: path)
            default: throw .notKVM(path: path, errno: code)
            }
        }
        let version = ckvm_ioctl_val(fd, CKVM_GET_API_VERSION, 0)
        if version < 0 {
            let code = errno
            close(fd)
            throw .notKVM(path: path, errno: code)
        }
        if version != KVM_API_VERSION {
            close(fd)
            throw .unsupportedAPIVersion(version)
        }
        let size = ckvm_ioctl_val(fd, CKVM_GET_VCPU_MMAP_SIZE, 0)
        if size < Int32(MemoryLayout<kvm_run>.size) {
            close(fd)
            throw .failed(KVMError("KVM_GET_VCPU_MMAP_SIZE", errno: size < 0 ? errno : EINVAL))
        }
        self.fd = fd
        self.vcpuMmapSize = Int(size)
    }

    deinit { close(fd) }

    /// The value KVM_CHECK_EXTENSION reports (0 = unsupported).
    public func check(_ capability: KVMCapability) -> Int32 {
        max(0, ckvm_ioctl_val(fd, CKVM_CHECK_EXTENSION, UInt(capability.number)))
    }

    /// Throws `.missingCapability` naming the first capability in `capabilities` KVM lacks.
    public func require(_ capabilities: [KVMCapability]) throws(KVMOpenError) {
        for capability in capabilities where check(capability) == 0 {
            throw .missingCapability(capability.name)
        }
    }

    /// The CPUID leaves KVM can expose to guests.
    public func supportedCPUID() throws(KVMError) -> [CPUIDEntry] {
        var capacity: UInt32 = 128
        while true {
            guard let buffer = ckvm_cpuid2_alloc(capacity) else { throw KVMError("calloc", errno: ENOMEM) }
            defer { free(buffer) }
            if ckvm_ioctl_ptr(fd, CKVM_GET_SUPPORTED_CPUID, buffer) == 0 {
                return (0..<buffer.pointee.nent).map { CPUIDEntry(ckvm_cpuid2_entry(buffer, $0).pointee) }
            }
            let code = errno
            guard code == E2BIG, capacity < 4096 else { throw KVMError("KVM_GET_SUPPORTED_CPUID", errno: code) }
            capacity *= 2
        }
    }

    /// Creates an empty VM.
    public func createVM() throws(KVMError) -> VirtualMachine {
        let vmfd = try retryingEINTR("KVM_CREATE_VM") { ckvm_ioctl_val(fd, CKVM_CREATE_VM, 0) }
        return VirtualMachine(fd: vmfd, vcpuMmapSize: vcpuMmapSize)
    }
}

/// One CPUID leaf/subleaf as KVM describes it.
public struct CPUIDEntry: Sendable, Equatable {
    public var function: UInt32
    public var index: UInt32
    public var flags: UInt32
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    /// Set in `flags` when the leaf depends on ECX (KVM_CPUID_FLAG_SIGNIFCANT_INDEX).
    public static let significantIndex = UInt32(KVM_CPUID_FLAG_SIGNIFCANT_INDEX)

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0,
                eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }

    init(_ raw: kvm_cpuid_entry2) {
        self.init(function: raw.function, index: raw.index, flags: raw.flags,
                  eax: raw.eax, ebx: raw.ebx, ecx: raw.ecx, edx: raw.edx)
    }

    var raw: kvm_cpuid_entry2 {
        var entry = kvm_cpuid_entry2()
        entry.function = function
        entry.index = index
        entry.flags = flags
        entry.eax = eax
        entry.ebx = ebx
        entry.ecx = ecx
        entry.edx = edx
        return entry
    }
}
