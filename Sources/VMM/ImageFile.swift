import Boot
import Glibc
import Host
import Loaders

/// Reading an image, initrd, module or config file a user named.
public enum ImageFile {
    /// The whole file, with a distinct error for missing, unreadable, directory and empty. Its
    /// size is checked before anything is read: /dev/zero's kind of input never gets here, and
    /// a file larger than where it goes is refused at once.
    public static func read(_ path: String, limit: UInt64 = Layout.maximumRAM) throws(VMMError) -> [UInt8] {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; the file's type is then checked
        // on the descriptor itself, so what is read is what was checked.
        let raw = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard raw >= 0 else { throw .imageUnreadable(path: path, reason: Errno.current.description) }
        let fd = FileDescriptor(rawValue: raw)
        defer { fd.close() }
        var info = stat()
        guard fstat(raw, &info) == 0 else { throw .imageUnreadable(path: path, reason: Errno.current.description) }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw .imageUnreadable(path: path, reason: "is a directory")
        default: throw .imageUnreadable(path: path, reason: "is not a regular file")
        }
        let size = UInt64(max(0, info.st_size))
        guard size <= limit else { throw .image(path: path, .tooLarge(size: Int(clamping: size), room: limit)) }
        guard size > 0 else { throw .image(path: path, .empty) }
        let bytes: [UInt8]
        do { bytes = try fd.readAll(count: Int(size)) } catch { throw .imageUnreadable(path: path, reason: error.description) }
        guard bytes.count == Int(size) else { throw .imageUnreadable(path: path, reason: "shrank while it was read") }
        return bytes
    }
}
