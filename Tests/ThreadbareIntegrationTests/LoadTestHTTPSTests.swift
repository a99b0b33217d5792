import Foundation
import Testing

/// loadtest's https:// against nginx with TLS: the certificate checked by default, trusted
/// from --cacert or not checked with --insecure, sessions resumed when connections reopen.
extension LoadSensitive {
    @Suite("loadtest over HTTPS", .serialized)
    struct LoadTestHTTPSTests {
        @Test func anHTTPSRunAgainstNginx() throws {
            let server = try TLSServer()
            defer { server.stop() }
            let run = try LoadTestCLITests.loadtest(["run", server.url + "/", "-c", "4", "-d", "1s", "--cacert", server.caFile, "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            let report = try LoadTestCLITests.json(run.stdout)
            #expect((report["requests"] as? Int ?? 0) > 100)
            #expect((report["errors"] as? [String: Int])?["total"] == 0)
            // Four keep-alive connections: four handshakes, at most (before the warm-up's end).
            let tls = try #require(report["tls"] as? [String: Int])
            #expect((tls["handshakes"] ?? 99) <= 4, "\(tls)")

            // By name too: the certificate says localhost, and SNI carries it.
            let named = try LoadTestCLITests.loadtest(["run", "https://localhost:\(server.port)/", "-c", "1", "-d", "0.3s", "--cacert", server.caFile])
            #expect(named.status == 0, "\(named.stderr)")
        }

        @Test func anUntrustedCertificateIsRefusedWithItsReasonUnlessInsecure() throws {
            let server = try TLSServer()
            defer { server.stop() }
            let untrusted = try LoadTestCLITests.loadtest(["run", server.url + "/", "-c", "1", "-d", "0.3s"])
            #expect(untrusted.status == 2, "\(untrusted.stdout)")
            #expect(untrusted.stderr.contains("TLS handshake with 127.0.0.1 failed: unable to get local issuer certificate")
                    && untrusted.stderr.contains("--cacert FILE"), "\(untrusted.stderr)")
            let insecure = try LoadTestCLITests.loadtest(["run", server.url + "/", "-c", "1", "-d", "0.3s", "--insecure", "--json"])
            #expect(insecure.status == 0, "\(insecure.stderr)")
            #expect((try LoadTestCLITests.json(insecure.stdout)["requests"] as? Int ?? 0) > 0)
            let both = try LoadTestCLITests.loadtest(["run", server.url + "/", "--insecure", "--cacert", server.caFile])
            #expect(both.status == 2 && both.stderr.contains("contradict"), "\(both.stderr)")

            // A certificate for another name, signed by a CA the client trusts: still refused.
            let elsewhere = try TLSServer(names: "DNS:elsewhere.example")
            defer { elsewhere.stop() }
            let mismatch = try LoadTestCLITests.loadtest(["run", elsewhere.url + "/", "-c", "1", "-d", "0.3s", "--cacert", elsewhere.caFile])
            #expect(mismatch.status == 2 && mismatch.stderr.contains("IP address mismatch"), "\(mismatch.stderr)")
        }

        /// Every request on a new connection (Connection: close): every handshake after the
        /// first of each thread resumes the session the server gave before.
        @Test func reopenedConnectionsResumeTheirSession() throws {
            let server = try TLSServer()
            defer { server.stop() }
            let run = try LoadTestCLITests.loadtest(["run", server.url + "/", "-c", "2", "-d", "1s", "--cacert", server.caFile,
                                                     "-H", "Connection: close", "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            let report = try LoadTestCLITests.json(run.stdout)
            let tls = try #require(report["tls"] as? [String: Int])
            let handshakes = tls["handshakes"] ?? 0, resumed = tls["resumed"] ?? 0
            #expect(handshakes >= (report["requests"] as? Int ?? 0) && handshakes > 20, "\(tls)")
            #expect(Double(resumed) >= 0.9 * Double(handshakes), "\(tls)")
        }
    }
}
