#define _GNU_SOURCE
#include "CEchoChatShim.h"
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <string.h>

int cechochat_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cechochat_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

int cechochat_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout) {
    return epoll_wait(epfd, events, maxevents, timeout);
}

struct epoll_event *cechochat_epoll_events_allocate(int count) {
    return calloc((size_t)count, sizeof(struct epoll_event));
}

void cechochat_epoll_events_free(struct epoll_event *events) { free(events); }

int cechochat_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int cechochat_accept4(int fd, struct sockaddr *addr, socklen_t *len, int nonblocking) {
    return accept4(fd, addr, len, SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0));
}

int cechochat_socket(int domain, int type, int protocol, int nonblocking) {
    return socket(domain, type | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), protocol);
}

int cechochat_errno(void) { return errno; }

int cechochat_available_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    return CPU_COUNT(&set);
}

void cechochat_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

int cechochat_ppoll_unblocking(struct pollfd *fds, nfds_t count, int timeout_ms, int signo) {
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    sigdelset(&mask, signo);
    struct timespec timeout;
    struct timespec *timeout_pointer = NULL;
    if (timeout_ms >= 0) {
        timeout.tv_sec = timeout_ms / 1000;
        timeout.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        timeout_pointer = &timeout;
    }
    return ppoll(fds, count, timeout_pointer, &mask);
}

static void cechochat_wakeup_handler(int signo) { (void)signo; }

int cechochat_install_wakeup_handler(int signo) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = cechochat_wakeup_handler;
    sigemptyset(&action.sa_mask);
    return sigaction(signo, &action, NULL);
}

int cechochat_fork(void) { return fork(); }

static int cechochat_close_range(unsigned int first, unsigned int last) {
#ifdef SYS_close_range
    return (int)syscall(SYS_close_range, first, last, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

void cechochat_close_all_from_3_except(int keep) {
    if (keep < 3) keep = 3;
    int ok = (keep == 3 || cechochat_close_range(3, (unsigned int)keep - 1) == 0)
          && cechochat_close_range((unsigned int)keep + 1, ~0U) == 0;
    if (ok) return;
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 1048576) max = 1048576;
    for (int fd = 3; fd < max; fd++) if (fd != keep) close(fd);
}
