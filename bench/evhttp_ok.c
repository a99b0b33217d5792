/*
 * evhttp_ok.c - the speed reference for Threadbare.
 *
 * Threadbare is built on libevent's evhttp, so the fastest it can be is
 * roughly what plain evhttp does in C on the same machine. This server is
 * that ceiling: one event_base, one evhttp, every request gets "200 ok". bench/http_core.sh runs it next to Threadbare and judges the
 * Swift server by the ratio of its requests/sec to this one's, measured in
 * the same run, so the machine's speed cancels out.
 *
 * Usage: evhttp_ok HOST PORT [--changelist]   (PORT may be 0 for any free port)
 * Prints one line "listening on http://HOST:PORT" once it accepts.
 *
 * Without flags this is the minimal server the targets are judged against.
 * --changelist gives its event_base the one flag Threadbare's loops set
 * (EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST), so the benchmark can also show how
 * much of Threadbare's speed is that flag and how much is the Swift layer.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void handle(struct evhttp_request *req, void *arg) {
    (void)arg;
    evhttp_add_header(evhttp_request_get_output_headers(req),
                      "Content-Type", "text/plain");
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, "ok", 2);
    evhttp_send_reply(req, HTTP_OK, "OK", body);
    evbuffer_free(body);
}

int main(int argc, char **argv) {
    int changelist = argc == 4 && strcmp(argv[3], "--changelist") == 0;
    if (argc != 3 && !changelist) {
        fprintf(stderr, "usage: %s HOST PORT [--changelist]\n", argv[0]);
        return 2;
    }
    struct event_config *config = event_config_new();
    if (config && changelist)
        event_config_set_flag(config, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = config ? event_base_new_with_config(config) : NULL;
    if (config)
        event_config_free(config);
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    if (!http) {
        fprintf(stderr, "evhttp_ok: cannot create event base / evhttp\n");
        return 1;
    }
    evhttp_set_max_headers_size(http, 8192);
    evhttp_set_max_body_size(http, 1048576);
    evhttp_set_timeout(http, 60);
    evhttp_set_gencb(http, handle, NULL);

    struct evhttp_bound_socket *sock =
        evhttp_bind_socket_with_handle(http, argv[1], (ev_uint16_t)atoi(argv[2]));
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (!sock || getsockname(evhttp_bound_socket_get_fd(sock),
                             (struct sockaddr *)&ss, &len) != 0) {
        fprintf(stderr, "evhttp_ok: cannot bind %s:%s\n", argv[1], argv[2]);
        return 1;
    }
    int port = ss.ss_family == AF_INET6
                   ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                   : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    printf("listening on http://%s:%d\n", argv[1], port);
    fflush(stdout);

    event_base_dispatch(base);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
