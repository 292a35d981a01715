#define _GNU_SOURCE
#include "CEchoChatShim.h"
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
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
int cechochat_eventfd_semaphore(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE); }

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

int cechochat_affinity_cpus(int *cpus, int capacity) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && count < capacity; cpu++) {
        if (CPU_ISSET(cpu, &set)) cpus[count++] = cpu;
    }
    return count;
}

void cechochat_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

// The mask to wait with is the thread's mask without `signo`, read once per
// thread and kept (a thread that waits here keeps its mask for life): reading
// it on every call was one more system call per message in the thread strategy.
static __thread sigset_t cechochat_wait_mask;
static __thread int cechochat_wait_mask_signo = 0;

int cechochat_ppoll_unblocking(struct pollfd *fds, nfds_t count, int timeout_ms, int signo) {
    if (cechochat_wait_mask_signo != signo) {
        pthread_sigmask(SIG_BLOCK, NULL, &cechochat_wait_mask);
        sigdelset(&cechochat_wait_mask, signo);
        cechochat_wait_mask_signo = signo;
    }
    sigset_t mask = cechochat_wait_mask;
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

int cechochat_pidfd_open(int pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int cechochat_pidfd_send_signal(int pidfd, int signo) {
#ifdef SYS_pidfd_send_signal
    return (int)syscall(SYS_pidfd_send_signal, pidfd, signo, NULL, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int cechochat_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cechochat_set_open_file_limit(int pid, long soft, long hard) {
    struct rlimit limit = {(rlim_t)soft, (rlim_t)hard};
    return prlimit(pid, RLIMIT_NOFILE, &limit, NULL);
}

int cechochat_set_file_size_limit(int pid, long bytes) {
    struct rlimit limit = {(rlim_t)bytes, (rlim_t)bytes};
    return prlimit(pid, RLIMIT_FSIZE, &limit, NULL);
}

int cechochat_set_address_space_limit(int pid, long bytes) {
    struct rlimit limit;
    if (prlimit(pid, RLIMIT_AS, NULL, &limit) != 0) return -1;
    limit.rlim_cur = bytes < 0 ? limit.rlim_max : (rlim_t)bytes;
    return prlimit(pid, RLIMIT_AS, &limit, NULL);
}

int cechochat_get_open_file_limit(int pid, long *soft, long *hard) {
    struct rlimit limit;
    if (prlimit(pid, RLIMIT_NOFILE, NULL, &limit) != 0) return -1;
    *soft = limit.rlim_cur > (rlim_t)LONG_MAX ? LONG_MAX : (long)limit.rlim_cur;
    *hard = limit.rlim_max > (rlim_t)LONG_MAX ? LONG_MAX : (long)limit.rlim_max;
    return 0;
}

static void cechochat_write_int(int fd, int value) {
    ssize_t n;
    do { n = write(fd, &value, sizeof value); } while (n < 0 && errno == EINTR);
}

// 4 bytes, or -1 on end of file or error.
static int cechochat_read_int(int fd, int *value) {
    ssize_t n;
    do { n = read(fd, value, sizeof *value); } while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof *value ? 0 : -1;
}

// In a forked child: set up and exec; on failure report errno on `report`, _exit(127).
static void cechochat_child_exec(const char *path, char *const argv[], char *const envp[], int in, int out, int err,
                                 long open_file_limit, int report) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction fallback;
    memset(&fallback, 0, sizeof fallback);
    fallback.sa_handler = SIG_DFL;
    for (int signo = 1; signo < NSIG; signo++) {
        if (signo != SIGKILL && signo != SIGSTOP) sigaction(signo, &fallback, NULL);
    }
    int sources[3] = {in, out, err};
    for (int i = 0; i < 3; i++) {
        if (sources[i] < 0) sources[i] = open("/dev/null", O_RDWR);
        // A source that is itself 0, 1 or 2 (but not its own target) must not be
        // overwritten by an earlier dup2: move it out of the way first.
        if (sources[i] >= 0 && sources[i] < 3 && sources[i] != i) sources[i] = fcntl(sources[i], F_DUPFD, 3);
        if (sources[i] < 0) goto fail;
    }
    for (int i = 0; i < 3; i++) {
        if (sources[i] == i) {
            if (fcntl(i, F_SETFD, 0) != 0) goto fail;
        } else if (dup2(sources[i], i) < 0) {
            goto fail;
        }
    }
    if (open_file_limit > 0) {
        struct rlimit limit = {(rlim_t)open_file_limit, (rlim_t)open_file_limit};
        if (setrlimit(RLIMIT_NOFILE, &limit) != 0) goto fail;
    }
    cechochat_close_all_from_3_except(report);
    if (strchr(path, '/') != NULL) {
        execve(path, argv, envp);
    } else {
        execvpe(path, argv, envp);
    }
fail:
    cechochat_write_int(report, errno);
    _exit(127);
}

int cechochat_spawn(const char *path, char *const argv[], char *const envp[], int in, int out, int err,
                    long open_file_limit, int die_with_parent) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(report[0]);
        close(report[1]);
        errno = saved;
        return -1;
    }
    if (pid == 0) {
        close(report[0]);
        setpgid(0, 0);
        if (die_with_parent) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            // The parent may have died before PDEATHSIG was set.
            if (getppid() != parent) _exit(127);
        }
        cechochat_child_exec(path, argv, envp, in, out, err, open_file_limit, report[1]);
    }
    close(report[1]);
    setpgid(pid, pid);  // also from this side, so the group exists before we return
    int child_errno = 0;
    int failed = cechochat_read_int(report[0], &child_errno) == 0;
    close(report[0]);
    if (failed) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        errno = child_errno;
        return -1;
    }
    return pid;
}

// SIGKILLs and reaps every child of the calling (single-threaded) process,
// round after round, since the children of those killed are re-parented to
// it (it is a subreaper). /proc/thread-self/children lists zombies too.
static void cechochat_kill_all_children(void) {
    for (int round = 0; round < 1000; round++) {
        char buffer[8192];
        ssize_t length = 0;
        int fd = open("/proc/thread-self/children", O_RDONLY | O_CLOEXEC);
        if (fd < 0) break;
        while (length < (ssize_t)sizeof buffer) {
            ssize_t n = read(fd, buffer + length, sizeof buffer - (size_t)length);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            length += n;
        }
        close(fd);
        pid_t pids[1024];
        int count = 0;
        long pid = 0;
        for (ssize_t i = 0; i <= length && count < 1024; i++) {
            char c = i < length ? buffer[i] : ' ';
            if (c >= '0' && c <= '9') {
                pid = pid * 10 + (c - '0');
            } else if (pid > 0) {
                pids[count++] = (pid_t)pid;
                pid = 0;
            }
        }
        if (count == 0) break;
        for (int i = 0; i < count; i++) kill(pids[i], SIGKILL);
        for (int i = 0; i < count; i++) {
            while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR) {}
        }
    }
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

static void cechochat_guardian(int control, const char *path, char *const argv[], char *const envp[], int in,
                               int out, int err) {
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, NULL);
    // No PDEATHSIG here: the guardian must outlive a caller that dies, to clean up.
    int report[2];
    int start_errno = 0;
    pid_t program = -1;
    if (pipe2(report, O_CLOEXEC) != 0) {
        start_errno = errno;
    } else {
        pid_t guardian = getpid();
        program = fork();
        if (program == 0) {
            close(report[0]);
            close(control);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != guardian) _exit(127);
            cechochat_child_exec(path, argv, envp, in, out, err, 0, report[1]);
        }
        if (program < 0) start_errno = errno;
        close(report[1]);
        if (program > 0 && cechochat_read_int(report[0], &start_errno) == 0) {
            while (waitpid(program, NULL, 0) < 0 && errno == EINTR) {}
            program = -1;
        }
        close(report[0]);
    }
    // Nothing of the caller's may stay open here (its pipes would never see
    // end of file): keep only the control socket, and 0-2 on /dev/null.
    cechochat_close_all_from_3_except(control);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        for (int i = 0; i < 3; i++) if (null != i) dup2(null, i);
        if (null > 2) close(null);
    }
    cechochat_write_int(control, start_errno);
    int program_fd = program > 0 ? cechochat_pidfd_open(program) : -1;
    while (1) {
        struct pollfd fds[2] = {{control, POLLIN, 0}, {program_fd, POLLIN, 0}};
        int waiting_for_program = program > 0;
        int ready = poll(fds, program_fd >= 0 ? 2 : 1, waiting_for_program && program_fd < 0 ? 20 : -1);
        if (ready < 0 && errno != EINTR) break;
        if (waiting_for_program) {
            int status = 0;
            pid_t done = waitpid(program, &status, WNOHANG);
            if (done == program) {
                cechochat_write_int(control, status);
                program = -1;
                if (program_fd >= 0) close(program_fd);
                program_fd = -1;
            }
        }
        if (ready > 0 && fds[0].revents != 0) {
            char byte;
            ssize_t n = read(control, &byte, 1);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) break;
        }
    }
    cechochat_kill_all_children();
    _exit(0);
}

int cechochat_spawn_guarded(const char *path, char *const argv[], char *const envp[], int in, int out, int err,
                            int *control) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return -1;
    pid_t guardian = fork();
    if (guardian < 0) {
        int saved = errno;
        close(pair[0]);
        close(pair[1]);
        errno = saved;
        return -1;
    }
    if (guardian == 0) {
        close(pair[0]);
        setpgid(0, 0);
        cechochat_guardian(pair[1], path, argv, envp, in, out, err);
    }
    close(pair[1]);
    setpgid(guardian, guardian);
    *control = pair[0];
    return guardian;
}

#include <stdio.h>
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
int cechochat_rename_noreplace(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, RENAME_NOREPLACE);
}

size_t cechochat_count_byte(const void *bytes, size_t count, unsigned char byte) {
    typedef unsigned char block __attribute__((vector_size(16)));
    const unsigned char *cursor = bytes;
    size_t total = 0;
    block wanted;
    memset(&wanted, byte, sizeof wanted);
    while (count >= sizeof(block)) {
        // Per-lane counters of one byte each: at most 255 blocks before they are summed.
        size_t blocks = count / sizeof(block);
        if (blocks > 255) blocks = 255;
        block counts = {0};
        for (size_t index = 0; index < blocks; index++) {
            block chunk;
            memcpy(&chunk, cursor + index * sizeof(block), sizeof chunk);
            counts -= (block)(chunk == wanted);  // a match is all ones: -1
        }
        for (size_t lane = 0; lane < sizeof(block); lane++) total += counts[lane];
        cursor += blocks * sizeof(block);
        count -= blocks * sizeof(block);
    }
    for (size_t index = 0; index < count; index++) total += cursor[index] == byte;
    return total;
}
