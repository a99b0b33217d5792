import CLibevent
import Foundation
import Testing
@testable import ThreadbareServer

/// Seeded property tests over what parses client and operator input: the request target's
/// query, the cache key, the router and the configuration. Whatever the input, no crash, and
/// every refusal is the documented kind of error. `make fuzz` runs them for FUZZ_SECONDS with
/// fresh seeds; in `make test` each runs a fixed seed.
@Suite("Parsers hold for any input")
struct ParserPropertyTests {
    /// Iterations for the fixed-seed run, or as many as fit in FUZZ_SECONDS from a fresh seed.
    static func explore(_ body: (inout SplitMix64) throws -> Void) rethrows {
        let environment = ProcessInfo.processInfo.environment
        let seconds = environment["FUZZ_SECONDS"].flatMap(Double.init) ?? 0
        let seed = environment["FUZZ_SEED"].flatMap(UInt64.init) ?? (seconds > 0 ? UInt64.random(in: 0...UInt64.max) : 42)
        var random = SplitMix64(state: seed)
        let deadline = Date().addingTimeInterval(seconds)
        var iterations = 0
        repeat {
            try body(&random)
            iterations += 1
        } while iterations < 5_000 || Date() < deadline
        if seconds > 0 { print("fuzz: seed \(seed), \(iterations) inputs") }
    }

    /// The query is decoded in its own bytes, not by libevent: it must agree with libevent's
    /// `evhttp_parse_query_str` on every input, in what it accepts and in every name and value.
    @Test func queryDecodingAgreesWithLibevent() {
        let alphabet = Array("ab=&%+0fG9 x\u{e9}".unicodeScalars)
        Self.explore { random in
            let query = random.next() % 2 == 0 ? random.text()
                : String(String.UnicodeScalarView((0..<Int(random.next() % 12)).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] }))
            // A raw NUL never reaches a handler: evhttp reads the request target as a C string.
            guard !query.contains("\0") else { return }
            let ours = try? QueryParameters(query)
            let list = UnsafeMutablePointer<evkeyvalq>.allocate(capacity: 1)
            defer { list.deallocate() }
            var theirs: [(String, String)]?
            if query.isEmpty {
                theirs = []
            } else if evhttp_parse_query_str(query, list) == 0 {
                theirs = []
                var entry = list.pointee.tqh_first
                while let current = entry {
                    theirs!.append((String(cString: current.pointee.key), String(cString: current.pointee.value)))
                    entry = current.pointee.next.tqe_next
                }
                evhttp_clear_headers(list)
            }
            // An encoded NUL is ours to refuse; libevent would cut the value short there.
            if query.contains("%00") && ours == nil { return }
            #expect((ours == nil) == (theirs == nil), "\(query.debugDescription): ours \(String(describing: ours?.pairs)), libevent's \(String(describing: theirs))")
            if let ours, let theirs {
                #expect(ours.pairs.map(\.name) == theirs.map(\.0) && ours.pairs.map(\.value) == theirs.map(\.1),
                        "\(query.debugDescription): ours \(ours.pairs), libevent's \(theirs)")
            }
        }
    }

    @Test func queryStringsParseOrAre400NamingTheProblem() {
        Self.explore { random in
            let query = random.text()
            do {
                let parameters = try QueryParameters(query)
                for name in ["work", "ms", "compute", "ttl"] where parameters.has(name) {
                    do {
                        let value = try parameters.integer(name, in: 0...1_000)
                        #expect((0...1_000).contains(value))
                    } catch {
                        let failure = error as? RequestError
                        #expect(failure?.status == 400 && failure?.message.contains(name) == true, "\(query): \(error)")
                    }
                }
                do { try parameters.allowOnly(["work"]) } catch { #expect((error as? RequestError)?.status == 400) }
            } catch {
                #expect((error as? RequestError)?.status == 400, "\(query): \(error)")
            }
        }
    }

    @Test func cacheKeysDecodeToWhatTheCacheAcceptsOrAre400() {
        Self.explore { random in
            let raw = random.text(maxPieces: 40)
            do {
                let key = try CacheEndpoints.decodeKey(raw)
                #expect(!key.bytes.isEmpty && key.bytes.count <= CacheEndpoints.maxKeyBytes)
                #expect(!key.bytes.contains { $0 < 0x20 || $0 == 0x7F } && String(validating: key.bytes, as: UTF8.self) != nil, "\(raw)")
            } catch {
                #expect((error as? RequestError)?.status == 400, "\(raw): \(error)")
            }
        }
    }

    @Test func anyPathRoutesSomewhereOrNowhere() {
        let router = Router(routes: Endpoints.all)
        Self.explore { random in
            let path = "/" + random.text()
            for method in HTTPMethod.allCases {
                switch router.match(method: method, path: path) {
                case .found(let route, _): #expect(route.methods.contains(method) && route.matches(path))
                case .methodNotAllowed(let allowed): #expect(!allowed.isEmpty && !allowed.contains(method))
                case .notFound: break
                }
            }
        }
    }

    @Test func configurationTextLoadsOrNamesWhereItIsWrong() {
        Self.explore { random in
            var text = ""
            for _ in 0..<random.below(6) {
                let key = random.below(3) == 0 ? random.text(maxPieces: 2) : ConfigurationKey.all[random.below(ConfigurationKey.all.count)].name
                let parts = key.split(separator: ".", maxSplits: 1)
                let value = random.text(maxPieces: 3)
                text += parts.count == 2 ? "\(parts[0]):\n  \(parts[1]): \(value)\n" : "\(key): \(value)\n"
            }
            do {
                let settings = try ConfigurationLoader.fileSettings(path: "fuzz.yaml", text: text)
                var configuration = ServerConfiguration()
                for setting in settings {
                    guard let key = ConfigurationKey.named(setting.key) else { continue }
                    try? key.assign(&configuration, setting.text)
                }
                _ = try? configuration.makeMode()
            } catch {
                #expect("\(error)".contains("fuzz.yaml"), "\(text): \(error)")
            }
        }
    }
}

extension SplitMix64 {
    /// Text built from the pieces parsers trip on, and random bytes.
    mutating func text(maxPieces: Int = 12) -> String {
        let pieces = ["%", "%0", "%00", "%zz", "%41", "%C3%A9", "%FF", "&", "=", "==", "?", "/", "//", " ", "+", "\u{7F}",
                      "\u{1}", "é", "compute", "ttl", "work", "ms", "release", "-", "1", "99999999999999999999", "1e3", "0x10",
                      ":", "\n", "  ", "#", "[", "{", "'", "\"", "cache", "max_entries", "- ", "\t"]
        var text = ""
        for _ in 0..<below(maxPieces + 1) {
            if below(4) == 0 {
                text.unicodeScalars.append(Unicode.Scalar(UInt8(below(128))))
            } else {
                text += pieces[below(pieces.count)]
            }
        }
        return text
    }
}
