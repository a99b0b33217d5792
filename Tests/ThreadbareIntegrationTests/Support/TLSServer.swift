import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// nginx from Debian serving https on a port of its own, with a certificate made for the test
/// by the openssl command: a real TLS server for loadtest's https:// to speak to.
final class TLSServer: @unchecked Sendable {
    let port: Int
    let directory: URL
    private let process: ChildProcess

    /// The CA that signed the server's certificate: what `--cacert` trusts.
    var caFile: String { directory.appendingPathComponent("ca.pem").path }

    struct Unavailable: Error, CustomStringConvertible {
        let description: String
    }

    /// `names`: the certificate's subjectAltName entries, such as `IP:127.0.0.1`.
    init(names: String = "DNS:localhost,IP:127.0.0.1") throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)")
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for tool in ["/usr/sbin/nginx", "/usr/bin/openssl"] where !FileManager.default.isExecutableFile(atPath: tool) {
            throw Unavailable(description: "\(tool) is missing: make setup installs nginx and openssl")
        }
        let openssl = URL(fileURLWithPath: "/usr/bin/openssl")
        let path = { (name: String) in directory.appendingPathComponent(name).path }
        try "subjectAltName=\(names)\n".write(toFile: path("san.ext"), atomically: true, encoding: .utf8)
        // A CA of the test's own, and a server certificate it signs: P-256 keys, made in milliseconds.
        for command in [
            ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", path("ca.key"),
             "-out", path("ca.pem"), "-days", "2", "-subj", "/CN=threadbare test CA"],
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", path("server.key"),
             "-out", path("server.csr"), "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"), "-CAcreateserial",
             "-out", path("server.pem"), "-days", "2", "-extfile", path("san.ext")],
        ] {
            let made = try runToCompletion(openssl, command)
            guard made.status == 0 else { throw Unavailable(description: "openssl \(command[0]) failed: \(made.stderr)") }
        }
        var attempts = 0
        while true {
            attempts += 1
            let port = Self.freePort()
            try """
                daemon off;
                master_process off;
                worker_processes 1;
                pid \(path("nginx.pid"));
                error_log \(path("error.log")) warn;
                events { worker_connections 1024; }
                http {
                    access_log off;
                    client_body_temp_path \(path("body"));
                    proxy_temp_path \(path("proxy"));
                    fastcgi_temp_path \(path("fastcgi"));
                    uwsgi_temp_path \(path("uwsgi"));
                    scgi_temp_path \(path("scgi"));
                    keepalive_requests 1000000;
                    server {
                        listen 127.0.0.1:\(port) ssl;
                        ssl_certificate \(path("server.pem"));
                        ssl_certificate_key \(path("server.key"));
                        ssl_session_cache shared:tls:1m;
                        location / { return 200 "ok\\n"; }
                    }
                }
                """.write(toFile: path("nginx.conf"), atomically: true, encoding: .utf8)
            // nginx writes what it has to say to its error_log.
            let process = try ChildProcess("/usr/sbin/nginx", ["-p", directory.path, "-c", path("nginx.conf")],
                                           environment: ServerProcess.cleanEnvironment(adding: [:]))
            if Self.waitForListener(port: port, process: process) {
                self.port = port
                self.process = process
                return
            }
            _ = BoundedWait.killStuck(process)
            // Another process took the port between the probe and nginx's bind: try another.
            guard attempts < 5 else {
                throw Unavailable(description: "nginx did not start: \((try? String(contentsOfFile: path("error.log"), encoding: .utf8)) ?? "")")
            }
        }
    }

    func stop() {
        kill(process.pid, SIGTERM)
        if !process.waitForExit(within: 5) { _ = BoundedWait.killStuck(process) }
        try? FileManager.default.removeItem(at: directory)
    }

    var url: String { "https://127.0.0.1:\(port)" }

    /// A port nothing listens on just now.
    private static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func waitForListener(port: Int, process: ChildProcess) -> Bool {
        for _ in 0..<100 {
            if (try? HTTPConnection(port: port, timeoutSeconds: 1)) != nil { return true }
            if process.waitForExit(within: 0.05) { return false }
        }
        return false
    }
}
