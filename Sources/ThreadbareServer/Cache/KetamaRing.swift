/// Which memcached server of a pool holds a key, as libmemcached decides it with consistent
/// (ketama) distribution, which pylibmc turns on with `behaviors={"ketama": True}`. A Python
/// service and Threadbare given the same server list therefore look for every key on the same
/// server, and adding a server moves only the keys that land on its points.
///
/// libmemcached 1.1 (Debian 12's, under python3-pylibmc), unweighted ketama: each server has
/// 100 points on a 32-bit circle, at the one-at-a-time hash of `host:port-i` (`host-i` when the
/// port is memcached's default, 11211), host as written in the list; a key goes to the first
/// point at or after its own hash, round past the top to the first point. Both hashes read
/// bytes as C's `char`, which is signed on x86, so bytes from 0x80 count as negative.
/// (Weighted ketama, with MD5 and 160 points, is not what `ketama: True` asks for.)
public struct KetamaRing: Sendable {
    static let pointsPerServer = 100
    static let defaultPort = 11211

    /// Sorted by value, then by server index, as libmemcached sorts them.
    private let points: [(value: UInt32, server: Int)]
    public let serverCount: Int

    /// `servers` are (host, port) in the pool's order.
    public init(servers: [(host: String, port: Int)]) {
        precondition(!servers.isEmpty)
        serverCount = servers.count
        var points: [(value: UInt32, server: Int)] = []
        points.reserveCapacity(servers.count * Self.pointsPerServer)
        for (index, server) in servers.enumerated() {
            for point in 0..<Self.pointsPerServer {
                let name = server.port == Self.defaultPort ? "\(server.host)-\(point)" : "\(server.host):\(server.port)-\(point)"
                points.append((Self.hash(Array(name.utf8)), index))
            }
        }
        self.points = points.sorted { $0.value != $1.value ? $0.value < $1.value : $0.server < $1.server }
    }

    /// The index of the server that holds `key`.
    public func server(for key: [UInt8]) -> Int {
        // libmemcached skips hashing when there is one server.
        guard serverCount > 1 else { return 0 }
        let hash = Self.hash(key)
        var low = 0, high = points.count
        while low < high {
            let middle = (low + high) / 2
            if points[middle].value < hash { low = middle + 1 } else { high = middle }
        }
        return points[low == points.count ? 0 : low].server
    }

    /// Bob Jenkins' one-at-a-time hash, libhashkit's default, over bytes read as signed chars.
    static func hash(_ bytes: [UInt8]) -> UInt32 {
        var value: UInt32 = 0
        for byte in bytes {
            value &+= UInt32(bitPattern: Int32(Int8(bitPattern: byte)))
            value &+= value << 10
            value ^= value >> 6
        }
        value &+= value << 3
        value ^= value >> 11
        value &+= value << 15
        return value
    }
}
