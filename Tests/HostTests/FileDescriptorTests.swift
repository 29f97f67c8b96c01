import Glibc
import Testing
@testable import Host
import VMMCore

/// A pipe's two ends, closed by the test.
func makePipe() -> (read: FileDescriptor, write: FileDescriptor) {
    var ends: [Int32] = [0, 0]
    #expect(pipe(&ends) == 0)
    return (FileDescriptor(rawValue: ends[0]), FileDescriptor(rawValue: ends[1]))
}

@Suite struct FileDescriptorTests {
    @Test func writeAllThenReadAndEndOfFile() throws {
        let (reader, writer) = makePipe()
        defer { reader.close() }
        try writer.writeAll(Array("hello".utf8))
        writer.close()
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(try reader.read(into: &buffer) == 5)
        #expect(Array(buffer[0..<5]) == Array("hello".utf8))
        #expect(try reader.read(into: &buffer) == 0) // end of file
    }

    @Test func readAllFromAnOffsetStopsAtTheEnd() throws {
        let path = "/tmp/swiftvmm-fd-test-\(getpid())"
        let fd = FileDescriptor(rawValue: open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600))
        defer { fd.close(); unlink(path) }
        try fd.writeAll(Array(0..<100))
        #expect(try fd.readAll(count: 10, at: 90) == Array(90..<100))
        #expect(try fd.readAll(count: 50, at: 80) == Array(80..<100)) // fewer: the file ends
        #expect(try fd.readAll(count: 5, at: 200) == [])
    }

    @Test func pollWaitsForDataOrTheTimeout() throws {
        let (reader, writer) = makePipe()
        defer { reader.close(); writer.close() }
        #expect(try reader.poll(.readable, milliseconds: 20).isEmpty)
        #expect(try writer.poll(.writable, milliseconds: 0).contains(.writable))
        try writer.writeAll([1])
        #expect(try reader.poll(.readable, milliseconds: -1).contains(.readable))
    }

    @Test func anEmptyNonBlockingPipeWouldBlock() throws {
        let (reader, writer) = makePipe()
        defer { reader.close(); writer.close() }
        _ = fcntl(reader.rawValue, F_SETFL, O_NONBLOCK)
        var buffer = [UInt8](repeating: 0, count: 4)
        #expect(throws: Errno(EAGAIN)) { try reader.read(into: &buffer) }
        do { _ = try reader.read(into: &buffer) } catch { #expect(error.wouldBlock) }
    }

    @Test func sendingToAClosedPeerIsEPIPENotASignal() throws {
        var ends: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0)
        let (mine, peer) = (FileDescriptor(rawValue: ends[0]), FileDescriptor(rawValue: ends[1]))
        defer { mine.close() }
        peer.close()
        #expect(throws: Errno(EPIPE)) { try mine.writeAll([1, 2, 3], socket: true) }
    }

    @Test func acceptedConnectionsAreCloseOnExec() throws {
        let path = "/tmp/swiftvmm-accept-test-\(getpid())"
        let endpoint = SocketEndpoint.unix(path: path)
        let listener = FileDescriptor(rawValue: try endpoint.listen(for: "test"))
        defer { listener.close(); unlink(path) }
        let client = FileDescriptor(rawValue: try endpoint.connect(for: "test"))
        defer { client.close() }
        let connection = try listener.accept()
        defer { connection.close() }
        #expect(fcntl(connection.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        try client.writeAll(Array("ping".utf8), socket: true)
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(try connection.read(into: &buffer) == 4)
    }
}

@Suite struct SignalWaiterTests {
    /// Signals are sent to the waiter's own thread: a process-directed signal could reach a
    /// thread of the test runner that does not block it.
    @Test func handlerRunsForEachSignalUntilItSaysStop() throws {
        let seen = Locked<[Int32]>([])
        let done = ConditionLock()
        let waiter = try SignalWaiter(name: "test-signals") { signal in
            done.withLock {
                seen.withLock { $0.append(signal) }
                done.broadcast()
            }
            return signal == SIGTERM ? .stop : .keepWaiting
        }
        func waitFor(_ count: Int) {
            let deadline = Clocks.monotonicNanoseconds() + 10_000_000_000
            done.withLock {
                while seen.withLock({ $0.count }) < count && Clocks.monotonicNanoseconds() < deadline { done.wait(until: deadline) }
            }
        }
        waiter.thread.signal(SIGINT)
        waitFor(1)
        waiter.thread.signal(SIGTERM)
        waitFor(2)
        waiter.stop() // the thread has ended by itself; stop only joins it
        #expect(seen.withLock { $0 } == [SIGINT, SIGTERM])
    }

    @Test func stopEndsAWaiterThatGotNoSignal() throws {
        let calls = Locked(0)
        let waiter = try SignalWaiter(name: "test-signals") { _ in calls.withLock { $0 += 1 }; return .keepWaiting }
        waiter.stop() // returns: the wake signal ends the wait without calling the handler
        #expect(calls.withLock { $0 } == 0)
    }
}
