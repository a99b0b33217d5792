#ifndef THREADBARE_COPENSSL_SHIM_H
#define THREADBARE_COPENSSL_SHIM_H

/* loadtest's https:// URLs: OpenSSL on its own non-blocking sockets. */
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

/* What OpenSSL spells as macros, which Swift cannot call. */
static inline long threadbare_ssl_set_server_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}

static inline int threadbare_ssl_set_owner(SSL *ssl, void *owner) { return SSL_set_app_data(ssl, owner); }

static inline void *threadbare_ssl_owner(const SSL *ssl) { return SSL_get_app_data(ssl); }

/* Writes that return what they wrote, as send() does, and a peer that closes without
 * close_notify (a keep-alive timeout) reading as the end of the stream, as with plain TCP. */
static inline void threadbare_ssl_ctx_set_client_defaults(SSL_CTX *ctx) {
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Sessions reach the new-session callback, so a reopened connection can resume one. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
}

#endif
