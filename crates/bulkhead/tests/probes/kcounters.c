/* A hostile tenant's probe of host-wide kernel counters (issue #8). Built static by the
 * end-to-end suite (crates/bulkhead/tests/e2e_hostile.rs) and copied into a node, or run on the
 * host as the bystander. Each verb prints one line `verb key=value ...` and, with `hold`, keeps
 * what it took until killed, so the host can be checked while the node holds its maximum. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void hold(int argc, char **argv, int i) {
    if (i < argc && strcmp(argv[i], "hold") == 0) {
        fflush(stdout);
        for (;;) pause();
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: kcounters inotify N [hold] | watches N | mq N [hold] | sigq N [hold] | aio | vsock | userns | keyctl | pipes N\n");
        return 2;
    }
    const char *verb = argv[1];
    long n = argc > 2 ? atol(argv[2]) : 0;
    if (strcmp(verb, "inotify") == 0) {
        long got = 0;
        int err = 0;
        for (; got < n; got++) {
            if (inotify_init1(IN_CLOEXEC) < 0) { err = errno; break; }
        }
        printf("inotify opened=%ld errno=%d\n", got, err);
        hold(argc, argv, 3);
    } else if (strcmp(verb, "watches") == 0) {
        int fd = inotify_init1(IN_CLOEXEC);
        long got = 0;
        int err = 0;
        char path[64];
        if (fd < 0) { printf("watches opened=0 errno=%d\n", errno); return 0; }
        for (; got < n; got++) {
            snprintf(path, sizeof path, "/tmp/w%ld", got);
            int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
            if (f >= 0) close(f);
            if (inotify_add_watch(fd, path, IN_MODIFY) < 0) { err = errno; break; }
        }
        printf("watches added=%ld errno=%d\n", got, err);
    } else if (strcmp(verb, "mq") == 0) {
        long got = 0;
        int err = 0;
        char name[64];
        for (; got < n; got++) {
            snprintf(name, sizeof name, "/kc%d-%ld", (int)getpid(), got);
            mqd_t q = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, NULL);
            if (q == (mqd_t)-1) { err = errno; break; }
            mq_unlink(name); /* the open descriptor keeps the queue (and its charge) */
        }
        printf("mq opened=%ld errno=%d\n", got, err);
        hold(argc, argv, 3);
    } else if (strcmp(verb, "sigq") == 0) {
        /* Queue real-time signals to ourselves with the signal blocked: each stays pending and
         * counts against RLIMIT_SIGPENDING of the user, up the namespace chain. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGRTMIN);
        sigprocmask(SIG_BLOCK, &set, NULL);
        union sigval v = {0};
        long got = 0;
        int err = 0;
        for (; got < n; got++) {
            if (sigqueue(getpid(), SIGRTMIN, v) < 0) { err = errno; break; }
        }
        printf("sigq queued=%ld errno=%d\n", got, err);
        hold(argc, argv, 3);
    } else if (strcmp(verb, "aio") == 0) {
        unsigned long ctx = 0;
        long r = syscall(SYS_io_setup, 4096, &ctx);
        printf("aio result=%ld errno=%d\n", r, r < 0 ? errno : 0);
    } else if (strcmp(verb, "vsock") == 0) {
        int s = socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
        printf("vsock result=%d errno=%d\n", s, s < 0 ? errno : 0);
    } else if (strcmp(verb, "userns") == 0) {
        int r = unshare(CLONE_NEWUSER);
        printf("userns result=%d errno=%d\n", r, r < 0 ? errno : 0);
    } else if (strcmp(verb, "keyctl") == 0) {
        long r = syscall(SYS_add_key, "user", "kc", "x", 1, -3 /* KEY_SPEC_SESSION_KEYRING */);
        printf("keyctl result=%ld errno=%d\n", r, r < 0 ? errno : 0);
    } else if (strcmp(verb, "pipes") == 0) {
        /* Grow pipes to 1 MiB each until the kernel refuses: the pages are charged to the
         * caller's host uid (the tenant's) and to the node's memory cgroup. */
        long got = 0;
        int err = 0;
        for (; got < n; got++) {
            int p[2];
            if (pipe2(p, O_CLOEXEC) < 0) { err = errno; break; }
            if (fcntl(p[1], F_SETPIPE_SZ, 1 << 20) < 0) { err = errno; break; }
        }
        printf("pipes grown=%ld errno=%d\n", got, err);
        hold(argc, argv, 3);
    } else if (strcmp(verb, "pipe-size") == 0) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) { printf("pipe-size errno=%d\n", errno); return 0; }
        printf("pipe-size bytes=%d\n", fcntl(p[1], F_GETPIPE_SZ));
    } else {
        fprintf(stderr, "kcounters: unknown verb %s\n", verb);
        return 2;
    }
    return 0;
}
