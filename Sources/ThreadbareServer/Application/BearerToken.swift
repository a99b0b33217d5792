/// `auth_token`: what a client must send as `Authorization: Bearer <token>` to change the cache
/// or read the server's figures. Compared in constant time, so how long a wrong guess takes
/// says nothing of how much of it was right.
struct BearerToken: Sendable {
    private let expected: [UInt8]

    /// nil for an empty token: no authentication.
    init?(_ token: String) {
        guard !token.isEmpty else { return nil }
        expected = Array("Bearer \(token)".utf8)
    }

    /// True when `header` (the Authorization value, if any) is exactly `Bearer <token>`. Every
    /// byte of the expected value is compared whatever the header's length.
    func admits(_ header: String?) -> Bool {
        let given = Array((header ?? "").utf8)
        var difference = UInt8(given.count == expected.count ? 0 : 1)
        for index in expected.indices {
            difference |= expected[index] ^ (index < given.count ? given[index] : 0)
        }
        return difference == 0
    }

    /// The answer to a request that lacks the token; it never echoes what was sent.
    static let refusal = RequestError(401, "this endpoint needs Authorization: Bearer <auth_token>",
                                      headers: [("WWW-Authenticate", "Bearer realm=\"threadbare\"")])
}
