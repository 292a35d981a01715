// A thin C shim: Glibc's Swift module map does not export epoll, eventfd or
// accept4, and some of the constants below are enum-typed or macros that do not
// import cleanly. Nothing here has logic; each function forwards to libc.
#ifndef CECHOCHAT_SHIM_H
#define CECHOCHAT_SHIM_H

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <stdint.h>

// epoll(7)
int cechochat_epoll_create(void);
int cechochat_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
int cechochat_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);
// struct epoll_event is packed on x86_64; index it on the C side so Swift never
// has to agree with C about its stride.
static inline uint32_t cechochat_epoll_events_at(const struct epoll_event *base, int i) {
    return base[i].events;
}
static inline uint64_t cechochat_epoll_data_at(const struct epoll_event *base, int i) {
    return base[i].data.u64;
}
struct epoll_event *cechochat_epoll_events_allocate(int count);
void cechochat_epoll_events_free(struct epoll_event *events);

static const uint32_t CECHOCHAT_EPOLLIN = EPOLLIN;
static const uint32_t CECHOCHAT_EPOLLOUT = EPOLLOUT;
static const uint32_t CECHOCHAT_EPOLLERR = EPOLLERR;
static const uint32_t CECHOCHAT_EPOLLHUP = EPOLLHUP;
static const uint32_t CECHOCHAT_EPOLLONESHOT = EPOLLONESHOT;
static const int CECHOCHAT_EPOLL_CTL_ADD = EPOLL_CTL_ADD;
static const int CECHOCHAT_EPOLL_CTL_MOD = EPOLL_CTL_MOD;
static const int CECHOCHAT_EPOLL_CTL_DEL = EPOLL_CTL_DEL;

// eventfd(2), non-blocking and close-on-exec
int cechochat_eventfd(void);

// accept4(2) with SOCK_CLOEXEC, plus SOCK_NONBLOCK when nonblocking != 0
int cechochat_accept4(int fd, struct sockaddr *addr, socklen_t *len, int nonblocking);

// socket(2) with SOCK_CLOEXEC, plus SOCK_NONBLOCK when nonblocking != 0
int cechochat_socket(int domain, int type, int protocol, int nonblocking);

// CPUs in this process's affinity mask (sched_getaffinity + CPU_COUNT), or -1.
int cechochat_available_cpus(void);

// pthread_setname_np for the calling thread (15 bytes at most).
void cechochat_set_thread_name(const char *name);

// ppoll(2) with `signo` unblocked for the duration of the call only, so a
// signal sent to this thread while it was blocked interrupts the wait (EINTR)
// instead of being lost between a check and the wait.
#include <poll.h>
int cechochat_ppoll_unblocking(struct pollfd *fds, nfds_t count, int timeout_ms, int signo);

// Installs a handler that does nothing for `signo` (so the signal interrupts
// blocking calls instead of killing or being ignored), without SA_RESTART.
int cechochat_install_wakeup_handler(int signo);

// fork(2); Swift marks it unavailable because forking a multi-threaded
// process is hazardous. The server forks only at start, before any thread.
int cechochat_fork(void);

// Closes every descriptor >= 3 except `keep` (close_range(2) where the
// kernel has it, else one close(2) per possible descriptor).
void cechochat_close_all_from_3_except(int keep);

// The calling thread's errno's errno (a macro in glibc).
int cechochat_errno(void);

#endif
