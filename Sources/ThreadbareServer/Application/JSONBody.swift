import FoundationEssentials

extension HTTPResponse {
    public static func json(_ value: some Encodable, status: Int = 200) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: JSONBody.encode(value))
    }

    public static func error(_ error: RequestError) -> HTTPResponse {
        var response = json(ErrorBody(error: error.message, status: error.status), status: error.status)
        response.headers = error.headers
        return response
    }
}

struct ErrorBody: Codable {
    let error: String
    let status: Int
}

enum JSONBody {
    static func encode(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        // Every value Threadbare encodes is plain data; failure would be a programming error.
        return try! Array(encoder.encode(value))
    }
}
