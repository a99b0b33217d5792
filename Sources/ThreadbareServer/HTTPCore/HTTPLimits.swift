/// The limits every evhttp gets. libevent's own defaults are unlimited sizes and 50 s timeouts.
public struct HTTPLimits: Sendable {
    /// Request line plus headers, in bytes; more is refused with 400 by libevent.
    public var maxHeaderBytes: Int
    /// The limits on the head's parts, below `maxHeaderBytes`.
    public var head: RequestHeadLimits
    /// Request body, in bytes; more is refused with 413 by libevent.
    public var maxBodyBytes: Int
    /// Connections one process keeps open; one more gets 503 to its first request.
    public var maxConnections: Int
    /// False: each response says `Connection: close` and its connection closes once it is sent.
    public var keepAlive: Bool
    /// Connections a loop holds before it stops accepting until one of them closes; nil to
    /// accept while busy (and refuse beyond `maxConnections` instead).
    public var acceptsUpTo: Int?
    /// Seconds a handler thread has to answer before the client gets 504 instead; 0 for none.
    public var requestTimeoutSeconds: Double
    /// Seconds a request has from its first byte (or its connection's opening) to its last; 0
    /// for no limit.
    public var requestReadTimeoutSeconds: Double
    /// Read and write timeout of a connection, idle keep-alive included, in seconds.
    public var timeoutSeconds: Double

    public init(maxHeaderBytes: Int, head: RequestHeadLimits = RequestHeadLimits(), maxBodyBytes: Int, maxConnections: Int = 1000, keepAlive: Bool = true, acceptsUpTo: Int? = nil, requestTimeoutSeconds: Double = 0,
                requestReadTimeoutSeconds: Double = 0, timeoutSeconds: Double) {
        self.requestReadTimeoutSeconds = requestReadTimeoutSeconds
        self.requestTimeoutSeconds = requestTimeoutSeconds
        self.maxConnections = maxConnections
        self.keepAlive = keepAlive
        self.acceptsUpTo = acceptsUpTo
        self.maxHeaderBytes = maxHeaderBytes
        self.head = head
        self.maxBodyBytes = maxBodyBytes
        self.timeoutSeconds = timeoutSeconds
    }
}
