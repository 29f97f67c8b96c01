import CHost
import Glibc
import VMMCore

/// Why a share cannot be set up (`--share PATH`).
public struct ShareSetupError: Error, CustomStringConvertible {
    public let description: String
}

/// A host directory served to one guest: every path the guest names is resolved by the kernel
/// beneath the directory (openat2 with RESOLVE_BENEATH, no magic links, no mount crossings), the
/// guest holds small descriptor numbers of its own (never host descriptors), at most
/// `maxOpenFiles` at a time, and a read-only share refuses every change with EROFS.
///
/// Results are Linux-style: a value, or a negative errno. Plain Swift over the host's file calls:
/// the hypercall device decodes the guest's parameter blocks and buffers and calls in here.
public final class ShareDirectory: Sendable {
    /// What fstat and stat report (docs/guest-abi.md, struct svmm_stat).
    public struct Status: Equatable, Sendable {
        public var inode: UInt64, size: UInt64, blocks: UInt64
        public var mode: UInt32, links: UInt32, user: UInt32, group: UInt32
        public var accessed: Int64, modified: Int64, changed: Int64 // nanoseconds since the epoch

        init(_ host: stat) {
            func nanoseconds(_ time: timespec) -> Int64 {
                Int64(time.tv_sec).multipliedReportingOverflow(by: 1_000_000_000).partialValue &+ Int64(time.tv_nsec)
            }
            inode = UInt64(host.st_ino); size = UInt64(clamping: host.st_size); blocks = UInt64(clamping: host.st_blocks)
            mode = host.st_mode; links = UInt32(clamping: host.st_nlink); user = host.st_uid; group = host.st_gid
            accessed = nanoseconds(host.st_atim); modified = nanoseconds(host.st_mtim); changed = nanoseconds(host.st_ctim)
        }

        public var isDirectory: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFDIR) }
        public var isRegular: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFREG) }
    }

    /// A call that failed: its Linux-style result, a negative errno.
    public struct Failure: Error, Equatable {
        public let result: Int64
    }

    /// O_PATH (Linux; the C library exports it only with _GNU_SOURCE).
    static let pathOnly: Int32 = 0o10000000

    /// One open file: the host descriptor is closed when the last user lets go of it, so a close
    /// racing a read on another vCPU never pulls the descriptor from under that read.
    final class OpenFile: Sendable {
        let fd: Int32
        let isDirectory: Bool

        init(fd: Int32, isDirectory: Bool) { (self.fd, self.isDirectory) = (fd, isDirectory) }
        deinit { Glibc.close(fd) }
    }

    struct Table {
        var files: [Int: OpenFile] = [:]
        /// The guest's working directory beneath the root, as path components.
        var directory: [[UInt8]] = []
    }

    /// The guest's first descriptor number (0-2 stay the guest's console).
    public static let firstDescriptor = 3
    /// Longest path the guest may name, with its terminating NUL (Linux's PATH_MAX).
    public static let pathLimit = 4096
    /// Most bytes one read, write or listing moves; a longer request is served short, as Linux
    /// serves reads past MAX_RW_COUNT.
    public static let transferLimit = 1 << 22
    public static let defaultOpenFiles = 256

    public let path: String
    public let readOnly: Bool
    public let maxOpenFiles: Int
    private let root: Int32
    private let table = Locked(Table())

    /// Guest-visible open flags (Linux x86-64 values): access mode, O_CREAT, O_EXCL, O_NOCTTY,
    /// O_TRUNC, O_APPEND, O_NONBLOCK, O_DSYNC, O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC, O_SYNC.
    public static let acceptedOpenFlags: UInt64 = 0o3 | 0o100 | 0o200 | 0o400 | 0o1000 | 0o2000 | 0o4000 | 0o10000
        | 0o200000 | 0o400000 | 0o2000000 | 0o4000000
    /// How every path is resolved: beneath the root, no /proc magic links, no other mounts.
    static let resolve: UInt64 = 0x08 | 0x02 | 0x01 // RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV

    public init(path: String, readOnly: Bool, maxOpenFiles: Int = ShareDirectory.defaultOpenFiles) throws(ShareSetupError) {
        let fd = Glibc.open(path, Self.pathOnly | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ShareSetupError(description: "--share \(path): \(String(cString: strerror(errno)))")
        }
        // openat2 is Linux 5.6: without it every path would fail, so say so now.
        let probe = chost_openat2(fd, ".", UInt64(Self.pathOnly | O_CLOEXEC), 0, Self.resolve)
        guard probe >= 0 else {
            Glibc.close(fd)
            throw ShareDirectory.setupError(path, -probe, hint: probe == -ENOSYS ? " (openat2 needs Linux 5.6)" : "")
        }
        Glibc.close(probe)
        (self.path, self.readOnly, self.maxOpenFiles, root) = (path, readOnly, max(1, maxOpenFiles), fd)
    }

    private static func setupError(_ path: String, _ code: Int32, hint: String) -> ShareSetupError {
        ShareSetupError(description: "--share \(path): \(String(cString: strerror(code)))\(hint)")
    }

    deinit { Glibc.close(root) }

    /// Descriptors the guest holds open now.
    public var openFiles: Int { table.withLock { $0.files.count } }

    // MARK: files

    public func open(_ path: [UInt8], flags: UInt64, mode: UInt64) -> Int64 {
        guard flags & ~Self.acceptedOpenFlags == 0, flags & 3 != 3 else { return -Int64(EINVAL) }
        let create = flags & 0o100 != 0, noFollow = flags & 0o400000 != 0
        if readOnly && (flags & 3 != 0 || flags & (0o100 | 0o1000 | 0o2000) != 0) { return -Int64(EROFS) }
        let relative: [UInt8]
        switch resolved(path) { case .success(let value): relative = value; case .failure(let failure): return failure.result }
        // The type of what is there, looked at without opening it: opening a device node or a
        // FIFO can block or have effects, and the share serves files and directories only.
        let probe = openat2(relative, flags: Self.pathOnly | (noFollow ? O_NOFOLLOW : 0))
        if probe >= 0 {
            let status = Self.status(of: probe)
            Glibc.close(probe)
            guard let status else { return -Int64(EIO) }
            if status.mode & UInt32(S_IFMT) == UInt32(S_IFLNK) { return -Int64(ELOOP) }
            guard status.isRegular || status.isDirectory else { return -Int64(ENXIO) }
        } else if probe != -ENOENT || !create {
            return Int64(probe)
        }
        let passed = Int32(truncatingIfNeeded: flags & ~UInt64(0o400 | 0o2000000 | 0o4000))
        let fd = openat2(relative, flags: passed | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode: mode & 0o777)
        guard fd >= 0 else { return Int64(fd) }
        guard let status = Self.status(of: fd), status.isRegular || status.isDirectory else {
            Glibc.close(fd)
            return -Int64(ENXIO)
        }
        let file = OpenFile(fd: fd, isDirectory: status.isDirectory)
        return table.withLock { table in
            for number in Self.firstDescriptor ..< Self.firstDescriptor + maxOpenFiles where table.files[number] == nil {
                table.files[number] = file
                return Int64(number)
            }
            return -Int64(EMFILE) // `file` closes its descriptor as it goes
        }
    }

    public func close(_ descriptor: UInt64) -> Int64 {
        let file: OpenFile? = table.withLock { table in
            guard let number = Self.number(descriptor) else { return nil }
            return table.files.removeValue(forKey: number)
        }
        return file == nil ? -Int64(EBADF) : 0
    }

    /// read, or pread at `offset`, into `buffer` (guest RAM the device checked).
    /// Safe: `buffer` comes from GuestMemory.withRAM, which checked it lies inside one live guest
    /// mapping for the length given; the kernel writes at most `buffer.count` bytes into it.
    public func read(_ descriptor: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64? = nil) -> Int64 {
        guard let file = file(descriptor) else { return -Int64(EBADF) }
        guard !file.isDirectory else { return -Int64(EISDIR) }
        if let offset, offset < 0 { return -Int64(EINVAL) }
        return Self.retrying {
            offset.map { pread(file.fd, buffer.baseAddress, buffer.count, off_t($0)) } ?? Glibc.read(file.fd, buffer.baseAddress, buffer.count)
        }
    }

    /// write, or pwrite at `offset`, from `buffer` (guest RAM the device checked).
    /// Safe as `read`: the kernel reads at most `buffer.count` bytes of a checked guest range.
    public func write(_ descriptor: UInt64, from buffer: UnsafeRawBufferPointer, at offset: Int64? = nil) -> Int64 {
        guard let file = file(descriptor) else { return -Int64(EBADF) }
        if readOnly { return -Int64(EROFS) }
        guard !file.isDirectory else { return -Int64(EISDIR) }
        if let offset, offset < 0 { return -Int64(EINVAL) }
        return Self.retrying {
            offset.map { pwrite(file.fd, buffer.baseAddress, buffer.count, off_t($0)) } ?? Glibc.write(file.fd, buffer.baseAddress, buffer.count)
        }
    }

    public func seek(_ descriptor: UInt64, offset: Int64, whence: UInt64) -> Int64 {
        guard let file = file(descriptor) else { return -Int64(EBADF) }
        guard whence <= 4 else { return -Int64(EINVAL) } // SEEK_SET, CUR, END, DATA, HOLE
        let position = lseek(file.fd, off_t(offset), Int32(whence))
        return position < 0 ? -Int64(errno) : Int64(position)
    }

    public func status(_ descriptor: UInt64) -> Result<Status, Failure> {
        guard let file = file(descriptor) else { return .failure(Failure(result: -Int64(EBADF))) }
        return Self.status(of: file.fd).map { .success($0) } ?? .failure(Failure(result: -Int64(errno)))
    }

    /// stat: follows a final symbolic link, as stat(2) does, but only to somewhere beneath the root.
    public func status(path: [UInt8]) -> Result<Status, Failure> {
        let relative: [UInt8]
        switch resolved(path) { case .success(let value): relative = value; case .failure(let failure): return .failure(failure) }
        let fd = openat2(relative, flags: Self.pathOnly)
        guard fd >= 0 else { return .failure(Failure(result: Int64(fd))) }
        defer { Glibc.close(fd) }
        return Self.status(of: fd).map { .success($0) } ?? .failure(Failure(result: -Int64(EIO)))
    }

    public func sync(_ descriptor: UInt64) -> Int64 {
        guard let file = file(descriptor) else { return -Int64(EBADF) }
        return fsync(file.fd) == 0 ? 0 : -Int64(errno)
    }

    /// getdents64 into `buffer`: linux_dirent64 records of an open directory.
    /// Safe as `read`: the kernel fills at most `buffer.count` bytes of a checked guest range.
    public func listDirectory(_ descriptor: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int64 {
        guard let file = file(descriptor) else { return -Int64(EBADF) }
        guard file.isDirectory else { return -Int64(ENOTDIR) }
        return Int64(chost_getdents64(file.fd, buffer.baseAddress, UInt(buffer.count)))
    }

    // MARK: names

    public func unlink(_ path: [UInt8]) -> Int64 {
        changing(path) { directory, name in unlinkat(directory, name, 0) }
    }

    public func makeDirectory(_ path: [UInt8], mode: UInt64) -> Int64 {
        changing(path) { directory, name in mkdirat(directory, name, mode_t(mode & 0o777)) }
    }

    public func removeDirectory(_ path: [UInt8]) -> Int64 {
        changing(path) { directory, name in unlinkat(directory, name, AT_REMOVEDIR) }
    }

    public func rename(_ old: [UInt8], to new: [UInt8]) -> Int64 {
        changing(old) { oldDirectory, oldName in
            let result = changing(new) { newDirectory, newName in renameat(oldDirectory, oldName, newDirectory, newName) }
            if result < 0 { errno = Int32(-result) }
            return result < 0 ? -1 : 0
        }
    }

    /// The guest's working directory, "/" being the share's root.
    public func workingDirectory() -> [UInt8] {
        table.withLock { table in [UInt8(ascii: "/")] + Array(table.directory.joined(separator: [UInt8(ascii: "/")])) }
    }

    public func changeDirectory(_ path: [UInt8]) -> Int64 {
        let relative: [UInt8]
        switch resolved(path) { case .success(let value): relative = value; case .failure(let failure): return failure.result }
        let fd = openat2(relative, flags: Self.pathOnly | O_DIRECTORY)
        guard fd >= 0 else { return Int64(fd) }
        Glibc.close(fd)
        // The kernel found a directory beneath the root; the name kept is the lexical one (a
        // symbolic link followed by ".." names the link's parent, as a shell's `cd` does).
        var components: [[UInt8]] = []
        for component in relative.split(separator: UInt8(ascii: "/")) where component != [UInt8(ascii: ".")] {
            if component == [UInt8(ascii: "."), UInt8(ascii: ".")] { _ = components.popLast() } else { components.append(Array(component)) }
        }
        table.withLock { $0.directory = components }
        return 0
    }

    // MARK: resolution

    /// The path the kernel resolves beneath the root for the guest's `path`: an absolute path
    /// from the share's root, a relative one from the guest's working directory.
    func resolved(_ path: [UInt8]) -> Result<[UInt8], Failure> {
        guard !path.isEmpty else { return .failure(Failure(result: -Int64(ENOENT))) }
        let slash = UInt8(ascii: "/")
        var relative: [UInt8]
        if path[0] == slash {
            relative = Array(path.drop { $0 == slash })
        } else {
            let directory = table.withLock { $0.directory }
            relative = directory.isEmpty ? path : Array(directory.joined(separator: [slash])) + [slash] + path
        }
        if relative.isEmpty { relative = [UInt8(ascii: ".")] }
        guard relative.count < Self.pathLimit else { return .failure(Failure(result: -Int64(ENAMETOOLONG))) }
        return .success(relative)
    }

    /// Runs a call on the last component of `path` in its parent directory, the parent resolved
    /// beneath the root: unlinkat, mkdirat and renameat never follow a final symbolic link, so
    /// nothing outside the share can be named through one.
    private func changing(_ path: [UInt8], _ body: (Int32, UnsafePointer<CChar>) -> Int32) -> Int64 {
        if readOnly { return -Int64(EROFS) }
        var relative: [UInt8]
        switch resolved(path) { case .success(let value): relative = value; case .failure(let failure): return failure.result }
        let slash = UInt8(ascii: "/")
        while relative.count > 1, relative.last == slash { relative.removeLast() }
        let split = relative.lastIndex(of: slash)
        let name = Array(split.map { relative[($0 + 1)...] } ?? relative[...])
        let parent = split.map { $0 == 0 ? [slash] : Array(relative[..<$0]) } ?? [UInt8(ascii: ".")]
        guard !name.isEmpty, name != [UInt8(ascii: ".")], name != [UInt8(ascii: "."), UInt8(ascii: ".")] else { return -Int64(EINVAL) }
        let directory = openat2(parent, flags: Self.pathOnly | O_DIRECTORY)
        guard directory >= 0 else { return Int64(directory) }
        defer { Glibc.close(directory) }
        // Safe: the NUL-terminated copy of the name outlives the call that reads it.
        let result = (name + [0]).withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { body(directory, $0.baseAddress!) }
        }
        return result == 0 ? 0 : -Int64(errno)
    }

    /// openat2 beneath the root; the descriptor or -errno. Safe: the NUL-terminated copy of the
    /// path outlives the call that reads it.
    private func openat2(_ relative: [UInt8], flags: Int32, mode: UInt64 = 0) -> Int32 {
        (relative + [0]).withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { name in
                chost_openat2(root, name.baseAddress, UInt64(UInt32(bitPattern: flags | O_CLOEXEC)), mode, Self.resolve)
            }
        }
    }

    private func file(_ descriptor: UInt64) -> OpenFile? {
        guard let number = Self.number(descriptor) else { return nil }
        return table.withLock { $0.files[number] }
    }

    private static func number(_ descriptor: UInt64) -> Int? {
        descriptor <= UInt64(Int32.max) ? Int(descriptor) : nil
    }

    private static func status(of fd: Int32) -> Status? {
        var host = stat()
        return fstat(fd, &host) == 0 ? Status(host) : nil
    }

    /// A transfer call, retried when a signal (a vCPU kick) interrupts it: bytes or -errno.
    private static func retrying(_ call: () -> Int) -> Int64 {
        while true {
            let result = call()
            if result >= 0 { return Int64(result) }
            if errno != EINTR { return -Int64(errno) }
        }
    }
}
