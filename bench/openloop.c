/* A fixed-rate (open-loop) HTTP/1.1 POST load generator: request i leaves at t0 + i/rate.
 *
 *   openloop HOST PORT PATH RATE SECONDS TEMPLATE_FILE WARM_CONNECTIONS [DRAIN_SECONDS [MAX_CONNECTIONS]]
 *
 * Why C: the Python asyncio generator shares the machine's cores with the server under test and
 * its own event-loop jitter lands in the latencies it reports. Here one thread, epoll and an
 * absolute timerfd keep the schedule to within tens of microseconds.
 *
 * Latency is measured from a request's SCHEDULED send time to the last byte of its response, so a
 * server that stalls is charged for every request scheduled while it stalled (no coordinated
 * omission, like wrk2's corrected latency). When the generator itself sends more than 1 ms late,
 * that is counted (late_sends, max_late_us): it is the generator's fault, not the server's.
 *
 * TEMPLATE_FILE holds the body with one or more @@RUN_ID@@ markers; every marker of request i gets
 * the same fresh uuid-shaped id: a random per-run nonce plus the request counter, unique per
 * request and per run (as bench/wrk_fresh_runs.lua does).
 *
 * Connections: keep-alive, one request at a time each; idle ones in a LIFO pool; a new one is
 * opened whenever none is idle (up to MAX_CONNECTIONS open; a request that finds the cap reached
 * is an error). One idle for 4 s or more is closed rather than reused: uvicorn closes keep-alive
 * connections idle for 5 s, and racing that close would be an error of our own making.
 *
 * Output: one line `OPENLOOP_JSON {...}` on stdout. Linux only, libc only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MARKER "@@RUN_ID@@"
#define ID_LEN 36
#define IDLE_REUSE_NS 4000000000LL /* uvicorn's keep-alive timeout is 5 s */
#define LATE_NS 1000000LL
#define MAX_STATUS 1000
#define MAX_REQUESTS 20000000LL

enum state { ST_FREE, ST_CONNECTING, ST_WRITING, ST_READING, ST_IDLE };

struct conn {
    int fd; /* -1 once closed; the struct is freed after the current epoll batch */
    enum state state;
    int64_t scheduled; /* of the request in flight, -1 when none */
    int64_t last_used;
    char *out; /* this connection's own copy of the request; ids patched in per request */
    size_t out_off;
    char *in;
    size_t in_len, in_cap;
    int want_out; /* EPOLLOUT currently in the epoll mask */
    struct conn *prev, *next; /* idle list (LIFO: push and pop at the head); dead list */
};

static int epfd;
static struct addrinfo *addr;
static char *request; /* head + body, markers to be overwritten per request */
static size_t request_len;
static size_t *id_offsets;
static size_t n_ids;
static uint32_t nonce_a, nonce_b, nonce_c;

static struct conn *idle_head, *dead_head;
static int64_t open_conns, max_open_seen, conns_opened, max_conns = 2000;
static int64_t in_flight;

static int64_t *latencies;
static int64_t n_lat;
static int64_t statuses[MAX_STATUS];
static int64_t sent, completed, duplicates;
static int64_t err_connect, err_cap, err_closed, err_parse, err_timeout;
static int64_t late_sends, max_late;
static int64_t last_completion;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void idle_remove(struct conn *c) {
    if (c->prev) c->prev->next = c->next; else idle_head = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void idle_push(struct conn *c) {
    c->state = ST_IDLE;
    c->prev = NULL;
    c->next = idle_head;
    if (idle_head) idle_head->prev = c;
    idle_head = c;
}

/* Closes now; frees after the epoll batch, whose later events may still name this conn. */
static void conn_close(struct conn *c) {
    if (c->state == ST_IDLE) idle_remove(c);
    if (c->scheduled >= 0) in_flight--;
    c->scheduled = -1;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = ST_FREE;
    open_conns--;
    c->next = dead_head;
    dead_head = c;
}

static void free_dead(void) {
    while (dead_head) {
        struct conn *c = dead_head;
        dead_head = c->next;
        free(c->in);
        free(c->out);
        free(c);
    }
}

static void set_out(struct conn *c, int on) {
    if (c->want_out == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->want_out = on;
}

/* A new non-blocking connection, or NULL (counted as the caller's error). */
static struct conn *conn_open(int blocking_connect) {
    int fd = socket(addr->ai_family, SOCK_STREAM | SOCK_CLOEXEC | (blocking_connect ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0) return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, addr->ai_addr, addr->ai_addrlen);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        return NULL;
    }
    if (blocking_connect) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct conn *c = calloc(1, sizeof *c);
    if (!c) die("calloc");
    c->fd = fd;
    c->scheduled = -1;
    c->state = rc == 0 ? ST_FREE : ST_CONNECTING;
    c->in_cap = 4096;
    c->in = malloc(c->in_cap);
    c->out = malloc(request_len);
    if (!c->in || !c->out) die("malloc");
    memcpy(c->out, request, request_len);
    c->want_out = rc != 0;
    struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
    open_conns++;
    conns_opened++;
    if (open_conns > max_open_seen) max_open_seen = open_conns;
    return c;
}

/* Writes what is left of the request; reads the response once it is all out. */
static void conn_write(struct conn *c) {
    while (c->out_off < request_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, request_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_out(c, 1);
                return;
            }
            err_closed++;
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    set_out(c, 0);
    c->state = ST_READING;
}

static void fill_id(struct conn *c, int64_t i) {
    char id[ID_LEN + 1];
    /* uuid4 layout (version 4, variant 8): 72 random bits per run, a 48-bit request counter. */
    snprintf(id, sizeof id, "%08" PRIx32 "-%04" PRIx32 "-4%03" PRIx32 "-8%03" PRIx32 "-%012" PRIx64,
             nonce_a, nonce_b & 0xffff, (nonce_b >> 16) & 0xfff, nonce_c & 0xfff,
             (uint64_t)((uint64_t)i & 0xffffffffffffULL));
    for (size_t k = 0; k < n_ids; k++) memcpy(c->out + id_offsets[k], id, ID_LEN);
}

static void send_request(int64_t i, int64_t scheduled) {
    int64_t t = now_ns();
    int64_t late = t - scheduled;
    if (late > LATE_NS) late_sends++;
    if (late > max_late) max_late = late;
    sent++;
    struct conn *c = NULL;
    while (idle_head) {
        struct conn *cand = idle_head;
        idle_remove(cand);
        cand->state = ST_FREE;
        if (t - cand->last_used < IDLE_REUSE_NS) {
            c = cand;
            break;
        }
        conn_close(cand);
    }
    if (!c) {
        if (open_conns >= max_conns) {
            err_cap++;
            return;
        }
        c = conn_open(0);
        if (!c) {
            err_connect++;
            return;
        }
    }
    c->scheduled = scheduled;
    in_flight++;
    c->in_len = 0;
    c->out_off = 0;
    fill_id(c, i);
    if (c->state == ST_CONNECTING) return; /* written once the connection is up */
    c->state = ST_WRITING;
    conn_write(c);
}

static void on_connected(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        if (c->scheduled >= 0) err_connect++;
        conn_close(c);
        return;
    }
    c->state = ST_WRITING;
    conn_write(c);
}

/* 1: a whole response is in c->in; 0: need more; -1: malformed. */
static int parse_response(struct conn *c, int *status, int *close_after, int *duplicate) {
    const char *hend = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!hend) return c->in_len > 65536 ? -1 : 0;
    const char *end = hend + 4;
    if (c->in_len < 12 || memcmp(c->in, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(c->in + 9);
    long long length = -1;
    int chunked = 0;
    *close_after = 0;
    for (const char *line = memchr(c->in, '\n', (size_t)(hend - c->in)); line && line < hend;
         line = memchr(line + 1, '\n', (size_t)(hend - line))) {
        const char *h = line + 1;
        size_t room = (size_t)(end - h);
        if (room > 15 && strncasecmp(h, "content-length:", 15) == 0) length = atoll(h + 15);
        else if (room > 18 && strncasecmp(h, "transfer-encoding:", 18) == 0) {
            const char *eol = memchr(h, '\r', room);
            if (memmem(h, (size_t)(eol - h), "chunked", 7)) chunked = 1;
        } else if (room > 17 && strncasecmp(h, "connection:", 11) == 0 && strncasecmp(h + 11, " close", 6) == 0)
            *close_after = 1;
    }
    size_t head = (size_t)(end - c->in);
    size_t body_len;
    if (chunked) {
        /* Responses here are small: the body is whole when the last chunk is in. */
        if (c->in_len - head < 5 || memcmp(c->in + c->in_len - 5, "0\r\n\r\n", 5) != 0) return 0;
        body_len = c->in_len - head;
    } else if (length >= 0) {
        if (c->in_len - head < (size_t)length) return 0;
        body_len = (size_t)length;
    } else {
        return -1; /* no framing: a server closing to end the body is not what we measure */
    }
    *duplicate = memmem(end, body_len, "\"duplicate\":true", 16) != NULL ||
                 memmem(end, body_len, "\"duplicate\": true", 17) != NULL;
    return 1;
}

static void on_readable(struct conn *c) {
    if (c->state == ST_CONNECTING) { /* refused: EPOLLERR/EPOLLHUP without EPOLLOUT */
        on_connected(c);
        return;
    }
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            c->in_cap *= 2;
            c->in = realloc(c->in, c->in_cap);
            if (!c->in) die("realloc");
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            /* EOF or reset: an error for the request in flight, if any (an idle close is normal). */
            if (c->scheduled >= 0) err_closed++;
            conn_close(c);
            return;
        }
        if (n < 0) return;
        c->in_len += (size_t)n;
        if (c->scheduled < 0) { /* bytes nobody asked for */
            conn_close(c);
            return;
        }
        int status = 0, close_after = 0, duplicate = 0;
        int rc = parse_response(c, &status, &close_after, &duplicate);
        if (rc == 0) continue;
        if (rc < 0) {
            err_parse++;
            conn_close(c);
            return;
        }
        int64_t t = now_ns();
        latencies[n_lat++] = t - c->scheduled;
        last_completion = t;
        completed++;
        statuses[status > 0 && status < MAX_STATUS ? status : 0]++;
        duplicates += duplicate;
        c->scheduled = -1;
        in_flight--;
        c->in_len = 0;
        /* An answer before the whole request went out (e.g. a 413) leaves the stream unusable. */
        if (close_after || c->out_off < request_len) {
            conn_close(c);
        } else {
            c->last_used = t;
            idle_push(c);
        }
        return;
    }
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t pct(double q) {
    if (n_lat == 0) return -1;
    int64_t k = (int64_t)(q * (double)n_lat);
    if (k >= n_lat) k = n_lat - 1;
    return latencies[k] / 1000;
}

static void load_template(const char *path, const char *host, const char *port, const char *url_path) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) die("read template");
    fclose(f);
    text[size] = 0;
    size_t mlen = strlen(MARKER);
    /* Body length after substitution: each marker becomes a 36-character id. */
    size_t markers = 0;
    for (char *p = strstr(text, MARKER); p; p = strstr(p + mlen, MARKER)) markers++;
    if (markers == 0) {
        fprintf(stderr, "openloop: %s has no %s marker: every request would be a duplicate\n", path, MARKER);
        exit(2);
    }
    size_t body_len = (size_t)size - markers * mlen + markers * ID_LEN;
    char head[4096];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n", url_path, host, port, body_len);
    if (hl <= 0 || (size_t)hl >= sizeof head) {
        fprintf(stderr, "openloop: path too long\n");
        exit(2);
    }
    request_len = (size_t)hl + body_len;
    request = malloc(request_len);
    id_offsets = malloc(markers * sizeof *id_offsets);
    if (!request || !id_offsets) die("malloc");
    memcpy(request, head, (size_t)hl);
    size_t out = (size_t)hl;
    char *src = text;
    for (char *p = strstr(src, MARKER); p; p = strstr(src, MARKER)) {
        memcpy(request + out, src, (size_t)(p - src));
        out += (size_t)(p - src);
        id_offsets[n_ids++] = out;
        memset(request + out, '0', ID_LEN);
        out += ID_LEN;
        src = p + mlen;
    }
    memcpy(request + out, src, strlen(src));
    free(text);
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s HOST PORT PATH RATE SECONDS TEMPLATE_FILE WARM_CONNECTIONS "
                        "[DRAIN_SECONDS [MAX_CONNECTIONS]]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *path = argv[3];
    double rate = atof(argv[4]), seconds = atof(argv[5]);
    int warm = atoi(argv[7]);
    double drain_s = argc > 8 ? atof(argv[8]) : 10.0;
    if (argc > 9) max_conns = atoll(argv[9]);
    if (rate <= 0 || seconds <= 0 || warm < 0 || max_conns <= 0) {
        fprintf(stderr, "openloop: RATE and SECONDS must be positive, WARM_CONNECTIONS >= 0\n");
        return 2;
    }
    int64_t total = (int64_t)(rate * seconds);
    if (total > MAX_REQUESTS) {
        fprintf(stderr, "openloop: %" PRId64 " requests is more than %lld\n", total, MAX_REQUESTS);
        return 2;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(host, port, &hints, &addr);
    if (gai != 0) {
        fprintf(stderr, "openloop: %s:%s: %s\n", host, port, gai_strerror(gai));
        return 2;
    }
    load_template(argv[6], host, port, path);
    uint32_t rnd[3];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) die("getrandom");
    nonce_a = rnd[0], nonce_b = rnd[1], nonce_c = rnd[2];
    latencies = malloc((size_t)(total > 0 ? total : 1) * sizeof *latencies);
    if (!latencies) die("malloc");

    epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epfd < 0 || tfd < 0) die("epoll/timerfd");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev) < 0) die("epoll_ctl timer");

    for (int k = 0; k < warm; k++) {
        struct conn *c = conn_open(1);
        if (!c) die("connect (warm connection)");
        c->last_used = now_ns();
        idle_push(c);
    }

    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    const int64_t t0 = now_ns() + 20000000LL; /* 20 ms: the first tick is on schedule too */
    const double interval = 1e9 / rate;
    int64_t next = 0;
    int64_t drain_deadline = -1;
    struct epoll_event events[256];
    int armed = 0;

    for (;;) {
        if (next < total && !armed) {
            int64_t at = t0 + (int64_t)((double)next * interval);
            struct itimerspec its = {.it_value = {.tv_sec = at / 1000000000LL, .tv_nsec = at % 1000000000LL}};
            if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
            armed = 1;
        }
        if (next >= total) {
            if (drain_deadline < 0) drain_deadline = now_ns() + (int64_t)(drain_s * 1e9);
            if (in_flight == 0) break;
        }
        int timeout_ms = -1;
        if (drain_deadline >= 0) {
            int64_t left = drain_deadline - now_ns();
            if (left <= 0) break;
            timeout_ms = (int)(left / 1000000LL) + 1;
        }
        int n = epoll_wait(epfd, events, 256, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = events[k].data.ptr;
            if (c == NULL) {
                uint64_t expirations;
                ssize_t r = read(tfd, &expirations, sizeof expirations);
                (void)r;
                armed = 0;
                int64_t t = now_ns();
                while (next < total) {
                    int64_t at = t0 + (int64_t)((double)next * interval);
                    if (at > t) break;
                    send_request(next, at);
                    next++;
                    t = now_ns();
                }
                continue;
            }
            if (c->fd < 0) continue; /* closed earlier in this batch */
            uint32_t ev = events[k].events;
            if (ev & EPOLLOUT) {
                if (c->state == ST_CONNECTING) on_connected(c);
                else if (c->state == ST_WRITING) conn_write(c);
                else set_out(c, 0);
            }
            if (c->fd >= 0 && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(c);
        }
        free_dead();
    }
    int64_t end = now_ns();
    err_timeout = in_flight;
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec)
                 + (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6
                 + (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    qsort(latencies, (size_t)n_lat, sizeof *latencies, cmp_i64);
    int64_t errors = err_connect + err_cap + err_closed + err_parse + err_timeout;
    printf("OPENLOOP_JSON {\"sent\": %" PRId64 ", \"completed\": %" PRId64 ", \"errors\": %" PRId64
           ", \"error_kinds\": {\"connect\": %" PRId64 ", \"connection_cap\": %" PRId64 ", \"closed\": %" PRId64
           ", \"bad_response\": %" PRId64 ", \"timeout\": %" PRId64 "}, \"statuses\": {",
           sent, completed, errors, err_connect, err_cap, err_closed, err_parse, err_timeout);
    int first = 1;
    for (int s = 0; s < MAX_STATUS; s++) {
        if (!statuses[s]) continue;
        printf("%s\"%d\": %" PRId64, first ? "" : ", ", s, statuses[s]);
        first = 0;
    }
    printf("}, \"duplicates\": %" PRId64 ", \"p50_us\": %" PRId64 ", \"p90_us\": %" PRId64 ", \"p99_us\": %" PRId64
           ", \"p999_us\": %" PRId64 ", \"max_us\": %" PRId64 ", \"duration_us\": %" PRId64
           ", \"client_cpu_s\": %.3f, \"late_sends\": %" PRId64 ", \"max_late_us\": %" PRId64
           ", \"connections_opened\": %" PRId64 ", \"max_open\": %" PRId64 "}\n",
           duplicates, pct(0.50), pct(0.90), pct(0.99), pct(0.999), n_lat ? latencies[n_lat - 1] / 1000 : -1,
           ((last_completion > 0 ? last_completion : end) - t0) / 1000, cpu, late_sends, max_late / 1000,
           conns_opened, max_open_seen);
    return 0;
}
