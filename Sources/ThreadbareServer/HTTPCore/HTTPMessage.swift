import CLibevent

/// The request methods evhttp recognises. evhttp passes others on as unknown, and the loop
/// answers them 501.
public enum HTTPMethod: String, Sendable, CaseIterable {
    case get = "GET", head = "HEAD", post = "POST", put = "PUT", delete = "DELETE"
    case options = "OPTIONS", trace = "TRACE", connect = "CONNECT", patch = "PATCH"

    init?(_ command: evhttp_cmd_type) {
        switch command {
        case EVHTTP_REQ_GET: self = .get
        case EVHTTP_REQ_HEAD: self = .head
        case EVHTTP_REQ_POST: self = .post
        case EVHTTP_REQ_PUT: self = .put
        case EVHTTP_REQ_DELETE: self = .delete
        case EVHTTP_REQ_OPTIONS: self = .options
        case EVHTTP_REQ_TRACE: self = .trace
        case EVHTTP_REQ_CONNECT: self = .connect
        case EVHTTP_REQ_PATCH: self = .patch
        default: return nil
        }
    }

    /// Every bit: the methods evhttp knows, so the application (not libevent) answers the ones a
    /// route lacks with 405, and the type evhttp gives a method it does not know, so the
    /// application answers that with its own 501 instead of libevent's HTML page.
    static let evhttpMask = UInt16.max
}

/// A parsed request, copied out of libevent so any thread may read it.
public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    /// The decoded-as-sent path, without the query.
    public var path: String
    /// The raw query string (after `?`), if any.
    public var query: String?
    public var contentType: String?
    /// The Authorization header, read only when the service asks for it.
    public var authorization: String?
    public var body: [UInt8]
    /// When the loop thread finished reading the request (MonotonicClock).
    public var receivedAt: UInt64
    /// The client connection's number: connections are numbered in the order the loops first
    /// see them, so a service can keep a connection with one worker and let connections take
    /// turns.
    public var connection: Int

    public init(
        method: HTTPMethod, path: String, query: String? = nil, contentType: String? = nil, authorization: String? = nil,
        body: [UInt8] = [], receivedAt: UInt64 = 0, connection: Int = 0
    ) {
        self.connection = connection
        self.authorization = authorization
        self.method = method
        self.path = path
        self.query = query
        self.contentType = contentType
        self.body = body
        self.receivedAt = receivedAt
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    public var headers: [(name: String, value: String)]

    public init(status: Int, contentType: String, body: [UInt8], headers: [(name: String, value: String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    public static func text(_ text: String, status: Int = 200) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8))
    }
}

/// The W3C Server-Timing metrics of one request, in nanoseconds.
public struct ServerTiming: Sendable {
    /// From the loop handing the request over to a handler starting it.
    public var queue: UInt64 = 0
    /// Handler time.
    public var app: UInt64 = 0
    /// Of the handler time, how long the request waited for its interpreter lock, over all its
    /// acquisitions.
    public var lock: UInt64 = 0
    /// How long the request waited for its loop thread to be free: behind the handlers that
    /// ran before it in the same turn of the loop, over every turn it ran in.
    public var loop: UInt64 = 0

    public init(queue: UInt64 = 0, app: UInt64 = 0, lock: UInt64 = 0, loop: UInt64 = 0) {
        self.queue = queue
        self.app = app
        self.lock = lock
        self.loop = loop
    }

    /// `queue;dur=0.012, lock;dur=0.000, app;dur=1.250, loop;dur=0.004`: milliseconds with microsecond resolution, formatted
    /// into a stack buffer because this runs for every response.
    func withHeaderValue<R>(_ body: (UnsafePointer<CChar>) -> R) -> R {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 128) { buffer in
            var count = 0
            func append(_ text: StaticString) {
                text.withUTF8Buffer { for byte in $0 { buffer[count] = CChar(bitPattern: byte); count += 1 } }
            }
            func appendMilliseconds(_ nanos: UInt64) {
                let micros = nanos / 1_000
                var whole = micros / 1_000
                var length = 1
                while whole >= 10 { length += 1; whole /= 10 }
                whole = micros / 1_000
                for position in stride(from: count + length - 1, through: count, by: -1) {
                    buffer[position] = CChar(48 + Int(whole % 10))
                    whole /= 10
                }
                count += length
                let fraction = Int(micros % 1_000)
                buffer[count] = CChar(UInt8(ascii: "."))
                buffer[count + 1] = CChar(48 + fraction / 100)
                buffer[count + 2] = CChar(48 + fraction / 10 % 10)
                buffer[count + 3] = CChar(48 + fraction % 10)
                count += 4
            }
            append("queue;dur=")
            appendMilliseconds(queue)
            append(", lock;dur=")
            appendMilliseconds(lock)
            append(", app;dur=")
            appendMilliseconds(app)
            append(", loop;dur=")
            appendMilliseconds(loop)
            buffer[count] = 0
            return body(buffer.baseAddress!)
        }
    }

    var headerValue: String { withHeaderValue { String(cString: $0) } }
}
