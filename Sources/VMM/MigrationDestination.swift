import Boot
import Glibc
import Host
import KVM
import Logging
import VMMCore

/// The incoming side of a live migration (`swiftvmm run --incoming ENDPOINT`): accepts one
/// connection, checks the machine the source describes against this host before any memory
/// moves, fills guest RAM from the stream, then builds the machine from the state that ends it.
/// Everything read is checked first (addresses and lengths inside RAM, message order, the state's
/// checksums); a source that dies, goes silent or sends nonsense leaves nothing behind.
public enum MigrationDestination {
    /// The machine, built and ready to run; the source has been told it starts.
    public static func receive(on endpoint: SocketEndpoint, runtime: VMConfig, logger: Logger) throws(VMMError) -> Machine {
        let listener: Int32
        do { listener = try endpoint.listen(for: "migration") } catch { throw .host(error) }
        logger.notice("waiting for an incoming migration on \(endpoint)")
        let connection: FileDescriptor
        do { connection = try FileDescriptor(rawValue: listener).accept() } catch {
            close(listener)
            throw .migration(.link("accept: \(error)"))
        }
        close(listener) // one migration per process
        if case .unix(let path) = endpoint { unlink(path) }
        defer { connection.close() }
        let stream = MigrationStream(fd: connection)
        do throws(MigrationError) {
            return try receive(stream, runtime: runtime, logger: logger)
        } catch {
            throw .migration(error)
        }
    }

    static func receive(_ stream: MigrationStream, runtime: VMConfig, logger: Logger) throws(MigrationError) -> Machine {
        let hello = try stream.receive()
        guard hello.kind == .hello else { throw .protocolViolation("the stream must begin with the machine's description") }
        let shape = try MigrationStream.parseHello(hello.payload)
        let config: SnapshotConfig
        do {
            let kvm = try KVMSystem(path: runtime.kvmDevice)
            config = try MachineSnapshot.Loaded.checkShape(shape, kvm: kvm)
        } catch {
            let why = (error as? VMMError)?.description ?? "\(error)"
            try? stream.send(.refuse, text: why)
            throw .incompatible(why)
        }
        let memory: GuestMemory
        do {
            memory = try GuestMemory(ranges: Layout.ramRanges(size: config.memorySize).map { ($0.start, Int($0.size)) },
                                     hugePages: runtime.hugePages, mergeable: runtime.pageSharing)
        } catch {
            try? stream.send(.refuse, text: "guest memory: \(error)")
            throw .incompatible("guest memory: \(error)")
        }
        try stream.send(.accept)
        let start = Clocks.monotonicNanoseconds()
        var pages: UInt64 = 0
        while true {
            let message = try stream.receive()
            switch message.kind {
            case .pages:
                pages += try storePages(message.payload, into: memory)
            case .zeros:
                try zeroPages(message.payload, in: memory)
            case .abort:
                throw .link("the source gave up: \(String(decoding: message.payload.prefix(4096), as: UTF8.self))")
            case .state:
                let machine: Machine
                do {
                    let state = try SnapshotFile(decoding: message.payload)
                    machine = try Machine(migrated: state, memory: memory, runtime: config.applied(to: runtime), logger: logger)
                } catch {
                    let why = (error as? VMMError)?.description ?? "the state: \(error)"
                    try? stream.send(.failed, text: why)
                    throw .destinationFailed(why)
                }
                try stream.send(.started)
                logger.notice("migration received: \(pages) pages in \(formatOneDecimal(Double(Clocks.monotonicNanoseconds() - start) / 1e6)) ms; the VM runs here now")
                return machine
            default:
                throw .protocolViolation("message \(message.kind) during the copy")
            }
        }
    }

    /// A `pages` message: u64 address, then whole pages, all inside one RAM region.
    static func storePages(_ payload: [UInt8], into memory: GuestMemory) throws(MigrationError) -> UInt64 {
        guard payload.count > 8, (payload.count - 8) % MigrationStream.pageSize == 0 else {
            throw .protocolViolation("a pages message of \(payload.count) bytes")
        }
        let address = LittleEndian.load(payload, at: 0)
        let length = payload.count - 8
        guard address % UInt64(MigrationStream.pageSize) == 0, memory.contains(address, length: length) else {
            throw .protocolViolation("pages at 0x\(hex(address)) (+\(length)) are not guest RAM")
        }
        do { try memory.write(payload[8...], at: address) } catch { throw .protocolViolation("\(error)") }
        return UInt64(length / MigrationStream.pageSize)
    }

    /// A `zeros` message: u64 address, u64 page count, inside one RAM region.
    static func zeroPages(_ payload: [UInt8], in memory: GuestMemory) throws(MigrationError) {
        guard payload.count == 16 else { throw .protocolViolation("a zeros message of \(payload.count) bytes") }
        let address = LittleEndian.load(payload, at: 0), count = LittleEndian.load(payload, at: 8)
        let (bytes, overflow) = count.multipliedReportingOverflow(by: UInt64(MigrationStream.pageSize))
        guard !overflow, bytes <= UInt64(memory.totalSize), address % UInt64(MigrationStream.pageSize) == 0,
              memory.contains(address, length: Int(bytes)) else {
            throw .protocolViolation("zero pages at 0x\(hex(address)) (\(count) pages) are not guest RAM")
        }
        do { try memory.discard(address, length: Int(bytes)) } catch { throw .protocolViolation("\(error)") }
    }
}
