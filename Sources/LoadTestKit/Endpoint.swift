/// One kind of request in a run: a URL, its method, headers and body, and its share of the
/// requests. A run with several endpoints reports each one's throughput, latency and errors.
public struct Endpoint: Sendable {
    public var target: Target
    /// What reports call it: the URL as given, or a scenario's name for it.
    public var name: String
    public var method = "GET"
    public var headers: [(name: String, value: String)] = []
    public var body: [UInt8] = []
    /// Its share of the requests relative to the others' (1 to 1,000,000).
    public var weight = 1
    /// What `{key}` in the path stands for: a key drawn for each request.
    public var keys: KeySpace?
    /// https: how the server's certificate is checked.
    public var tls = TLSOptions()

    public static let methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]
    public static let weights = 1...1_000_000

    public init(target: Target, name: String) {
        self.target = target
        self.name = name
    }

    /// `URL` or `URL=WEIGHT` (the `--url` option's form). `=digits` after a query parameter
    /// is that parameter's value (`/cache?key=5`), so a weight there follows the value:
    /// `/cache?key=5=3`.
    public init(weightedURL: String) throws(Target.Invalid) {
        var url = weightedURL
        var weight = 1
        if let equals = weightedURL.lastIndex(of: "="), let parsed = Int(weightedURL[weightedURL.index(after: equals)...]),
           Self.endsWithAPathOrAParameterValue(weightedURL[..<equals]) {
            guard Self.weights.contains(parsed) else {
                throw Target.Invalid(description: "'\(weightedURL)': the weight must be from 1 to 1000000")
            }
            url = String(weightedURL[..<equals])
            weight = parsed
        }
        self.init(target: try Target(url: url), name: url)
        self.weight = weight
    }

    private static func endsWithAPathOrAParameterValue(_ url: Substring) -> Bool {
        guard let parameterStart = url.lastIndex(where: { $0 == "?" || $0 == "&" }) else { return true }
        return url[parameterStart...].contains("=")
    }

    /// Why a header cannot be given, or nil if it can: the body's framing is loadtest's to
    /// set, since it sends exactly `body`. A Host header replaces the target's.
    public static func problem(withHeader name: String) -> String? {
        ["content-length", "transfer-encoding"].contains(name.lowercased())
            ? "\(name) is set from the body; leave it out" : nil
    }

    /// Why the endpoint cannot run, or nil: `{key}` in the path and a key space go together.
    var problem: String? {
        let templated = target.pathAndQuery.contains(KeySpace.placeholder)
        if templated && keys == nil { return "\(name): the path has \(KeySpace.placeholder) but no keys are given" }
        if !templated && keys != nil { return "\(name): keys are given but the path has no \(KeySpace.placeholder)" }
        return nil
    }

    /// A templated request's bytes before and after its key; nil when the request is fixed.
    var requestParts: (prefix: [UInt8], suffix: [UInt8])? {
        guard keys != nil else { return nil }
        let bytes = requestBytes, placeholder = Array(KeySpace.placeholder.utf8)
        guard let range = bytes.firstRange(of: placeholder) else { return nil }
        return (Array(bytes[..<range.lowerBound]), Array(bytes[range.upperBound...]))
    }

    /// The request exactly as it goes on the wire, built once for the whole run.
    var requestBytes: [UInt8] {
        var text = "\(method) \(target.pathAndQuery) HTTP/1.1\r\n"
        if !headers.contains(where: { $0.name.lowercased() == "host" }) { text += "Host: \(target.hostHeader)\r\n" }
        for header in headers { text += "\(header.name): \(header.value)\r\n" }
        if !body.isEmpty || ["POST", "PUT", "PATCH"].contains(method) {
            text += "Content-Length: \(body.count)\r\n"
        }
        return Array((text + "\r\n").utf8) + body
    }
}

/// nginx's smooth weighted round robin: weights 5, 1, 1 give a a b a c a a, spread out and
/// exact over every cycle, so a short run still splits as its weights say.
struct WeightedRotation {
    private let weights: [Int]
    private let total: Int
    private var current: [Int]

    init(weights: [Int]) {
        self.weights = weights
        total = weights.reduce(0, +)
        current = Array(repeating: 0, count: weights.count)
    }

    mutating func next() -> Int {
        guard weights.count > 1 else { return 0 }
        var best = 0
        for index in weights.indices {
            current[index] += weights[index]
            if current[index] > current[best] { best = index }
        }
        current[best] -= total
        return best
    }
}
