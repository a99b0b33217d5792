import Foundation

/// Hosts of the test's own in network namespaces (`ip netns`, Debian's iproute2), each with an
/// address of its own on a bridge in the test's namespace, which reaches them all: several
/// machines' worth of addresses on one machine, with nothing leaving it. The namespaces, their
/// veths and the bridge are named `tbt-…` and removed by `tearDown` (and, left over from a run
/// that was killed, by the next network a test makes).
final class TestNetwork: @unchecked Sendable {
    static let ip = ["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let prefix = "tbt-"
    static let bridge = "tbt-br0"
    /// A range no one here routes: checked before use.
    static let subnet = "10.254.78"
    var bridgeAddress: String { "\(Self.subnet).1" }

    private(set) var namespaces: [String] = []

    /// Why namespaces cannot be made here, or nil when they can (root, iproute2, a kernel
    /// that allows them): asked once, by making one and removing it.
    static let unavailableBecause: String? = {
        guard getuid() == 0 else { return "network namespaces need root (CI runs as root)" }
        guard let ip else { return "iproute2's ip is missing: make setup installs it" }
        let probe = "\(prefix)probe-\(getpid())"
        guard let made = try? runToCompletion(URL(fileURLWithPath: ip), ["netns", "add", probe], deadline: 30) else {
            return "ip netns add did not finish"
        }
        guard made.status == 0 else { return "this machine cannot make network namespaces: \(made.stderr.trimmingCharacters(in: .whitespacesAndNewlines))" }
        _ = try? runToCompletion(URL(fileURLWithPath: ip), ["netns", "del", probe], deadline: 30)
        return nil
    }()

    /// The bridge, and `hosts` namespaces joined to it, named `tbt-<name>` with addresses .11, .12 ….
    init(hosts names: [String]) throws {
        try Self.removeLeftovers()
        let addresses = try Self.ip(["-4", "-o", "addr", "show"])
        guard !addresses.contains("inet \(Self.subnet).") else { throw HTTPConnection.Failure("\(Self.subnet).0/24 is in use on this machine") }
        try Self.ip(["link", "add", Self.bridge, "type", "bridge"])
        try Self.ip(["addr", "add", "\(bridgeAddress)/24", "dev", Self.bridge])
        try Self.ip(["link", "set", Self.bridge, "up"])
        for (index, name) in names.enumerated() {
            let namespace = Self.prefix + name
            namespaces.append(namespace)
            try Self.ip(["netns", "add", namespace])
            try Self.ip(["link", "add", "\(namespace)-v", "type", "veth", "peer", "name", "\(namespace)-b"])
            try Self.ip(["link", "set", "\(namespace)-v", "netns", namespace])
            try Self.ip(["link", "set", "\(namespace)-b", "master", Self.bridge, "up"])
            try Self.ip(["-n", namespace, "addr", "add", "\(address(index))/24", "dev", "\(namespace)-v"])
            try Self.ip(["-n", namespace, "link", "set", "\(namespace)-v", "up"])
            try Self.ip(["-n", namespace, "link", "set", "lo", "up"])
        }
    }

    func address(_ index: Int) -> String { "\(Self.subnet).\(11 + index)" }

    /// A command line that runs `command` inside host `index`'s namespace.
    func inside(_ index: Int) -> [String] { [Self.ip!, "netns", "exec", namespaces[index]] }

    /// Kills whatever still runs in the namespaces, then removes them and the bridge.
    func tearDown() {
        namespaces.forEach(Self.remove)
        namespaces = []
        _ = try? Self.ip(["link", "del", Self.bridge])
    }

    deinit { tearDown() }

    /// A run that was killed leaves its namespaces, what still runs in them, and veth ends here.
    private static func removeLeftovers() throws {
        for line in try ip(["netns", "list"]).split(separator: "\n") {
            let name = String(line.split(separator: " ")[0])
            if name.hasPrefix(prefix) { remove(name) }
        }
        for line in try ip(["-o", "link", "show"]).split(separator: "\n") {
            let fields = line.split(separator: ":")
            guard fields.count > 1 else { continue }
            let name = fields[1].trimmingCharacters(in: .whitespaces).split(separator: "@")[0]
            if name.hasPrefix(prefix) { _ = try? ip(["link", "del", String(name)]) }
        }
    }

    /// A namespace goes only once nothing runs in it: its name alone would be removed.
    private static func remove(_ namespace: String) {
        let running = (try? ip(["netns", "pids", namespace])) ?? ""
        for pid in running.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
        _ = try? ip(["netns", "del", namespace])
    }

    @discardableResult
    private static func ip(_ arguments: [String]) throws -> String {
        let result = try runToCompletion(URL(fileURLWithPath: ip!), arguments, deadline: 30)
        guard result.status == 0 else {
            throw HTTPConnection.Failure("ip \(arguments.joined(separator: " ")) failed: \(result.stderr)")
        }
        return result.stdout
    }
}
