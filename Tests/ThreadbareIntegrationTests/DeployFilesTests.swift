import Foundation
import Testing

/// config/deploy as the programs that read it see it: the unit's commands pass `threadbare
/// config check` in every mode, the units pass `systemd-analyze verify`, nginx.conf passes
/// `nginx -t` and haproxy.cfg `haproxy -c`; the port, body limit and timeouts written in them
/// agree with what the configurations say; and nginx, given hosts the way a script gives them
/// (between the markers), passes requests to Threadbare and sends on those a host refused.
@Suite("deploy files: the systemd units, nginx.conf and haproxy.cfg, checked by the programs that read them")
struct DeployFilesTests {
    static let deploy = repositoryRoot.appendingPathComponent("config/deploy")
    static let service = deploy.appendingPathComponent("threadbare@.service")
    static let socket = deploy.appendingPathComponent("threadbare@.socket")
    static let exampleEnvironment = deploy.appendingPathComponent("example.env")
    static let nginxConf = deploy.appendingPathComponent("nginx.conf")
    static let haproxyConf = deploy.appendingPathComponent("haproxy.cfg")

    /// Where the unit expects the binary and the configurations to be installed.
    static let installedBinary = "/usr/local/bin/threadbare"
    static let installedConfigurations = "/etc/threadbare/"

    static let systemdAnalyze = "/usr/bin/systemd-analyze"
    static let nginx = "/usr/sbin/nginx"
    static let haproxy = "/usr/sbin/haproxy"

    /// Every mode with a config/NAME.yaml: each is an instance the template can run.
    static let modes: [String] = ((try? FileManager.default.contentsOfDirectory(
        atPath: repositoryRoot.appendingPathComponent("config").path)) ?? [])
        .filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(".yaml".count)) }.sorted()

    // MARK: The unit runs what `config check` accepts

    @Test("the unit's threadbare commands pass `config check` in every mode, with and without example.env", arguments: modes)
    func unitCommandsAreAccepted(mode: String) throws {
        let unit = try UnitFile(Self.service)
        #expect(unit.values("EnvironmentFile", in: "Service") == ["-\(Self.installedConfigurations)%i.env"],
                "example.env is checked as the optional per-mode file the unit reads")
        let fromUnit = unit.environment(in: "Service")
        let fromFile = try Self.environmentFile(Self.exampleEnvironment)
        let starts = unit.values("ExecStart", in: "Service")
        try #require(starts.count == 1, "one ExecStart=: \(starts)")
        let served = try #require(Self.threadbareArguments(of: starts[0], mode: mode), "ExecStart= runs \(Self.installedBinary)")
        var checks = [try Self.configCheck(servedWith: served)]
        checks += unit.values("ExecReload", in: "Service").compactMap { Self.threadbareArguments(of: $0, mode: mode) }
        for arguments in checks {
            for (environment, host) in [(fromUnit, fromUnit["THREADBARE_HOST"]), (fromUnit.merging(fromFile) { $1 }, fromFile["THREADBARE_HOST"])] {
                let result = try runThreadbare(arguments, environment: environment)
                let command = "threadbare \(arguments.joined(separator: " ")) with \(environment)"
                #expect(result.status == 0, "\(command): \(result.stderr)")
                let expectedHost = try #require(host, "the unit, and example.env after it, set THREADBARE_HOST")
                #expect(result.stdout.contains("\nhost: \(expectedHost)  # environment THREADBARE_HOST"),
                        "\(command) serves the environment's host:\n\(result.stdout)")
            }
        }
    }

    @Test("systemd-analyze verify accepts the service and socket of every mode without a warning about them",
          .enabled(if: FileManager.default.isExecutableFile(atPath: systemdAnalyze), "systemd-analyze is missing (Debian's systemd package)"))
    func unitsVerify() throws {
        let directory = try Self.temporaryDirectory("units")
        defer { try? FileManager.default.removeItem(at: directory) }
        // verify checks that each command's executable exists: the built binary stands in.
        for unit in [Self.service, Self.socket] {
            let text = try String(contentsOf: unit, encoding: .utf8)
            try text.replacingOccurrences(of: Self.installedBinary, with: ServerProcess.binary.path)
                .write(to: directory.appendingPathComponent(unit.lastPathComponent), atomically: true, encoding: .utf8)
        }
        let analyze = URL(fileURLWithPath: Self.systemdAnalyze)
        // A unit with nothing to find fault with tells a verify that cannot run here from one
        // that finds fault with ours.
        let probe = directory.appendingPathComponent("probe.service")
        try "[Service]\nExecStart=/bin/true\n".write(to: probe, atomically: true, encoding: .utf8)
        let probed = try runToCompletion(analyze, ["verify", "--man=no", probe.path], deadline: 60)
        if probed.status != 0 || !probed.stderr.isEmpty {
            try Test.cancel("systemd-analyze verify cannot run here: a unit of one ExecStart=/bin/true gets status \(probed.status): \(probed.stderr)")
        }
        let instances = Self.modes.flatMap { ["threadbare@\($0).service", "threadbare@\($0).socket"] }
        let result = try runToCompletion(analyze, ["verify", "--man=no"] + instances.map { directory.appendingPathComponent($0).path }, deadline: 60)
        // Its warnings name the file or the unit ("…/threadbare@.service:12: Unknown key …").
        let aboutOurs = result.stderr.split(separator: "\n").filter { $0.contains("threadbare@") }
        #expect(result.status == 0 && aboutOurs.isEmpty, "systemd-analyze verify: status \(result.status)\n\(result.stderr)")
    }

    // MARK: The proxies accept their files

    @Test("nginx -t accepts nginx.conf",
          .enabled(if: FileManager.default.isExecutableFile(atPath: nginx), "nginx is missing: make setup installs it"))
    func nginxAcceptsItsFile() throws {
        let directory = try Self.temporaryDirectory("nginx")
        defer { try? FileManager.default.removeItem(at: directory) }
        // nginx -t opens the logs and binds the listening port: both are moved somewhere free.
        let conf = try Self.renderNginx(into: directory, port: try MemcachedServer.freePort())
        let result = try runToCompletion(URL(fileURLWithPath: Self.nginx), ["-t", "-p", directory.path, "-c", conf.path, "-e", "stderr"], deadline: 60)
        #expect(result.status == 0 && result.stderr.contains("test is successful"), "nginx -t:\n\(result.stderr)")
    }

    @Test("haproxy -c accepts haproxy.cfg without a warning",
          .enabled(if: FileManager.default.isExecutableFile(atPath: haproxy), "haproxy is missing: make setup installs it"))
    func haproxyAcceptsItsFile() throws {
        let result = try runToCompletion(URL(fileURLWithPath: Self.haproxy), ["-c", "-f", Self.haproxyConf.path], deadline: 60)
        #expect(result.status == 0, "haproxy -c:\n\(result.stdout)\(result.stderr)")
        #expect(!result.stderr.contains("[WARNING]"), "haproxy -c:\n\(result.stderr)")
    }

    // MARK: The numbers agree

    @Test("the socket and both proxies name the port every mode serves; their body limit and timeouts fit the server's")
    func portsLimitsAndTimeoutsAgree() throws {
        let configurations = try Self.modes.map { ($0, try Self.effectiveConfiguration(of: $0)) }
        func every(_ key: String) throws -> [Double] {
            try configurations.map { mode, settings in try #require(settings[key].flatMap(Double.init), "\(mode): \(key)") }
        }
        let ports = Set(try every("port")), backlogs = Set(try every("backlog")), bodyLimits = Set(try every("limits.max_body_bytes"))
        try #require(ports.count == 1 && bodyLimits.count == 1, "every mode serves one port with one body limit: \(ports), \(bodyLimits)")
        let port = Int(try #require(ports.first)), bodyLimit = Int(try #require(bodyLimits.first))
        let requestTimeout = try every("request_timeout").max() ?? 0
        let silence = try every("timeout").min() ?? 0
        let graceful = try every("graceful_timeout").max() ?? 0
        let connections = try every("max_connections").max() ?? 0
        let memcachedConnections = try every("cache.memcached_connections").max() ?? 0

        let socket = try UnitFile(Self.socket)
        let listened = socket.values("ListenStream", in: "Socket")
        #expect(!listened.isEmpty && listened.allSatisfy { Self.port(of: $0) == port }, "the socket listens on \(port): \(listened)")
        #expect(Set(socket.values("Backlog", in: "Socket").compactMap(Double.init)) == backlogs,
                "the socket's Backlog= is what the configurations ask for: \(backlogs)")

        let service = try UnitFile(Self.service)
        let stopTimeout = try Self.seconds(try #require(service.values("TimeoutStopSec", in: "Service").last), plainUnit: 1)
        // A prefork master gives its workers graceful_timeout and 5 s more before it kills them.
        #expect(stopTimeout > graceful + 5, "TimeoutStopSec= \(stopTimeout) s outlasts a graceful stop (\(graceful) + 5 s)")
        let descriptors = try #require(service.values("LimitNOFILE", in: "Service").last.flatMap(Double.init))
        let memcachedServers = try Self.environmentFile(Self.exampleEnvironment)["THREADBARE_CACHE_MEMCACHED"]?
            .split(separator: ",").count ?? 1
        #expect(descriptors >= connections + memcachedConnections * Double(memcachedServers) + 100,
                "LimitNOFILE= \(descriptors) holds max_connections \(connections), memcached's and the server's own")

        let nginx = try String(contentsOf: Self.nginxConf, encoding: .utf8)
        let nginxHosts = try Self.hosts(in: nginx).map { $0.split(separator: " ")[1] }
        #expect(!nginxHosts.isEmpty && nginxHosts.allSatisfy { Self.port(of: String($0)) == port }, "nginx's hosts serve port \(port): \(nginxHosts)")
        #expect(try Self.bytes(try Self.directive("client_max_body_size", in: nginx)) == bodyLimit)
        for name in ["proxy_read_timeout", "proxy_send_timeout"] {
            #expect(try Self.seconds(try Self.directive(name, in: nginx), plainUnit: 1) > requestTimeout, "\(name) lets request_timeout's 504 through")
        }
        #expect(try Self.seconds(try Self.directive("keepalive_timeout", in: nginx), plainUnit: 1) < silence,
                "nginx lets an idle connection go before Threadbare's timeout closes it")

        let haproxy = try String(contentsOf: Self.haproxyConf, encoding: .utf8)
        let haproxyHosts = try Self.hosts(in: haproxy).map { $0.split(separator: " ")[2] }
        #expect(!haproxyHosts.isEmpty && haproxyHosts.allSatisfy { Self.port(of: String($0)) == port }, "haproxy's hosts serve port \(port): \(haproxyHosts)")
        #expect(haproxy.contains("{ req.hdr_val(content-length) gt \(bodyLimit) }"), "haproxy refuses what Threadbare refuses")
        #expect(try Self.seconds(try Self.directive("timeout server", in: haproxy), plainUnit: 0.001) > requestTimeout)
        #expect(try Self.seconds(try Self.directive("timeout http-keep-alive", in: haproxy), plainUnit: 0.001) < silence)
    }

    // MARK: nginx in front of a real server

    /// The hosts are put between the markers as a deployment script would, a port nothing
    /// listens on first: nginx tries it and sends the request on to Threadbare.
    @Test("nginx, given hosts between the markers, sends on what a host refused, and refuses the body Threadbare refuses",
          .enabled(if: FileManager.default.isExecutableFile(atPath: nginx), "nginx is missing: make setup installs it"))
    func nginxInFrontOfThreadbare() throws {
        let server = try ServerProcess(["--mode", "nogil"])
        defer { server.stop() }
        let directory = try Self.temporaryDirectory("nginx")
        defer { try? FileManager.default.removeItem(at: directory) }
        let refusing = try MemcachedServer.freePort(), port = try MemcachedServer.freePort()
        let conf = try Self.renderNginx(into: directory, port: port,
                                        hosts: [refusing, server.port].map { "server 127.0.0.1:\($0) max_fails=3 fail_timeout=10s;" })
        let nginx = try NginxProcess(conf: conf, in: directory, directives: "daemon off; master_process off;")
        defer { nginx.stop() }
        try #require(BoundedWait.eventually(within: 10) { (try? HTTPConnection(port: port, timeoutSeconds: 1)) != nil }, "nginx did not start:\n\(nginx.standardError)")

        for _ in 0..<6 {
            let reply = try HTTPConnection(port: port).request("GET", "/health")
            #expect(reply.status == 200 && reply.text == "ok", "\(reply.status) \(reply.text)")
        }
        let accessLog = directory.appendingPathComponent("threadbare.access.log")
        let retried = "upstream=127.0.0.1:\(refusing), 127.0.0.1:\(server.port) ustatus=502, 200"
        #expect(BoundedWait.eventually(within: 5) { ((try? String(contentsOf: accessLog, encoding: .utf8)) ?? "").contains(retried) },
                "a request tried the refusing host, then Threadbare:\n\((try? String(contentsOf: accessLog, encoding: .utf8)) ?? "")")

        // One byte over the limit is refused on its head alone, by nginx as by Threadbare.
        let limit = try Self.bytes(try Self.directive("client_max_body_size", in: String(contentsOf: Self.nginxConf, encoding: .utf8)))
        for (who, target) in [("nginx", port), ("threadbare", server.port)] {
            let connection = try HTTPConnection(port: target)
            try connection.send(Array("PUT /cache/big HTTP/1.1\r\nHost: test\r\nContent-Length: \(limit + 1)\r\n\r\n".utf8))
            #expect(try connection.readReply(method: "PUT").status == 413, "\(who) refuses \(limit + 1) bytes")
        }
        let fits = try HTTPConnection(port: port).request("PUT", "/cache/big", body: [UInt8](repeating: UInt8(ascii: "a"), count: limit))
        #expect(fits.status == 201, "\(limit) bytes pass nginx and are stored: \(fits.status) \(fits.text)")
    }

    // MARK: Reading the files

    /// The arguments of a command line that runs the installed threadbare, for the built one:
    /// `%i` is the mode, and an installed configuration is the repository's copy of it.
    static func threadbareArguments(of commandLine: String, mode: String) -> [String]? {
        let words = commandLine.split(separator: " ").map { String($0).replacingOccurrences(of: "%i", with: mode) }
        guard words.first == installedBinary else { return nil }
        return words.dropFirst().map { word in
            guard word.hasPrefix(installedConfigurations), word.hasSuffix(".yaml") else { return word }
            return repositoryRoot.appendingPathComponent("config").appendingPathComponent(String(word.dropFirst(installedConfigurations.count))).path
        }
    }

    /// `serve --config FILE FLAGS…` as `config check FILE FLAGS…`.
    static func configCheck(servedWith arguments: [String]) throws -> [String] {
        try #require(arguments.first == "serve", "ExecStart= serves: \(arguments)")
        var flags = Array(arguments.dropFirst())
        let at = try #require(flags.firstIndex(of: "--config"), "ExecStart= names its configuration: \(arguments)")
        try #require(at + 1 < flags.count)
        let file = flags[at + 1]
        flags.removeSubrange(at...(at + 1))
        return ["config", "check", file] + flags
    }

    /// `KEY=value` lines; `#` starts a comment line, as systemd's EnvironmentFile= reads them.
    static func environmentFile(_ url: URL) throws -> [String: String] {
        var settings: [String: String] = [:]
        for line in try String(contentsOf: url, encoding: .utf8).split(separator: "\n") {
            let text = line.trimmingCharacters(in: .whitespaces)
            guard !text.isEmpty, !text.hasPrefix("#"), !text.hasPrefix(";"), let equals = text.firstIndex(of: "=") else { continue }
            settings[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        return settings
    }

    /// What `config check` prints for config/MODE.yaml, as dotted keys ("limits.max_body_bytes").
    static func effectiveConfiguration(of mode: String) throws -> [String: String] {
        let file = repositoryRoot.appendingPathComponent("config/\(mode).yaml").path
        let result = try runThreadbare(["config", "check", file])
        try #require(result.status == 0, "config check \(file): \(result.stderr)")
        var settings: [String: String] = [:]
        var section = ""
        for line in result.stdout.split(separator: "\n") where !line.hasPrefix("#") {
            let nested = line.hasPrefix("  ")
            let entry = (line.range(of: "  # ").map { line[..<$0.lowerBound] } ?? line[...]).trimmingCharacters(in: .whitespaces)
            guard let colon = entry.firstIndex(of: ":") else { continue }
            let key = String(entry[..<colon]), value = entry[entry.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if value.isEmpty && !nested {
                section = key
                continue
            }
            settings[nested ? "\(section).\(key)" : key] = value.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        return settings
    }

    /// The server lines between `# hosts begin` and `# hosts end`, without their `;`.
    static func hosts(in text: String) throws -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let begin = try #require(lines.firstIndex(of: "# hosts begin")), end = try #require(lines.firstIndex(of: "# hosts end"))
        try #require(begin < end)
        return lines[(begin + 1)..<end].filter { !$0.isEmpty && !$0.hasPrefix("#") }
            .map { $0.hasSuffix(";") ? String($0.dropLast()) : $0 }
    }

    /// The value of the one line that starts with `name` (comments aside), without its `;`.
    static func directive(_ name: String, in text: String) throws -> String {
        let found = text.split(separator: "\n").map { line in
            (line.firstIndex(of: "#").map { line[..<$0] } ?? line[...]).trimmingCharacters(in: .whitespaces)
        }.filter { $0.hasPrefix(name + " ") }
        try #require(found.count == 1, "one \(name) line: \(found)")
        let value = found[0].dropFirst(name.count).trimmingCharacters(in: .whitespaces)
        return value.hasSuffix(";") ? String(value.dropLast()) : value
    }

    /// "35s", "500ms", "1m"; a bare number is `plainUnit` seconds (nginx: 1, HAProxy: 0.001).
    static func seconds(_ text: String, plainUnit: Double) throws -> Double {
        for (suffix, unit) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3_600.0)] where text.hasSuffix(suffix) {
            return try #require(Double(text.dropLast(suffix.count)), "a duration: \(text)") * unit
        }
        return try #require(Double(text), "a duration: \(text)") * plainUnit
    }

    /// nginx's sizes: "1m", "16k", or bytes.
    static func bytes(_ text: String) throws -> Int {
        for (suffix, unit) in [("k", 1_024), ("m", 1_048_576), ("g", 1_073_741_824)] where text.lowercased().hasSuffix(suffix) {
            return try #require(Int(text.dropLast()), "a size: \(text)") * unit
        }
        return try #require(Int(text), "a size: \(text)")
    }

    /// The port of `HOST:PORT` or `[HOST]:PORT`.
    static func port(of address: String) -> Int? {
        address.split(separator: ":").last.flatMap { Int($0) }
    }

    /// nginx.conf runnable from `directory`: its logs and pid file there, listening on
    /// 127.0.0.1:`port`, and `hosts` between the markers when given.
    static func renderNginx(into directory: URL, port: Int, hosts: [String]? = nil) throws -> URL {
        var text = try String(contentsOf: nginxConf, encoding: .utf8)
        for (installed, here) in [("/var/log/nginx/", directory.path + "/"), ("pid /run/nginx.pid;", "pid \(directory.path)/nginx.pid;"),
                                  ("listen 80;", "listen 127.0.0.1:\(port);")] {
            try #require(text.contains(installed), "nginx.conf has \(installed)")
            text = text.replacingOccurrences(of: installed, with: here)
        }
        if let hosts {
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            let begin = try #require(lines.firstIndex { $0.trimmingCharacters(in: .whitespaces) == "# hosts begin" })
            let end = try #require(lines.firstIndex { $0.trimmingCharacters(in: .whitespaces) == "# hosts end" })
            let indent = String(lines[begin].prefix { $0 == " " })
            lines.replaceSubrange((begin + 1)..<end, with: hosts.map { indent + $0 })
            text = lines.joined(separator: "\n")
        }
        let conf = directory.appendingPathComponent("nginx.conf")
        try text.write(to: conf, atomically: true, encoding: .utf8)
        return conf
    }

    static func temporaryDirectory(_ name: String) throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("deploy-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }
}

/// A systemd unit file as systemd reads it: `Key=value` under `[Section]` headers, a key may
/// repeat, `#` and `;` start comment lines, and a line ending in `\` goes on in the next.
struct UnitFile {
    struct Setting {
        let section: String
        let key: String
        let value: String
    }

    let settings: [Setting]

    init(_ url: URL) throws {
        var section = ""
        var found: [Setting] = []
        var pending = ""
        for raw in try String(contentsOf: url, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false) {
            let line = pending + raw.trimmingCharacters(in: .whitespaces)
            pending = ""
            if line.hasPrefix("#") || line.hasPrefix(";") || line.isEmpty { continue }
            if line.hasSuffix("\\") {
                pending = String(line.dropLast()) + " "
                continue
            }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast())
            } else if let equals = line.firstIndex(of: "=") {
                found.append(Setting(section: section, key: line[..<equals].trimmingCharacters(in: .whitespaces),
                                     value: line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)))
            }
        }
        settings = found
    }

    func values(_ key: String, in section: String) -> [String] {
        settings.filter { $0.section == section && $0.key == key }.map(\.value)
    }

    /// The variables Environment= lines set: space-separated `KEY=value`, quotes removed.
    func environment(in section: String) -> [String: String] {
        var variables: [String: String] = [:]
        for assignment in values("Environment", in: section).flatMap({ $0.split(separator: " ") }) {
            let text = assignment.trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
            guard let equals = text.firstIndex(of: "=") else { continue }
            variables[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        return variables
    }
}
