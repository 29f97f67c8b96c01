import FoundationEssentials

/// A request body's JSON, decoded strictly as Firecracker's API does: a field the type does not
/// know, a value of the wrong type, a missing required field or a body that is no JSON object are
/// errors whose text names the field. Bodies are at most `APIServer.maximumBody` bytes.
enum StrictJSON {
    static func decode<T: Decodable>(_ type: T.Type, from body: [UInt8]) throws(APIFailure) -> T {
        guard !body.isEmpty else { throw .badRequest("the request needs a JSON body") }
        do {
            return try JSONDecoder().decode(T.self, from: Data(body))
        } catch let error as APIFailure {
            throw error
        } catch let error as DecodingError {
            throw .badRequest(describe(error))
        } catch {
            throw .badRequest("the body is not valid JSON")
        }
    }

    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? Array(encoder.encode(value))) ?? Array("{}".utf8)
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let names = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return names.isEmpty ? "the body" : "'" + names.joined(separator: ".") + "'"
        }
        switch error {
        case .keyNotFound(let key, let context):
            let field = (context.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
            return "missing field '\(field)'"
        case .typeMismatch(let type, let context):
            return "\(path(context)) must be \(typeName(type))"
        case .valueNotFound(let type, let context):
            return "\(path(context)) must be \(typeName(type)), not null"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "the body is not valid JSON (or a number in it is out of range)" : "\(path(context)) is invalid"
        @unknown default:
            return "the body does not match the request's schema"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is Bool.Type: return "a boolean"
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type, is UInt64.Type, is UInt32.Type, is Int32.Type: return "an integer"
        case is Double.Type: return "a number"
        default: return "an object"
        }
    }
}

/// Any key, for listing what a JSON object holds (here, and in `swiftvmm control`'s replies).
public struct AnyCodingKey: CodingKey {
    public let stringValue: String
    public var intValue: Int? { nil }
    public init(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { nil }
}

extension Decoder {
    /// Throws when the object holds a key `Keys` does not name (Firecracker refuses those too).
    func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_ keys: Keys.Type) throws {
        let container = try container(keyedBy: AnyCodingKey.self)
        let known = Set(Keys.allCases.map(\.stringValue))
        if let unknown = container.allKeys.first(where: { !known.contains($0.stringValue) }) {
            let prefix = codingPath.map(\.stringValue).joined(separator: ".")
            throw APIFailure.badRequest("unknown field '\(prefix.isEmpty ? "" : prefix + ".")\(unknown.stringValue)'")
        }
    }
}

/// Why a request failed: its HTTP status and Firecracker's `fault_message`.
public struct APIFailure: Error, Sendable, Equatable {
    public let status: Int
    public let message: String

    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }

    public static func badRequest(_ message: String) -> APIFailure { APIFailure(status: 400, message: message) }
    public static func notFound(_ message: String) -> APIFailure { APIFailure(status: 404, message: message) }
    public static func methodNotAllowed(_ message: String) -> APIFailure { APIFailure(status: 405, message: message) }
    public static func internalError(_ message: String) -> APIFailure { APIFailure(status: 500, message: message) }
}
