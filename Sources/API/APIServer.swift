import Host
import NIOCore
import NIOHTTP1
import NIOPosix
import Sandbox
import Synchronization
import VMM

/// The HTTP/1.1 API on a Unix socket (`--api-sock PATH`): SwiftNIO frames requests (keep-alive,
/// pipelining), `APIHTTPHandler` bounds them and hands each to the one worker thread, which runs
/// the router, so no request ever runs on a vCPU thread or blocks the event loop. The socket is
/// created with mode 0600, refuses to replace a file that is no socket or a socket another process
/// serves, and is removed by `shutdown()`.
public final class APIServer: Sendable {
    /// A request body larger than this is refused (413) and the connection closed.
    public static let maximumBody = 64 * 1024
    /// Clients connected at once; one more is closed at accept.
    public static let maximumClients = 128
    /// A connection that sends nothing for this long (even mid-request) is closed.
    public static let idleSeconds: Int64 = 30
    /// Requests waiting for the worker; beyond this a request gets 503.
    static let maximumQueued = 1024

    let path: String
    private let router: any APIHandler
    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let worker: APIWorker

    /// Listens on `path` and serves `router` until `shutdown()`.
    public init(path: String, router: any APIHandler) throws(VMMError) {
        let endpoint: SocketEndpoint
        do { endpoint = try SocketEndpoint(parsing: "unix:" + path) } catch { throw .invalidConfig("--api-sock: \(error)") }
        let fd = try VMMError.host { () throws(HostError) in try endpoint.listen(for: "API socket", backlog: 128) }
        self.path = path
        self.router = router
        let worker: APIWorker
        do { worker = try APIWorker(router: router) } catch {
            close(fd)
            unlink(path)
            throw .host(error)
        }
        self.worker = worker
        // One event loop thread. It inherits the filter of the thread that creates it, then adds
        // the `api` allow-list as its first task.
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let sandboxed: Bool = (try? loop.submit { try Seccomp.enter(.api) }.wait()) != nil
        let clients = ClientCount()
        let bootstrap = ServerBootstrap(group: group)
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            .childChannelInitializer { [worker] channel in
                guard clients.admit(limit: Self.maximumClients) else { return channel.close() }
                channel.closeFuture.whenComplete { _ in clients.leave() }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    // Parse errors reach APIHTTPHandler, which answers them with a fault message.
                    try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: false)
                    try pipeline.addHandler(IdleStateHandler(readTimeout: .seconds(Self.idleSeconds)))
                    try pipeline.addHandler(APIHTTPHandler(worker: worker))
                }
            }
        do {
            guard sandboxed else { throw VMMError.socket("the API thread could not enter its seccomp filter") }
            channel = try bootstrap.withBoundSocket(fd).wait()
        } catch {
            close(fd)
            unlink(path)
            try? group.syncShutdownGracefully()
            worker.stop()
            throw .socket("API socket \(path): \(error)")
        }
    }

    /// Stops accepting, closes every connection, stops the threads and removes the socket file.
    /// The worker stops first: the request it runs replies on an event loop still there.
    public func shutdown() {
        worker.stop()
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
        router.shutdown()
        unlink(path)
    }
}

/// The thread that runs requests one at a time, in arrival order, and hands each reply back to
/// its connection's event loop.
final class APIWorker: @unchecked Sendable {
    // @unchecked: `jobs` is only touched with `service.lock` held.
    typealias Job = (request: APIRequest, reply: @Sendable (APIResponse) -> Void)
    private let router: any APIHandler
    private let service = ServiceThread()
    private var jobs: [Job] = []

    init(router: any APIHandler) throws(HostError) {
        self.router = router
        try service.start(.api, name: "api-worker") { [self] in serve() }
    }

    /// Queues a request; false when the queue is full (the caller answers 503).
    func submit(_ request: APIRequest, reply: @escaping @Sendable (APIResponse) -> Void) -> Bool {
        service.lock.withLock {
            guard jobs.count < APIServer.maximumQueued, !service.stopRequested else { return false }
            jobs.append((request, reply))
            service.lock.broadcast()
            return true
        }
    }

    /// Ends the thread once the request it runs (if any) is done; queued ones are dropped.
    func stop() { service.stop() }

    private func serve() {
        while let job = next() { job.reply(router.handle(job.request)) }
    }

    /// The oldest queued request, waiting for one; nil once stopping.
    private func next() -> Job? {
        service.lock.withLock {
            while jobs.isEmpty && !service.stopRequested { service.lock.wait() }
            return service.stopRequested ? nil : jobs.removeFirst()
        }
    }
}

/// Connections open at once, counted at accept and close.
final class ClientCount: Sendable {
    private let value = Atomic<Int>(0)

    /// Counts one more; false (and not counted) when `limit` are open already.
    func admit(limit: Int) -> Bool {
        guard value.add(1, ordering: .relaxed).newValue <= limit else {
            value.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func leave() { value.subtract(1, ordering: .relaxed) }
}

/// One connection: collects a request (head and a bounded body), queues it for the worker, and
/// writes the reply in order (NIO's pipelining handler holds the next request until then).
final class APIHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let worker: APIWorker
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var refused = false

    init(worker: APIWorker) {
        self.worker = worker
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = []
            refused = false
            if let length = requestHead.headers.first(name: "content-length").flatMap(Int.init), length > APIServer.maximumBody {
                refuse(context, status: 413, "the body is larger than \(APIServer.maximumBody) bytes")
            }
        case .body(var buffer):
            guard !refused else { return }
            guard body.count + buffer.readableBytes <= APIServer.maximumBody else {
                refuse(context, status: 413, "the body is larger than \(APIServer.maximumBody) bytes")
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard !refused, let head else { return }
            self.head = nil
            let request = APIRequest(method: head.method.rawValue, path: head.uri, body: body)
            body = []
            let keepAlive = head.isKeepAlive, version = head.version
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let queued = worker.submit(request) { response in
                bound.eventLoop.execute {
                    handler.value.write(response, version: version, keepAlive: keepAlive, context: bound.value)
                }
            }
            if !queued {
                write(.failure(APIFailure(status: 503, message: "the API is busy; try again")), version: version, keepAlive: false, context: context)
            }
        }
    }

    /// Closes connections idle for `APIServer.idleSeconds` (a client that sent half a request
    /// and went silent included).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Bytes that are no HTTP/1.1 get one 400 with a fault message, then the connection closes.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError, !refused else {
            context.close(promise: nil)
            return
        }
        refuse(context, status: 400, "malformed HTTP request")
    }

    private func refuse(_ context: ChannelHandlerContext, status: Int, _ message: String) {
        refused = true
        write(.failure(APIFailure(status: status, message: message)), version: head?.version ?? .http1_1, keepAlive: false, context: context)
    }

    private func write(_ response: APIResponse, version: HTTPVersion, keepAlive: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        if !response.body.isEmpty { headers.add(name: "Content-Type", value: response.contentType) }
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Server", value: "swiftvmm/\(VMM.version)")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.whenComplete { _ in bound.value.close(promise: nil) }
        }
    }
}
