import Foundation
import Yams

/// A server that is not Threadbare, put into `loadtest compare` beside the modes: the CPython
/// counterparts in loadtest/python/targets.yaml, or a user's own service. compare starts it
/// from its command, waits until it answers, runs the same suite, counts the memory of its
/// whole process tree and stops it.
///
/// A target file:
///
///     targets:
///       - name: gunicorn-gthread          # its row in the tables
///         counterpart: gil                # the mode it is set beside (optional)
///         command: gunicorn --bind 127.0.0.1:{port} --threads 8 app:app
///         url: http://127.0.0.1:{port}    # default; the suite's paths are sent to it as they are
///         environment: { SWITCH_INTERVAL_MS: "5" }
///         ready_path: /health             # default /: any HTTP answer means it is up
///         start_timeout: 30s              # default
///         stop_timeout: 10s               # SIGTERM, then SIGKILL (default)
///
/// `{port}` is a free port compare picks for each start; the command also finds it in $PORT.
/// compare runs `exec COMMAND` under /bin/sh from the directory it runs in, so the server, not
/// a shell, is the process it watches: $(nproc) works, a chain of commands belongs in a script.
public struct ExternalTarget: Sendable, Equatable {
    public var name: String
    public var counterpart: String?
    public var command: String
    public var url: String
    public var environment: [String: String]
    public var readyPath: String
    public var startTimeout: Double
    public var stopTimeout: Double
    /// An https url: `cacert:` (a PEM file to trust) or `insecure: true` (no check).
    public var tls = TLSOptions()

    static let keys = ["name", "counterpart", "command", "url", "environment", "ready_path", "start_timeout", "stop_timeout", "cacert", "insecure"]

    public static func load(path: String) throws(Scenario.Invalid) -> [ExternalTarget] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Scenario.Invalid(description: "\(path): cannot read the target file")
        }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    static func parse(_ text: String, path: String) throws(Scenario.Invalid) -> [ExternalTarget] {
        let reader = YAMLReader(path: path)
        let root = try reader.document(text)
        let top = try reader.mapping(root, keys: ["targets"], what: "the target file")
        return try reader.uniquelyNamedList(top, "targets", of: "target", root: root, name: \.name) { node throws(Scenario.Invalid) in
            try parseOne(node, reader: reader)
        }
    }

    private static func parseOne(_ node: Node, reader: YAMLReader) throws(Scenario.Invalid) -> ExternalTarget {
        let fields = try reader.mapping(node, keys: keys, what: "a target")
        func required(_ key: String) throws(Scenario.Invalid) -> String {
            guard let value = fields[key] else { throw reader.error(node, "a target needs \(key)") }
            let text = try reader.string(value, key)
            guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { throw reader.error(value, "\(key): is empty") }
            return text
        }
        let name = try required("name")
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw reader.error(fields["name"]!, "name: letters, digits, '-', '_' and '.' only (it names files), got '\(name)'")
        }
        let url = try fields["url"].map { node throws(Scenario.Invalid) in try reader.string(node, "url") } ?? "http://127.0.0.1:{port}"
        do { _ = try Target(url: url.replacingOccurrences(of: "{port}", with: "1")) } catch {
            throw reader.error(fields["url"] ?? node, "url: \(error)")
        }
        var environment: [String: String] = [:]
        if let node = fields["environment"] {
            guard let mapping = node.mapping else { throw reader.error(node, "environment: expected a mapping of names to values") }
            for (key, value) in mapping {
                guard let variable = key.string, !variable.isEmpty, !variable.contains("=") else {
                    throw reader.error(key, "environment: a variable name cannot be empty or hold '='")
                }
                environment[variable] = try reader.string(value, "environment.\(variable)")
            }
        }
        let readyPath = try fields["ready_path"].map { node throws(Scenario.Invalid) in try reader.string(node, "ready_path") } ?? "/"
        guard readyPath.hasPrefix("/"), !readyPath.contains(where: { $0 == " " || $0.isNewline }) else {
            throw reader.error(fields["ready_path"]!, "ready_path: a path starting with /, percent-encoded (no spaces or line breaks), got '\(readyPath)'")
        }
        var tls = TLSOptions()
        if let cacert = fields["cacert"] {
            let file = try reader.string(cacert, "cacert")
            guard FileManager.default.isReadableFile(atPath: file) else { throw reader.error(cacert, "cacert: cannot read \(file)") }
            tls.caFile = file
        }
        if let insecure = fields["insecure"] {
            guard let flag = insecure.bool else { throw reader.error(insecure, "insecure: expected true or false") }
            tls.insecure = flag
        }
        if tls.insecure && tls.caFile != nil { throw reader.error(node, "cacert and insecure contradict each other: give one") }
        return ExternalTarget(
            name: name,
            counterpart: try fields["counterpart"].map { node throws(Scenario.Invalid) in try reader.string(node, "counterpart") },
            command: try required("command"), url: url, environment: environment, readyPath: readyPath,
            startTimeout: try reader.seconds(fields["start_timeout"], "start_timeout", allowZero: false) ?? 30,
            stopTimeout: try reader.seconds(fields["stop_timeout"], "stop_timeout", allowZero: false) ?? 10,
            tls: tls)
    }

    /// `text` with `{port}` filled in.
    func filled(_ text: String, port: UInt16) -> String {
        text.replacingOccurrences(of: "{port}", with: String(port))
    }
}
