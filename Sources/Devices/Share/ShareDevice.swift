import Glibc
import VMMCore

/// The hypercall device of `--share`: decodes a parameter block from guest RAM, checks every
/// buffer and string it names against RAM (EFAULT otherwise), caps lengths, and serves the call
/// from the share. Calls run on the vCPU thread that rang the doorbell, without a device lock
/// (the share's descriptor table locks only to look a descriptor up).
public final class ShareDevice: Sendable {
    public let share: ShareDirectory
    public let statistics = HypercallStatistics()
    let memory: GuestMemory
    let clock: any MonotonicClock
    let wallClock: any WallClock

    /// The doorbell ports (CPL 0) and the MMIO window (CPL 3), each a bus device of its own.
    public var ports: any BusDevice { PortDoorbells(device: self) }
    public var window: any BusDevice { MMIOWindow(device: self) }

    public init(share: ShareDirectory, memory: GuestMemory, clock: any MonotonicClock = SystemMonotonicClock(),
                wallClock: any WallClock = SystemWallClock()) {
        (self.share, self.memory, self.clock, self.wallClock) = (share, memory, clock, wallClock)
    }

    /// Serves call `number` with the parameter block at `block`.
    public func ring(_ number: UInt64, block: UInt64) {
        guard number <= UInt64(UInt8.max), let call = Hypercall(rawValue: UInt8(number)) else {
            statistics.recordUnknownCall()
            try? memory.store(UInt64(bitPattern: -Int64(ENOSYS)), at: block)
            return
        }
        guard memory.contains(block, length: Hypercall.blockSize) else {
            statistics.recordBadBlock() // nowhere to put an answer
            return
        }
        let start = clock.nanoseconds()
        let arguments = (1...4).map { (try? memory.load(UInt64.self, at: block &+ UInt64($0 * 8))) ?? 0 }
        let result = perform(call, arguments)
        try? memory.store(UInt64(bitPattern: result), at: block)
        statistics.record(call, failed: result < 0, nanoseconds: clock.nanoseconds() &- start)
    }

    func perform(_ call: Hypercall, _ a: [UInt64]) -> Int64 {
        switch call {
        case .open: return withPath(a[0]) { share.open($0, flags: a[1], mode: a[2]) }
        case .close: return share.close(a[0])
        case .read: return buffer(a[1], a[2], filling: true) { share.read(a[0], into: $0) }
        case .pread: return buffer(a[1], a[2], filling: true) { share.read(a[0], into: $0, at: Int64(bitPattern: a[3])) }
        case .write: return buffer(a[1], a[2], filling: false) { share.write(a[0], from: UnsafeRawBufferPointer($0)) }
        case .pwrite: return buffer(a[1], a[2], filling: false) { share.write(a[0], from: UnsafeRawBufferPointer($0), at: Int64(bitPattern: a[3])) }
        case .lseek: return share.seek(a[0], offset: Int64(bitPattern: a[1]), whence: a[2])
        case .fstat: return storeStatus(share.status(a[0]), at: a[1])
        case .stat: return withPath(a[0]) { storeStatus(share.status(path: $0), at: a[1]) }
        case .unlink: return withPath(a[0]) { share.unlink($0) }
        case .mkdir: return withPath(a[0]) { share.makeDirectory($0, mode: a[1]) }
        case .rmdir: return withPath(a[0]) { share.removeDirectory($0) }
        case .rename: return withPath(a[0]) { old in withPath(a[1]) { share.rename(old, to: $0) } }
        case .getcwd:
            let name = share.workingDirectory() + [0]
            guard a[1] >= UInt64(name.count) else { return -Int64(ERANGE) }
            do { try memory.write(name, at: a[0]) } catch { return -Int64(EFAULT) }
            return Int64(name.count)
        case .chdir: return withPath(a[0]) { share.changeDirectory($0) }
        case .getdents: return buffer(a[1], a[2], filling: true) { share.listDirectory(a[0], into: $0) }
        case .fsync: return share.sync(a[0])
        case .clockGettime: return clockTime(a[0], at: a[1])
        }
    }

    /// The NUL-terminated path at `address`: EFAULT when it runs out of RAM before its NUL,
    /// ENAMETOOLONG when it has no NUL in its first PATH_MAX bytes.
    private func withPath(_ address: UInt64, _ body: ([UInt8]) -> Int64) -> Int64 {
        let available = memory.bytesAvailable(from: address)
        guard available > 0 else { return -Int64(EFAULT) }
        guard let bytes = try? memory.read(address, length: min(available, ShareDirectory.pathLimit)) else { return -Int64(EFAULT) }
        guard let end = bytes.firstIndex(of: 0) else {
            return bytes.count < ShareDirectory.pathLimit ? -Int64(EFAULT) : -Int64(ENAMETOOLONG)
        }
        return body(Array(bytes[..<end]))
    }

    /// A buffer the call fills (read, getdents; `filling`) or reads (write): [address, address +
    /// length), the length capped at the share's transfer limit, must lie in one RAM region.
    private func buffer(_ address: UInt64, _ length: UInt64, filling: Bool, _ body: (UnsafeMutableRawBufferPointer) -> Int64) -> Int64 {
        let count = Int(min(length, UInt64(ShareDirectory.transferLimit)))
        if count == 0 { return body(UnsafeMutableRawBufferPointer(start: nil, count: 0)) }
        do { return try memory.withRAM(address, length: count, filling: filling, body) } catch { return -Int64(EFAULT) }
    }

    /// svmm_stat at `address`.
    private func storeStatus(_ status: Result<ShareDirectory.Status, ShareDirectory.Failure>, at address: UInt64) -> Int64 {
        let value: ShareDirectory.Status
        switch status { case .success(let found): value = found; case .failure(let failure): return failure.result }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Hypercall.statSize)
        for field in [value.inode, value.size, value.blocks] { bytes += LittleEndian.bytes(field) }
        for field in [value.mode, value.links, value.user, value.group] { bytes += LittleEndian.bytes(field) }
        for field in [value.accessed, value.modified, value.changed] { bytes += LittleEndian.bytes(field) }
        do { try memory.write(bytes, at: address) } catch { return -Int64(EFAULT) }
        return 0
    }

    /// clock_gettime: CLOCK_REALTIME (0) or CLOCK_MONOTONIC (1) as {int64 sec, int64 nsec}.
    private func clockTime(_ id: UInt64, at address: UInt64) -> Int64 {
        let seconds: Int64, nanoseconds: Int64
        switch id {
        case 0: (seconds, nanoseconds) = wallClock.now()
        case 1:
            let now = clock.nanoseconds()
            (seconds, nanoseconds) = (Int64(now / 1_000_000_000), Int64(now % 1_000_000_000))
        default: return -Int64(EINVAL)
        }
        do { try memory.write(LittleEndian.bytes(seconds) + LittleEndian.bytes(nanoseconds), at: address) } catch { return -Int64(EFAULT) }
        return 0
    }

    /// Port n of the doorbell block rings call n with a 32-bit block address (`outl`); port 0
    /// reads the magic, so a guest can tell the device is there.
    final class PortDoorbells: BusDevice {
        let device: ShareDevice
        init(device: ShareDevice) { self.device = device }

        func read(offset: UInt64, size: Int) -> UInt64 {
            offset == 0 && size == 4 ? UInt64(Hypercall.magic) : Bus.mask(size)
        }

        func write(offset: UInt64, size: Int, value: UInt64) {
            guard size == 4, offset > 0 else { return }
            device.ring(offset, block: value)
        }
    }

    /// The MMIO window: identification registers, then doorbell n at 0x100 + 8 n (a 32- or
    /// 64-bit store of the block's address).
    final class MMIOWindow: BusDevice {
        let device: ShareDevice
        init(device: ShareDevice) { self.device = device }

        func read(offset: UInt64, size: Int) -> UInt64 {
            guard size == 4 else { return Bus.mask(size) }
            switch offset {
            case Hypercall.Window.magic: return UInt64(Hypercall.magic)
            case Hypercall.Window.version: return UInt64(Hypercall.version)
            case Hypercall.Window.flags: return device.share.readOnly ? 1 : 0
            case Hypercall.Window.openFileLimit: return UInt64(device.share.maxOpenFiles)
            default: return 0
            }
        }

        func write(offset: UInt64, size: Int, value: UInt64) {
            guard size == 4 || size == 8, offset >= Hypercall.Window.doorbellOffset else { return }
            let slot = offset - Hypercall.Window.doorbellOffset
            guard slot % 8 == 0 else { return }
            device.ring(slot / 8, block: value)
        }
    }
}
