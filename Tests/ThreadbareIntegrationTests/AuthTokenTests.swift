import Foundation
import Testing

@Suite("auth_token guards what changes the cache and what describes the server")
struct AuthTokenTests {
    static let token = "s3cret-Token_42"

    @Test func guardedEndpointsNeedTheBearerToken() throws {
        let server = try ServerProcess([], environment: ["THREADBARE_AUTH_TOKEN": Self.token])
        defer { server.stop() }
        let good = ["Authorization": "Bearer \(Self.token)"]
        for (method, path) in [("PUT", "/cache/k"), ("DELETE", "/cache/k"), ("GET", "/stats"), ("GET", "/metrics"), ("HEAD", "/stats")] {
            for headers in [[:], ["Authorization": "Bearer wrong-guess"], ["Authorization": Self.token], ["Authorization": "Bearer \(Self.token)x"]] {
                let reply = try server.request(method, path, headers: headers, body: method == "PUT" ? [1] : [])
                #expect(reply.status == 401, "\(method) \(path) \(headers)")
                #expect(reply.headers["www-authenticate"] == "Bearer realm=\"threadbare\"")
                #expect(!reply.text.contains("wrong-guess") && !reply.text.contains(Self.token), "never echoed: \(reply.text)")
            }
        }
        #expect(try server.request("PUT", "/cache/k", headers: good, body: Array("v".utf8)).status == 201)
        #expect(try server.get("/cache/k").text == "v", "reads stay open")
        #expect(try server.get("/health").status == 200 && server.get("/").status == 200)
        #expect(try server.request("GET", "/stats", headers: good).status == 200)
        #expect(try server.request("GET", "/metrics", headers: good).status == 200)
        #expect(try server.request("DELETE", "/cache/k", headers: good).status == 204)
        #expect(try server.request("PUT", "/cache/k").status == 401, "the refusal stored nothing")
        #expect(try server.get("/cache/k").status == 404)
    }

    @Test func configCheckNeverPrintsTheToken() throws {
        let file = try temporaryConfig("auth_token: \(Self.token)\n")
        defer { try? FileManager.default.removeItem(at: file) }
        let run = try runThreadbare(["config", "check", file.path])
        #expect(run.status == 0)
        #expect(!run.stdout.contains(Self.token) && run.stdout.contains("auth_token: \"(set, not shown)\""), "\(run.stdout)")
        let spaced = try runThreadbare(["config", "check", file.path], environment: ["THREADBARE_AUTH_TOKEN": "two words"])
        #expect(spaced.status == 2 && spaced.stderr.contains("auth_token: must be printable ASCII"), "\(spaced.stderr)")
    }
}
