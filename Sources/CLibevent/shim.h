#ifndef THREADBARE_CLIBEVENT_SHIM_H
#define THREADBARE_CLIBEVENT_SHIM_H

/* libevent's event-config.h defines _GNU_SOURCE. System headers first parsed after that would
 * declare types (fd_set among them) differently from Swift's Glibc module, and clang refuses
 * the mismatch. Including them here first makes both modules see one definition. */
#include <sys/types.h>
#include <sys/time.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

/* glibc declares this only under _GNU_SOURCE, which the headers above were kept from; threads
 * named tb-loop-N and tb-handler-N make `top -H` and debuggers readable. */
extern int pthread_setname_np(pthread_t thread, const char *name);

/* prctl is variadic, which Swift cannot call: a prefork worker asks for `signal` when the
 * process that forked it dies. */
static inline int threadbare_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL);
}

#endif
