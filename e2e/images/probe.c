/*
 * probe: attempts one thing a contained process must not be able to do, and reports.
 *
 *   probe <attempt> [args]
 *
 * Exit status: 0 when the attempt was DENIED (the wall held), 1 when it SUCCEEDED (the wall
 * failed), 2 on a usage or setup error. One line on stdout says what happened, with errno.
 * Built statically into the e2e "tools" image (e2e/hack/images.sh); used by
 * e2e/tests/isolation_*.rs and network_walls.rs through `ctr task exec` inside a running
 * instance. `probe serve PORT...` is the walls tests' server (TCP and UDP).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int denied(const char *what) {
    printf("DENIED %s: %s (errno %d)\n", what, strerror(errno), errno);
    return 0;
}

static int allowed(const char *what) {
    printf("SUCCEEDED %s\n", what);
    return 1;
}

/* rc < 0 means the call failed: the attempt was denied. */
static int verdict(long rc, const char *what) {
    return rc < 0 ? denied(what) : allowed(what);
}

static int write_file(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    int rc = write(fd, data, strlen(data)) < 0 ? -1 : 0;
    close(fd);
    return rc;
}

/* An IPv4 address, or an IPv6 one with an optional %interface scope (link-local). */
static int parse_address(const char *ip, int port, struct sockaddr_storage *to, socklen_t *len) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)to;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)to;
    memset(to, 0, sizeof *to);
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        *len = sizeof *v4;
        return 0;
    }
    char host[64];
    snprintf(host, sizeof host, "%s", ip);
    char *scope = strchr(host, '%');
    if (scope) *scope++ = 0;
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) != 1) { errno = EINVAL; return -1; }
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    v6->sin6_scope_id = scope ? if_nametoindex(scope) : 0;
    *len = sizeof *v6;
    return 0;
}

/* A TCP connection to ip:port within timeout_ms: 0 when it was made, -1 (errno set) when
 * refused, dropped (timed out: ETIMEDOUT) or unreachable. */
static int tcp_connect(const char *ip, int port, int timeout_ms) {
    struct sockaddr_storage to;
    socklen_t len;
    if (parse_address(ip, port, &to, &len) < 0) return -1;
    int fd = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int rc = connect(fd, (struct sockaddr *)&to, len);
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, timeout_ms) != 1) { close(fd); errno = ETIMEDOUT; return -1; }
        int err = 0;
        socklen_t elen = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
        rc = err ? -1 : 0;
        if (err) errno = err;
    }
    close(fd);
    return rc;
}

/* A socket of `type` on every address, IPv4 and IPv6 (dual stack), at port. */
static int listen_any(int type, int port) {
    struct sockaddr_in6 at = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_ANY_INIT};
    int one = 1, zero = 0;
    int fd = socket(AF_INET6, type, 0);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, (struct sockaddr *)&at, sizeof at) < 0) return -1;
    if (type == SOCK_STREAM && listen(fd, 64) < 0) return -1;
    return fd;
}

/* Serves TCP (accept, write "ok", close) and UDP (print each datagram) on every port given,
 * over IPv4 and IPv6, forever. */
static int serve(int n, char **ports) {
    struct pollfd fds[32];
    int kinds[32], count = 0;
    for (int i = 0; i < n && count < 30; i++) {
        int t = listen_any(SOCK_STREAM, atoi(ports[i])), u = listen_any(SOCK_DGRAM, atoi(ports[i]));
        if (t < 0 || u < 0) {
            perror("serve: bind");
            return 2;
        }
        fds[count] = (struct pollfd){.fd = t, .events = POLLIN}; kinds[count++] = 0;
        fds[count] = (struct pollfd){.fd = u, .events = POLLIN}; kinds[count++] = 1;
    }
    printf("serving\n");
    fflush(stdout);
    for (;;) {
        if (poll(fds, count, -1) < 0) continue;
        for (int i = 0; i < count; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            if (kinds[i] == 0) {
                int c = accept(fds[i].fd, NULL, NULL);
                if (c >= 0) { (void)!write(c, "ok\n", 3); close(c); }
            } else {
                char buf[128], from_text[64] = "";
                struct sockaddr_in6 from;
                socklen_t len = sizeof from;
                ssize_t got = recvfrom(fds[i].fd, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &len);
                if (got < 0) continue;
                buf[got] = 0;
                inet_ntop(AF_INET6, &from.sin6_addr, from_text, sizeof from_text);
                printf("datagram from %s: %s\n", from_text, buf);
                fflush(stdout);
            }
        }
    }
}

/* Sends one UDP datagram to ip:port from source address src ("-" for the own one), bound
 * with IP_FREEBIND (which needs no capability) and, where CAP_NET_ADMIN or CAP_NET_RAW
 * allow it, IP_TRANSPARENT, so that src may be a neighbour's address. Without the
 * capability the kernel refuses to route a foreign source (ENETUNREACH). */
static int udp_send(const char *src, const char *ip, int port, const char *payload) {
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, ip, &to.sin_addr) != 1) return 2;
    int fd = socket(AF_INET, SOCK_DGRAM, 0), one = 1;
    if (strcmp(src, "-")) {
        struct sockaddr_in from = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, src, &from.sin_addr) != 1) return 2;
        setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof one);
        setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&from, sizeof from) < 0) return denied("bind a neighbour's address");
    }
    return verdict(sendto(fd, payload, strlen(payload), 0, (struct sockaddr *)&to, sizeof to), "send a datagram");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe <attempt> [args]\n");
        return 2;
    }
    const char *a = argv[1];

    if (!strcmp(a, "mount")) return verdict(mount("none", "/tmp", "tmpfs", 0, NULL), "mount tmpfs");
    if (!strcmp(a, "mount-proc")) return verdict(mount("proc", "/tmp", "proc", 0, NULL), "mount proc");
    if (!strcmp(a, "unshare-user")) return verdict(unshare(CLONE_NEWUSER), "unshare user namespace");
    if (!strcmp(a, "unshare-mount")) return verdict(unshare(CLONE_NEWNS), "unshare mount namespace");
    if (!strcmp(a, "clone-newuser")) {
        /* A raw clone with namespace flags, the path libc's unshare does not take. */
        long rc = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (rc == 0) _exit(0);
        if (rc > 0) waitpid(rc, NULL, 0);
        return verdict(rc, "clone with CLONE_NEWUSER");
    }
    if (!strcmp(a, "ptrace")) {
        pid_t target = argc > 2 ? atoi(argv[2]) : 1;
        return verdict(ptrace(PTRACE_ATTACH, target, 0, 0), "ptrace attach");
    }
    if (!strcmp(a, "kernel-module")) {
        int fd = open("/bin/probe", O_RDONLY);
        /* Any failure means no module was loaded. */
        return verdict(syscall(SYS_finit_module, fd, "", 0), "finit_module");
    }
    if (!strcmp(a, "write-proc-sys")) return verdict(write_file("/proc/sys/kernel/hostname", "pwned"), "write /proc/sys/kernel/hostname");
    if (!strcmp(a, "write-sys")) return verdict(write_file("/sys/kernel/uevent_helper", "/tmp/x"), "write /sys/kernel/uevent_helper");
    if (!strcmp(a, "read-kcore")) {
        int fd = open("/proc/kcore", O_RDONLY);
        if (fd < 0) return denied("open /proc/kcore");
        char buf[64];
        ssize_t n = read(fd, buf, sizeof buf);
        close(fd);
        if (n <= 0) { errno = n < 0 ? errno : 0; printf("DENIED read /proc/kcore: %zd bytes (masked)\n", n); return 0; }
        return allowed("read /proc/kcore");
    }
    if (!strcmp(a, "reboot")) return verdict(syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, 0), "reboot");
    if (!strcmp(a, "mknod")) return verdict(mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0)), "mknod block device");
    if (!strcmp(a, "sethostname")) return verdict(sethostname("pwned", 5), "sethostname");
    if (!strcmp(a, "raw-socket")) return verdict(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), "raw socket");
    if (!strcmp(a, "setuid")) return verdict(setuid(0), "setuid(0)");
    if (!strcmp(a, "euid")) {
        /* Run through a set-uid binary: no_new_privs must keep the caller's euid. */
        if (geteuid() == 0) return allowed("effective uid 0");
        printf("DENIED effective uid is %d\n", geteuid());
        return 0;
    }
    if (!strcmp(a, "write-rootfs")) return verdict(write_file("/bin/pwned", "x"), "write to the root filesystem");
    if (!strcmp(a, "keyctl")) return verdict(syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "pwned"), "keyctl");
    if (!strcmp(a, "bpf")) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.map_type = BPF_MAP_TYPE_ARRAY;
        attr.key_size = 4;
        attr.value_size = 4;
        attr.max_entries = 1;
        return verdict(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr), "bpf map create");
    }
    if (!strcmp(a, "perf-event-open")) {
        struct perf_event_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.type = PERF_TYPE_SOFTWARE;
        attr.size = sizeof attr;
        attr.config = PERF_COUNT_SW_CPU_CLOCK;
        return verdict(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0), "perf_event_open");
    }
    if (!strcmp(a, "clock-settime")) {
        struct timespec ts = {0, 0};
        return verdict(clock_settime(CLOCK_REALTIME, &ts), "clock_settime");
    }
    if (!strcmp(a, "swapon")) return verdict(swapon("/tmp/swap", 0), "swapon");
    if (!strcmp(a, "open-by-handle")) return verdict(syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, O_RDONLY), "open_by_handle_at");
    if (!strcmp(a, "kill")) {
        /* Signal a PID given on the command line (another instance's host PID). */
        pid_t target = argc > 2 ? atoi(argv[2]) : 1;
        return verdict(kill(target, 0), "signal another process");
    }
    if (!strcmp(a, "read")) {
        /* Read a path given on the command line (another instance's file). */
        const char *path = argc > 2 ? argv[2] : "/etc/shadow";
        int fd = open(path, O_RDONLY);
        if (fd < 0) return denied(path);
        close(fd);
        return allowed(path);
    }
    if (!strcmp(a, "fork-bomb")) {
        /* Fork until the pids limit stops us; report how many forks succeeded. */
        static pid_t children[100000];
        int n = 0;
        for (int i = 0; i < 100000; i++) {
            pid_t p = fork();
            if (p < 0) break;
            if (p == 0) { pause(); _exit(0); }
            children[n++] = p;
        }
        int err = errno;
        for (int i = 0; i < n; i++) kill(children[i], SIGKILL);
        for (int i = 0; i < n; i++) waitpid(children[i], NULL, 0);
        printf("forked %d before: %s\n", n, strerror(err));
        return n < 100000 ? 0 : 1;
    }
    if (!strcmp(a, "hog")) {
        /* Touch memory until the memory limit ends us. */
        size_t mb = argc > 2 ? (size_t)atoi(argv[2]) : 4096;
        for (size_t i = 0; i < mb; i++) {
            char *p = malloc(1 << 20);
            if (!p) return denied("malloc");
            memset(p, 1, 1 << 20);
        }
        return allowed("allocate memory beyond the limit");
    }
    if (!strcmp(a, "connect") && argc > 3)
        return verdict(tcp_connect(argv[2], atoi(argv[3]), 2000), "tcp connect");
    if (!strcmp(a, "serve") && argc > 2) return serve(argc - 2, argv + 2);
    if (!strcmp(a, "udp-send") && argc > 5) return udp_send(argv[2], argv[3], atoi(argv[4]), argv[5]);
    if (!strcmp(a, "hammer") && argc > 4) {
        /* Connects to ip:port every 20 ms for the given seconds; prints attempts and
         * connections made. Exit 1 when any connection was made. */
        time_t end = time(NULL) + atoi(argv[4]);
        long tries = 0, made = 0;
        while (time(NULL) < end) {
            tries++;
            if (tcp_connect(argv[2], atoi(argv[3]), 200) == 0) made++;
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        printf("attempts %ld connections %ld\n", tries, made);
        return made ? 1 : 0;
    }
    if (!strcmp(a, "packet-socket")) return verdict(socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ARP)), "packet socket (ARP)");
    if (!strcmp(a, "ip-transparent")) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        return verdict(setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one), "IP_TRANSPARENT (any source address)");
    }
    if (!strcmp(a, "sleep")) {
        for (;;) pause();
    }
    fprintf(stderr, "unknown attempt %s\n", a);
    return 2;
}
