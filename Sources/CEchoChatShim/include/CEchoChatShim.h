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
// eventfd(2) as a semaphore (EFD_SEMAPHORE): each read takes one count
int cechochat_eventfd_semaphore(void);

// accept4(2) with SOCK_CLOEXEC, plus SOCK_NONBLOCK when nonblocking != 0
int cechochat_accept4(int fd, struct sockaddr *addr, socklen_t *len, int nonblocking);

// socket(2) with SOCK_CLOEXEC, plus SOCK_NONBLOCK when nonblocking != 0
int cechochat_socket(int domain, int type, int protocol, int nonblocking);

// CPUs in this process's affinity mask (sched_getaffinity + CPU_COUNT), or -1.
int cechochat_available_cpus(void);
// The CPUs in this process's affinity mask, ascending, at most `capacity`; or -1.
int cechochat_affinity_cpus(int *cpus, int capacity);

// pthread_setname_np for the calling thread (15 bytes at most).
void cechochat_set_thread_name(const char *name);

// ppoll(2) with `signo` unblocked for the duration of the call only, so a
// signal sent to this thread while it was blocked interrupts the wait (EINTR)
// instead of being lost between a check and the wait. The thread's mask is
// read on its first call and kept: it must not change between calls.
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

// Starting test and benchmark programs (fork + exec). Between fork and exec
// the child calls only async-signal-safe functions. It gets: a process group
// of its own, PR_SET_PDEATHSIG(SIGKILL) when die_with_parent != 0 (checked
// against a parent that died before it was set), an empty signal mask and
// default dispositions, `in`/`out`/`err` as descriptors 0/1/2 (-1: /dev/null),
// every other descriptor closed, and RLIMIT_NOFILE soft = hard =
// open_file_limit when that is > 0. PDEATHSIG fires when the *thread* that
// forked exits, so callers fork from a thread that lives as long as the
// process. Returns the pid, or -1 with errno set (a failed exec included:
// the child reports it on a close-on-exec pipe).
int cechochat_spawn(const char *path, char *const argv[], char *const envp[], int in, int out, int err,
                    long open_file_limit, int die_with_parent);

// Like cechochat_spawn, but the program is started by a guardian process that
// is a child subreaper (PR_SET_CHILD_SUBREAPER): whatever the program leaves
// behind (a daemon that double-forked) is re-parented to the guardian and
// never reaped by it, so its pid stays valid. The guardian writes two 4-byte
// messages on *control: the errno of the exec (0 when it started), then the
// program's wait status. When the other end of *control closes (the caller
// is done, or died) it SIGKILLs every descendant it holds, reaps them and
// exits. Returns the guardian's pid, or -1 with errno set.
int cechochat_spawn_guarded(const char *path, char *const argv[], char *const envp[], int in, int out, int err,
                            int *control);

// pidfd_open(2) and pidfd_send_signal(2) (Linux 5.3+); -1 with errno on failure.
int cechochat_pidfd_open(int pid);
int cechochat_pidfd_send_signal(int pidfd, int signo);

// pipe2(2) with O_CLOEXEC.
int cechochat_pipe_cloexec(int fds[2]);

// prlimit(2): sets another process's RLIMIT_NOFILE.
int cechochat_set_open_file_limit(int pid, long soft, long hard);
// prlimit(2): reads another process's RLIMIT_NOFILE (RLIM_INFINITY as LONG_MAX).
int cechochat_get_open_file_limit(int pid, long *soft, long *hard);

// The calling thread's errno's errno (a macro in glibc).
int cechochat_errno(void);

// prlimit(2) RLIMIT_FSIZE (soft and hard) of another process.
int cechochat_set_file_size_limit(int pid, long bytes);

// prlimit(2) RLIMIT_AS of another process: the soft limit to `bytes`, or
// back to the hard one when `bytes` is negative (which needs no privilege).
int cechochat_set_address_space_limit(int pid, long bytes);

// renameat2(2) with RENAME_NOREPLACE: fails with EEXIST instead of replacing
// (glibc declares renameat2 only with _GNU_SOURCE).
int cechochat_rename_noreplace(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);

// How many bytes of `bytes` equal `byte`, compared 16 at a time (vector
// compares): echo mode counts its messages (LF bytes) in every read and write.
size_t cechochat_count_byte(const void *bytes, size_t count, unsigned char byte);

#endif
