import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// How https:// connections check the server: against the system's certificate store (the
/// default), a CA file of the user's (`--cacert`), or not at all (`--insecure`).
public struct TLSOptions: Sendable, Equatable {
    public var caFile: String?
    public var insecure = false

    public init(caFile: String? = nil, insecure: Bool = false) {
        self.caFile = caFile
        self.insecure = insecure
    }
}

/// One run's OpenSSL context, shared by its threads (OpenSSL makes sessions from one context
/// safely from several threads): TLS 1.2 or later, ALPN http/1.1, the server's certificate
/// verified against its name (SNI and hostname checking) unless `insecure`.
final class TLSContext: @unchecked Sendable {
    let context: OpaquePointer
    private let options: TLSOptions

    init(_ options: TLSOptions) throws(LoadError) {
        // OpenSSL writes to the socket with write(), not send(MSG_NOSIGNAL): a server that
        // closes mid-request must be an error to count, not a signal that ends the process.
        signal(SIGPIPE, SIG_IGN)
        guard let context = SSL_CTX_new(TLS_client_method()) else { throw LoadError("TLS: \(TLSContext.lastError())") }
        self.context = context
        self.options = options
        threadbare_ssl_ctx_set_client_defaults(context)
        let alpn: [UInt8] = [8] + Array("http/1.1".utf8)
        _ = SSL_CTX_set_alpn_protos(context, alpn, UInt32(alpn.count))
        if options.insecure {
            SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
        } else {
            SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
            if let caFile = options.caFile {
                guard SSL_CTX_load_verify_locations(context, caFile, nil) == 1 else {
                    throw LoadError("--cacert: cannot load \(caFile): \(TLSContext.lastError())")
                }
            } else if SSL_CTX_set_default_verify_paths(context) != 1 {
                throw LoadError("TLS: cannot load the system's certificates: \(TLSContext.lastError())")
            }
        }
        SSL_CTX_sess_set_new_cb(context) { ssl, session in
            // The session a server hands out after a handshake (in TLS 1.3, in a message after
            // it): the connection's worker keeps it for the next connection it opens.
            guard let ssl, let session, let owner = threadbare_ssl_owner(ssl) else { return 0 }
            Unmanaged<ClientConnection>.fromOpaque(owner).takeUnretainedValue().worker.keep(session)
            return 1
        }
    }

    deinit {
        SSL_CTX_free(context)
    }

    /// A TLS session over `socket`, set to reach `host` (its name for SNI and the certificate
    /// check, or its address), resuming `session` if there is one.
    func session(on socket: Int32, host: String, resuming session: OpaquePointer?) -> OpaquePointer? {
        guard let ssl = SSL_new(context) else { return nil }
        SSL_set_fd(ssl, socket)
        SSL_set_connect_state(ssl)
        var scratch = in6_addr()
        let isAddress = inet_pton(AF_INET, host, &scratch) == 1 || inet_pton(AF_INET6, host, &scratch) == 1
        // SNI carries names only; an address is checked against the certificate's IP entries.
        if !isAddress { _ = threadbare_ssl_set_server_name(ssl, host) }
        if !options.insecure {
            let parameters = SSL_get0_param(ssl)
            if isAddress { _ = X509_VERIFY_PARAM_set1_ip_asc(parameters, host) } else { _ = X509_VERIFY_PARAM_set1_host(parameters, host, 0) }
        }
        if let session { SSL_set_session(ssl, session) }
        return ssl
    }

    /// Why a handshake failed: the certificate's verdict when it was the certificate (which
    /// `insecure` does not look at), else OpenSSL's reason. Clears OpenSSL's error queue for
    /// this thread.
    func failure(of ssl: OpaquePointer, result: Int32) -> (kind: String, reason: String) {
        let verdict = SSL_get_verify_result(ssl)
        if verdict != X509_V_OK && !options.insecure {
            ERR_clear_error()
            return ("tls_certificate", String(cString: X509_verify_cert_error_string(verdict)))
        }
        let code = SSL_get_error(ssl, result)
        let reason = code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
            ? (errno == 0 ? "the server closed the connection during the handshake" : String(cString: strerror(errno)))
            : Self.lastError()
        return ("tls_handshake", reason)
    }

    /// OpenSSL's oldest queued error, as text, and the queue emptied.
    static func lastError() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0, let reason = ERR_reason_error_string(code) else { return "unknown error" }
        return String(cString: reason)
    }

    /// Before a run: one blocking handshake on a connected socket, so that a certificate the
    /// client does not trust is one clear error rather than a run of failed requests.
    func check(socket: Int32, host: String) throws(LoadError) {
        let ssl = try handshake(socket: socket, host: host)
        _ = SSL_shutdown(ssl)
        SSL_free(ssl)
    }

    /// One request on a connected blocking socket, and everything the server sent until it
    /// closed (compare's probes, which ask with `Connection: close`); nil if it failed.
    func exchange(_ request: [UInt8], socket: Int32, host: String) -> [UInt8]? {
        guard let ssl = try? handshake(socket: socket, host: host) else { return nil }
        defer { SSL_free(ssl) }
        guard request.withUnsafeBytes({ SSL_write(ssl, $0.baseAddress, Int32($0.count)) }) == Int32(request.count) else { return nil }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = SSL_read(ssl, &buffer, Int32(buffer.count))
            if count <= 0 { break }
            answer += buffer[..<Int(count)]
        }
        ERR_clear_error()
        return answer
    }

    private func handshake(socket: Int32, host: String) throws(LoadError) -> OpaquePointer {
        var wait = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        guard let ssl = self.session(on: socket, host: host, resuming: nil) else { throw LoadError("TLS: \(Self.lastError())") }
        let result = SSL_connect(ssl)
        guard result == 1 else {
            let (kind, reason) = failure(of: ssl, result: result)
            SSL_free(ssl)
            let hint = kind == "tls_certificate" ? " (give --cacert FILE with the certificate that signed it, or --insecure)" : ""
            throw LoadError("TLS handshake with \(host) failed: \(reason)\(hint)")
        }
        return ssl
    }
}
