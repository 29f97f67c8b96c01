import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix

/// One HTTP/1.1 exchange with an API socket (`--api-sock`): SwiftNIO's client codec over a Unix
/// domain socket, the request sent whole, the response read up to its end. Used by `swiftvmm
/// control` and the tests; a server that does not answer within the timeout, a response larger
/// than `maximumBody` or a connection that closes early are errors, never a hang.
public struct APIClient: Sendable {
    public struct Response: Sendable, Equatable {
        public var status: Int
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    public let socketPath: String
    public let timeoutSeconds: Int64
    /// The largest response body accepted (the host mode's Prometheus text is the largest reply).
    public static let maximumBody = 4 << 20

    public init(socketPath: String, timeoutSeconds: Int64 = 10) {
        self.socketPath = socketPath
        self.timeoutSeconds = max(1, min(timeoutSeconds, 3600))
    }

    /// Sends `method path` with `body` (JSON) and waits for the whole response.
    public func send(_ method: HTTPMethod, _ path: String, body: String? = nil) throws(ControlError) -> Response {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let promise = loop.makePromise(of: Response.self)
        let timeout = TimeAmount.seconds(timeoutSeconds)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                }
            }
        let channel: any Channel
        do { channel = try bootstrap.connect(unixDomainSocketPath: socketPath).wait() } catch {
            promise.fail(error)
            throw .unreachable("cannot connect to \(socketPath): \(Self.describe(error))")
        }
        let deadline = loop.scheduleTask(in: timeout) { promise.fail(ControlError.noReply) }
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: "localhost")
        head.headers.add(name: "Accept", value: "application/json")
        head.headers.add(name: "Connection", value: "close")
        let bytes = Array((body ?? "").utf8)
        if body != nil { head.headers.add(name: "Content-Type", value: "application/json") }
        head.headers.add(name: "Content-Length", value: String(bytes.count))
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if !bytes.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: bytes))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        defer {
            deadline.cancel()
            channel.close(promise: nil)
        }
        do { return try promise.futureResult.wait() } catch let error as ControlError {
            throw error == .noReply ? .unreachable("no reply from \(socketPath) within \(timeoutSeconds) s") : error
        } catch {
            throw .unreachable("\(socketPath): \(Self.describe(error))")
        }
    }

    /// An I/O error as the system's own words (`connect: No such file or directory`).
    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return "connect: " + String(cString: strerror(io.errnoCode)) }
        if error is ChannelError { return "the connection closed before a reply" }
        return "\(error)"
    }
}

/// Collects one response: its status and body, bounded.
private final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: the handler lives on its channel's event loop and is touched only there.
    typealias InboundIn = HTTPClientResponsePart
    private let promise: EventLoopPromise<APIClient.Response>
    private var status = 0
    private var body: [UInt8] = []

    init(promise: EventLoopPromise<APIClient.Response>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
        case .body(var buffer):
            guard body.count + buffer.readableBytes <= APIClient.maximumBody else {
                promise.fail(ControlError.unreachable("the reply is larger than \(APIClient.maximumBody) bytes"))
                context.close(promise: nil)
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            promise.succeed(APIClient.Response(status: status, body: body))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ControlError.unreachable("the server closed the connection before replying"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(ControlError.unreachable("the reply is not valid HTTP: \(error)"))
        context.close(promise: nil)
    }
}
