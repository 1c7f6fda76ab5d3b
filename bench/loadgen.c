/* rpoguard bench: FastAGI load generator playing Asterisk's res_agi. Written for rpoguard's benchmarks. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_SIZE 8192
#define OUT_SIZE 4096
#define MAX_NUM 32

enum { FREE = 0, CONNECTING, SENDING, READING };
enum { OK_DONE = 0, OK_FAILURE, ERR_CONNECT, ERR_RESET, ERR_TIMEOUT, ERR_PROTOCOL, N_OUTCOMES };
static const char *outcome_names[] = {"done", "failure", "connect_error", "reset", "timeout", "protocol_error"};

typedef struct {
    int fd, state, decision, has_id, sets, record;
    int64_t t_sched, t_start;
    size_t out_len, out_off, in_len;
    int line_ends[64];
    int n_lines, line_at;
    char out[OUT_SIZE];
    char in[IN_SIZE];
} slot_t;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static slot_t *slots;
static int *free_stack, free_top, max_inflight, inflight, ep, per_line = 1;
static struct sockaddr_in addr;
static char *tmpl; static size_t tmpl_len;
static char **numbers; static int n_numbers, next_number;
static int64_t measure_start, measure_stop, timeout_ns;
static long counts[N_OUTCOMES], allow, block, nodecision, with_id, total_sets, completed_in_window;
static long started, dropped, recorded, finished_total;
static int64_t *lat, *svc; static long lat_cap;
static unsigned long uniq = 1;
static const char *decision_var = "RPOGUARD_DECISION", *id_var = "RPOGUARD_ID";

static void finish(slot_t *s, int outcome) {
    int64_t t = now_ns();
    if (outcome == OK_DONE || outcome == OK_FAILURE) {
        /* run_agi's end: AGISIGHUP unset, so "HANGUP" goes to the socket before it is closed. */
        send(s->fd, "HANGUP\n", 7, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    close(s->fd);
    finished_total++;
    if (t >= measure_start && t < measure_stop) completed_in_window++;
    if (s->record) {
        counts[outcome]++;
        if (outcome == OK_DONE) {
            if (s->decision == 1) allow++; else if (s->decision == 2) block++; else nodecision++;
            if (s->has_id) with_id++;
            total_sets += s->sets;
        }
        if (recorded < lat_cap) { lat[recorded] = t - s->t_sched; svc[recorded] = t - s->t_start; recorded++; }
    }
    s->state = FREE;
    inflight--;
    free_stack[free_top++] = (int)(s - slots);
}

static int send_pending(slot_t *s) {
    /* Returns 1 when everything is written, 0 to wait for EPOLLOUT, -1 on error. */
    while (s->out_off < s->out_len) {
        size_t end = s->out_len;
        if (per_line && s->line_at < s->n_lines) end = (size_t)s->line_ends[s->line_at];
        if (end <= s->out_off) { s->line_at++; continue; }
        ssize_t n = send(s->fd, s->out + s->out_off, end - s->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -1;
        }
        s->out_off += (size_t)n;
        if (per_line && s->out_off >= end) s->line_at++;
    }
    return 1;
}

static void build_env(slot_t *s) {
    const char *num = numbers[next_number];
    next_number = (next_number + 1) % n_numbers;
    char uid[32];
    int ul = snprintf(uid, sizeof uid, "1764300000.%lu", uniq++);
    size_t o = 0, nl = strlen(num);
    s->n_lines = 0;
    for (size_t i = 0; i < tmpl_len; i++) {
        char c = tmpl[i];
        if (c == 1) { memcpy(s->out + o, uid, (size_t)ul); o += (size_t)ul; }
        else if (c == 2) { memcpy(s->out + o, num, nl); o += nl; }
        else {
            s->out[o++] = c;
            if (c == '\n' && s->n_lines < 64) s->line_ends[s->n_lines++] = (int)o;
        }
    }
    s->out_len = o; s->out_off = 0; s->line_at = 0;
}

static void start_session(int64_t t_sched) {
    if (free_top == 0) { dropped++; return; }
    slot_t *s = &slots[free_stack[--free_top]];
    inflight++;
    started++;
    s->t_sched = t_sched;
    s->t_start = now_ns();
    s->record = t_sched >= measure_start && t_sched < measure_stop;
    s->decision = 0; s->has_id = 0; s->sets = 0; s->in_len = 0;
    build_env(s);
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) { perror("socket"); exit(3); }
    int r = connect(s->fd, (struct sockaddr *)&addr, sizeof addr);
    struct epoll_event ev = {0};
    ev.data.u32 = (uint32_t)(s - slots);
    if (r == 0) {
        s->state = SENDING;
        int w = send_pending(s);
        if (w < 0) { finish(s, ERR_CONNECT); return; }
        if (w == 1) s->state = READING;
        ev.events = EPOLLIN | (w == 1 ? 0 : EPOLLOUT);
    } else if (errno == EINPROGRESS) {
        s->state = CONNECTING;
        ev.events = EPOLLIN | EPOLLOUT;
    } else {
        finish(s, ERR_CONNECT);
        return;
    }
    if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) { perror("epoll_ctl"); exit(3); }
}

static void answer(slot_t *s, char *line) {
    /* What res_agi answers to the commands a gate uses. */
    const char *reply = "510 Invalid or unknown command\n";
    if (strncasecmp(line, "SET VARIABLE ", 13) == 0) {
        char *name = line + 13;
        while (*name == ' ') name++;
        char *sp = strchr(name, ' ');
        if (sp) {
            *sp = 0;
            char *value = sp + 1;
            while (*value == ' ') value++;
            if (*value == '"') value++;
            size_t vl = strlen(value);
            if (vl && value[vl - 1] == '"') value[--vl] = 0;
            if (strcmp(name, decision_var) == 0) {
                if (strcmp(value, "ALLOW") == 0) s->decision = 1;
                else if (strcmp(value, "BLOCK") == 0) s->decision = 2;
            } else if (strcmp(name, id_var) == 0 && vl > 0) {
                s->has_id = 1;
            }
            reply = "200 result=1\n";
        } else {
            reply = "520 Invalid command syntax.  Proper usage not available.\n";
        }
        s->sets++;
    } else if (strncasecmp(line, "EXEC MSet ", 10) == 0) {
        /* The gate's variables in one command (AgiSession.set_variables); MSet answers 0. */
        const char *id = strstr(line, id_var);
        if (id && id[strlen(id_var)] == '=' && id[strlen(id_var) + 1] != ',' && id[strlen(id_var) + 1] != '"')
            s->has_id = 1;
        /* The check route sends the decision in the same MSet, last (routes/check.py). MSet values never hold
           '=', so the name cannot appear inside another variable's value. */
        const char *d = strstr(line, decision_var);
        if (d && d[strlen(decision_var)] == '=') {
            const char *v = d + strlen(decision_var) + 1;
            int ends = v[5] == ',' || v[5] == '"' || v[5] == 0;
            if (strncmp(v, "ALLOW", 5) == 0 && ends) s->decision = 1;
            else if (strncmp(v, "BLOCK", 5) == 0 && ends) s->decision = 2;
        }
        reply = "200 result=0\n";
        s->sets++;
    } else if (strncasecmp(line, "GET VARIABLE ", 13) == 0) {
        reply = "200 result=0\n";
    } else if (strncasecmp(line, "NOOP", 4) == 0 || strncasecmp(line, "VERBOSE", 7) == 0) {
        reply = "200 result=0\n";
    }
    if (send(s->fd, reply, strlen(reply), MSG_NOSIGNAL) < 0 && errno != EAGAIN) { finish(s, ERR_RESET); }
}

static void on_readable(slot_t *s) {
    for (;;) {
        ssize_t n = recv(s->fd, s->in + s->in_len, IN_SIZE - 1 - s->in_len, 0);
        if (n == 0) { finish(s, OK_DONE); return; }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            finish(s, ERR_RESET);
            return;
        }
        s->in_len += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < s->in_len; i++) {
            if (s->in[i] != '\n') continue;
            s->in[i] = 0;
            if (i > start && s->in[i - 1] == '\r') s->in[i - 1] = 0;
            char *line = s->in + start;
            start = i + 1;
            if (strncasecmp(line, "failure", 7) == 0) { finish(s, OK_FAILURE); return; }
            answer(s, line);
            if (s->state == FREE) return;
        }
        if (start) { memmove(s->in, s->in + start, s->in_len - start); s->in_len -= start; }
        if (s->in_len >= IN_SIZE - 1) { finish(s, ERR_PROTOCOL); return; }
    }
}

static int load_lines(const char *path, char ***out) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); exit(2); }
    int cap = 1024, n = 0;
    char **v = malloc(sizeof(char *) * (size_t)cap);
    char buf[256];
    while (fgets(buf, sizeof buf, f)) {
        size_t l = strcspn(buf, "\r\n");
        if (!l || l >= MAX_NUM) continue;
        buf[l] = 0;
        if (n == cap) { cap *= 2; v = realloc(v, sizeof(char *) * (size_t)cap); }
        v[n++] = strdup(buf);
    }
    fclose(f);
    *out = v;
    return n;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    char *buf = malloc(OUT_SIZE);
    *len = fread(buf, 1, OUT_SIZE - 64, f);
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *numbers_path = NULL, *tmpl_path = NULL, *lat_path = NULL;
    int port = 4573, concurrency = 0;
    double rate = 0, duration = 5, warmup = 1, timeout_s = 10;
    max_inflight = 4096;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--concurrency")) concurrency = atoi(v);
        else if (!strcmp(k, "--rate")) rate = atof(v);
        else if (!strcmp(k, "--duration")) duration = atof(v);
        else if (!strcmp(k, "--warmup")) warmup = atof(v);
        else if (!strcmp(k, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(k, "--max-inflight")) max_inflight = atoi(v);
        else if (!strcmp(k, "--numbers")) numbers_path = v;
        else if (!strcmp(k, "--template")) tmpl_path = v;
        else if (!strcmp(k, "--latencies")) lat_path = v;
        else if (!strcmp(k, "--env-writes")) per_line = strcmp(v, "one") != 0;
        else if (!strcmp(k, "--decision-var")) decision_var = v;
        else if (!strcmp(k, "--id-var")) id_var = v;
        else { fprintf(stderr, "unknown option %s\n", k); return 2; }
    }
    if (!numbers_path || !tmpl_path || (concurrency <= 0) == (rate <= 0)) {
        fprintf(stderr, "usage: loadgen --numbers FILE --template FILE (--concurrency N | --rate R) ...\n");
        return 2;
    }
    n_numbers = load_lines(numbers_path, &numbers);
    if (n_numbers == 0) { fprintf(stderr, "no numbers in %s\n", numbers_path); return 2; }
    tmpl = read_file(tmpl_path, &tmpl_len);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "bad host %s\n", host); return 2; }
    if (concurrency > max_inflight) max_inflight = concurrency;
    slots = calloc((size_t)max_inflight, sizeof(slot_t));
    free_stack = malloc(sizeof(int) * (size_t)max_inflight);
    for (int i = max_inflight - 1; i >= 0; i--) free_stack[free_top++] = i;
    double expect = (rate > 0 ? rate : 20000.0) * (duration + 1) * 1.5 + 1000;
    lat_cap = (long)expect;
    lat = malloc(sizeof(int64_t) * (size_t)lat_cap);
    svc = malloc(sizeof(int64_t) * (size_t)lat_cap);
    ep = epoll_create1(EPOLL_CLOEXEC);
    timeout_ns = (int64_t)(timeout_s * 1e9);

    int64_t t0 = now_ns();
    measure_start = t0 + (int64_t)(warmup * 1e9);
    measure_stop = measure_start + (int64_t)(duration * 1e9);
    int64_t interval = rate > 0 ? (int64_t)(1e9 / rate) : 0, next = t0, last_scan = t0;
    double cpu_at_start = -1, cpu_at_stop = -1;
    long started_at_start = 0, started_at_stop = 0;
    int max_seen = 0;
    struct epoll_event events[256];
    for (;;) {
        int64_t now = now_ns();
        if (cpu_at_start < 0 && now >= measure_start) { cpu_at_start = cpu_s(); started_at_start = started; }
        if (cpu_at_stop < 0 && now >= measure_stop) { cpu_at_stop = cpu_s(); started_at_stop = started; }
        if (now < measure_stop) {
            if (concurrency > 0) {
                while (inflight < concurrency) start_session(now);
            } else {
                while (next <= now) { start_session(next); next += interval; }
            }
        } else if (inflight == 0 || now > measure_stop + timeout_ns + 1000000000LL) {
            break;
        }
        if (inflight > max_seen) max_seen = inflight;
        int64_t wait = 100000000LL;
        if (rate > 0 && now < measure_stop) wait = next - now_ns();
        if (wait < 0) wait = 0;
        struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
        int n = epoll_pwait2(ep, events, 256, &ts, NULL);
        for (int i = 0; i < n; i++) {
            slot_t *s = &slots[events[i].data.u32];
            uint32_t e = events[i].events;
            if (s->state == CONNECTING) {
                int err = 0; socklen_t el = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) { finish(s, ERR_CONNECT); continue; }
                s->state = SENDING;
            }
            if (s->state == SENDING && (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                int w = send_pending(s);
                if (w < 0) { finish(s, ERR_RESET); continue; }
                if (w == 1) {
                    s->state = READING;
                    struct epoll_event ev = {0};
                    ev.events = EPOLLIN;
                    ev.data.u32 = events[i].data.u32;
                    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                }
            }
            if (s->state != FREE && (e & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(s);
        }
        now = now_ns();
        if (now - last_scan > 100000000LL) {
            last_scan = now;
            for (int i = 0; i < max_inflight; i++)
                if (slots[i].state != FREE && now - slots[i].t_start > timeout_ns) finish(&slots[i], ERR_TIMEOUT);
        }
    }
    if (cpu_at_stop < 0) { cpu_at_stop = cpu_s(); started_at_stop = started; }
    if (cpu_at_start < 0) cpu_at_start = cpu_at_stop;
    if (lat_path) {
        FILE *f = fopen(lat_path, "wb");
        if (!f) { perror(lat_path); return 2; }
        fwrite(lat, sizeof(int64_t), (size_t)recorded, f);
        fwrite(svc, sizeof(int64_t), (size_t)recorded, f);
        fclose(f);
    }
    printf("{\"window_s\": %.6f, \"completed_in_window\": %ld, \"recorded\": %ld, \"started_in_window\": %ld,"
           " \"dropped\": %ld, \"max_inflight\": %d, \"allow\": %ld, \"block\": %ld, \"no_decision\": %ld,"
           " \"with_id\": %ld, \"set_variables\": %ld, \"cpu_s\": %.6f, \"total\": %ld, \"outcomes\": {",
           duration, completed_in_window, recorded, started_at_stop - started_at_start, dropped, max_seen,
           allow, block, nodecision, with_id, total_sets, cpu_at_stop - cpu_at_start, finished_total);
    for (int i = 0; i < N_OUTCOMES; i++) printf("%s\"%s\": %ld", i ? ", " : "", outcome_names[i], counts[i]);
    printf("}}\n");
    return 0;
}
