// A minimal thread-per-connection echo server: the floor for that model on
// this machine (see thread-floor.sh). Usage: c-thread PORT [STACK_KIB]
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
static void *serve(void *arg) {
    int fd = (int)(long)arg; char buf[16384];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        ssize_t off = 0;
        while (off < n) { ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL); if (w <= 0) goto out; off += w; }
    }
out:
    close(fd); return NULL;
}
int main(int argc, char **argv) {
    int port = atoi(argv[1]); size_t stack = argc > 2 ? (size_t)atoi(argv[2]) * 1024 : 256 * 1024;
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(l, (void *)&a, sizeof a) || listen(l, 4096)) { perror("listen"); return 1; }
    pthread_attr_t attr; pthread_attr_init(&attr); pthread_attr_setstacksize(&attr, stack);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (;;) {
        int fd = accept(l, NULL, NULL); if (fd < 0) continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t; if (pthread_create(&t, &attr, serve, (void *)(long)fd)) close(fd);
    }
}
