import CLibevent

/// gunicorn's three limits on a request's head (`limit_request_line`, `limit_request_fields`,
/// `limit_request_field_size`, with its defaults), checked on what libevent parsed. libevent
/// knows only a total for the whole head (`HTTPLimits.maxHeaderBytes`) and refuses a head over
/// it with its own 400 page, before any callback; these limits sit below that total, so the
/// client learns which part was too large: 414 for the request line, 431 for the fields.
public struct RequestHeadLimits: Sendable {
    /// `METHOD SP target SP HTTP/1.x`, without the CRLF, as gunicorn counts it.
    public var requestLineBytes = 4094
    public var fields = 100
    /// One field as sent: name, `: `, value and CRLF.
    public var fieldBytes = 8190

    public init(requestLineBytes: Int = 4094, fields: Int = 100, fieldBytes: Int = 8190) {
        self.requestLineBytes = requestLineBytes
        self.fields = fields
        self.fieldBytes = fieldBytes
    }

    /// Why the head breaks a limit, if it does. The message names the limit, never the
    /// client's bytes.
    func violation(of request: UnsafeMutablePointer<evhttp_request>, method: HTTPMethod) -> (status: Int, reason: String)? {
        let lineBytes = method.rawValue.utf8.count + strlen(evhttp_request_get_uri(request)) + " HTTP/1.1".utf8.count + 1
        if lineBytes > requestLineBytes {
            return (414, "the request line is \(lineBytes) bytes; limits.request_line allows \(requestLineBytes)")
        }
        var count = 0
        var field = evhttp_request_get_input_headers(request)?.pointee.tqh_first
        while let header = field {
            count += 1
            if count > fields {
                return (431, "the request has more than \(fields) header fields (limits.request_fields)")
            }
            let bytes = strlen(header.pointee.key) + strlen(header.pointee.value) + 4
            if bytes > fieldBytes {
                return (431, "header field \(count) is \(bytes) bytes; limits.request_field_size allows \(fieldBytes)")
            }
            field = header.pointee.next.tqe_next
        }
        return nil
    }
}
