import Testing
@testable import ThreadbareServer

/// The pool's parts that need no server: where keys go, how servers are written, and the
/// content-type note.
@Suite("memcached pool: ketama placement, server lists, content-type notes")
struct MemcachedPoolTests {
    /// Figures read off libmemcached 1.1.4 (Debian 12's, under python3-pylibmc 1.6.3) with
    /// `behaviors={"ketama": True}`: its one-at-a-time hash, and the server it chose.
    @Test func hashesAreLibmemcachedsOneAtATime() {
        #expect(KetamaRing.hash(Array("a".utf8)) == 3_392_050_242)
        #expect(KetamaRing.hash(Array("hello".utf8)) == 3_372_029_979)
        #expect(KetamaRing.hash(Array("127.0.0.1:21211-0".utf8)) == 2_485_934_734)
        #expect(KetamaRing.hash(Array("127.0.0.1-0".utf8)) == 942_932_303)
    }

    @Test(arguments: [
        (["127.0.0.1:21211", "127.0.0.1:21212"], [1, 1, 1, 1, 1]),
        (["127.0.0.1:21211", "127.0.0.1:21212", "127.0.0.1:22122"], [1, 2, 1, 1, 2]),
        // The default port is left out of a point's name.
        (["127.0.0.1:11211", "127.0.0.1:21212"], [0, 1, 0, 0, 0]),
    ])
    func keysLandWhereLibmemcachedPutsThem(servers: [String], expected: [Int]) throws {
        let ring = KetamaRing(servers: try servers.map(MemcachedCache.parse))
        #expect(["a", "b", "user:1", "hello", "key-17"].map { ring.server(for: Array($0.utf8)) } == expected)
    }

    @Test func addingAServerMovesOnlyTheKeysItTakes() throws {
        let two = KetamaRing(servers: try ["10.0.0.1:11211", "10.0.0.2:11211"].map(MemcachedCache.parse))
        let three = KetamaRing(servers: try ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"].map(MemcachedCache.parse))
        let keys = (0..<3_000).map { Array("user:\($0)".utf8) }
        let moved = keys.filter { two.server(for: $0) != three.server(for: $0) }
        #expect(moved.allSatisfy { three.server(for: $0) == 2 }, "a key moves only to the new server")
        // About a third moves: far from the two thirds a modulo hash would move.
        #expect(moved.count > 600 && moved.count < 1_500, "\(moved.count) of 3000 moved")
    }

    @Test func serversAreWrittenAsPylibmcReadsThem() throws {
        #expect(try MemcachedCache.parse("cache-1:11212") == ("cache-1", 11212))
        #expect(try MemcachedCache.parse("cache-1") == ("cache-1", 11211))
        #expect(try MemcachedCache.parse("[::1]:11212") == ("::1", 11212))
        for bad in ["", ":11211", "host:", "host:0", "host:70000", "[::1", "[::1]11211"] {
            #expect(throws: CacheSetupError.self, "'\(bad)'") { try MemcachedCache.parse(bad) }
        }
        #expect(throws: CacheSetupError.self) { try MemcachedCache(servers: ["a:1", "a:1"], connections: 1, timeoutMilliseconds: 10) }
    }

    @Test func aListIsAYAMLListOrCommaSeparated() throws {
        let file = try ConfigurationLoader.fileSettings(path: "f.yaml", text: "cache:\n  memcached:\n    - 10.0.0.1:11211\n    - 10.0.0.2:11211\n")
        var configuration = ServerConfiguration()
        for setting in file { try ConfigurationKey.named(setting.key)!.assign(&configuration, setting.text) }
        #expect(configuration.cacheMemcachedServers == ["10.0.0.1:11211", "10.0.0.2:11211"])

        let loaded = try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_CACHE_MEMCACHED": "a:1, b:2"], commandLine: [])
        #expect(loaded.configuration.cacheMemcachedServers == ["a:1", "b:2"])
        #expect(loaded.rendered().contains("memcached: [a:1, b:2]"))
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_CACHE_MEMCACHED": "a:1,,b:2"], commandLine: [])
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.fileSettings(path: "f.yaml", text: "cache:\n  memcached: []\n")
        }
        // What config check prints reads back as the same list.
        var copy = ServerConfiguration()
        let key = try #require(ConfigurationKey.named("cache.memcached"))
        try key.assign(&copy, key.render(loaded.configuration))
        #expect(copy.cacheMemcachedServers == ["a:1", "b:2"])
        // A server that cannot be one is refused where it is written, not when the cache is made.
        for bad in ["a:0", "a:1,a:1", "a b:1"] {
            #expect(throws: ConfigurationError.self, "\(bad)") {
                try ConfigurationLoader.load(file: nil, environment: ["THREADBARE_CACHE_MEMCACHED": bad], commandLine: [])
            }
        }
    }

    @Test func aNoteDescribesOneValueOfOneKey() {
        let key = CacheKey("page"), value = Array("<p>hi</p>".utf8)
        let note = ContentTypeNote.text("text/html", for: key, describing: value)
        #expect(ContentTypeNote.contentType(in: note, for: key, describing: value) == "text/html")
        #expect(ContentTypeNote.contentType(in: note, for: key, describing: Array("overwritten".utf8)) == nil)
        #expect(ContentTypeNote.contentType(in: note, for: CacheKey("other"), describing: value) == nil)
        // NUL first: no text-protocol client can send this key.
        #expect(ContentTypeNote.wireKey(for: key) != ContentTypeNote.wireKey(for: CacheKey("other")))
    }
}
