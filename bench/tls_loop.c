/*
 * In-process OpenSSL workloads for the overhead benchmark (bench/run.sh).
 *
 * One thread drives both ends of one keep-alive TLS connection over a socketpair: the client and
 * the server are two SSL objects of the system's libssl (the library the observer and sslsniff
 * probe), and every message is written by one and read by the other at once, so the loop is
 * CPU-bound and free of scheduler wake-ups. Only the loop is timed, not the handshake. Both ends'
 * calls are probed and counted. Prints one JSON line.
 *
 *   tls_loop small ROUNDS CERT KEY   LLM-shaped small request/response pairs (chat completion)
 *   tls_loop small-tcp ROUNDS CERT KEY  the same between two processes over 127.0.0.1 TCP (the
 *                                    server is forked): each request waits for its response
 *   tls_loop sse   ROUNDS CERT KEY   LLM-shaped streams: ~200 KB of SSE in 2,000 events each
 *   tls_loop bulk  MIB    CERT KEY   a non-LLM download of MIB MiB in 16 KiB records
 *   tls_loop calls ROUNDS CERT KEY   a non-HTTP protocol: 64-byte messages both ways, timed after
 *                                    10 messages and a 0.5 s pause (time for a tracer to judge it)
 *
 * With SPAN_TIMES=path, the client appends the CLOCK_REALTIME nanoseconds at which it read the
 * end of each response, one per line (for the span delay measurement).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SSE_EVENTS 2000

/* SSL_read and SSL_write calls made, both ends together. */
static long ssl_calls;
static FILE *times;
static long pause_us;

/* The client has read a whole response: note when (CLOCK_REALTIME), then pause if asked. */
static void response_done(void) {
    if (times) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        fprintf(times, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
        fflush(times);
    }
    if (pause_us)
        usleep((useconds_t)pause_us);
}

static void die(const char *what) {
    fprintf(stderr, "tls_loop: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* CPU time of this process, user + system (uprobe traps and BPF programs count as system). */
static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void write_all(SSL *ssl, const char *buf, size_t len) {
    while (len > 0) {
        int n = SSL_write(ssl, buf, (int)len);
        ssl_calls++;
        if (n <= 0)
            die("SSL_write failed");
        buf += n;
        len -= (size_t)n;
    }
}

/* Reads exactly `len` bytes (several records when the writer split them). */
static void read_exact(SSL *ssl, size_t len) {
    static char buf[16384];
    while (len > 0) {
        int n = SSL_read(ssl, buf, len < sizeof buf ? (int)len : (int)sizeof buf);
        ssl_calls++;
        if (n <= 0)
            die("SSL_read failed");
        len -= (size_t)n;
    }
}

/* One message from `from` to `to`: written, then read, in this thread. */
static size_t send_message(SSL *from, SSL *to, const char *buf, size_t len) {
    write_all(from, buf, len);
    read_exact(to, len);
    return len;
}

static const char SMALL_REQUEST_BODY[] =
    "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}]}";
static const char SMALL_RESPONSE_BODY[] =
    "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,"
    "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"Hi!\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,"
    "\"completion_tokens\":2,\"total_tokens\":11}}";
static const char SSE_REQUEST_BODY[] =
    "{\"model\":\"gpt-4o-mini\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
    "\"messages\":[{\"role\":\"user\",\"content\":\"Write a long story\"}]}";
static const char SSE_EVENT[] =
    "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"}}]}\n\n";
static const char SSE_USAGE[] =
    "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2000,\"total_tokens\":2012}}\n\n"
    "data: [DONE]\n\n";

static size_t request(char *out, size_t cap, const char *body) {
    return (size_t)snprintf(out, cap,
                            "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
                            "Authorization: Bearer sk-bench\r\nContent-Type: application/json\r\n"
                            "Content-Length: %zu\r\n\r\n%s",
                            strlen(body), body);
}

static size_t run_small(SSL *client, SSL *server, long rounds) {
    char req[1024], resp[1024];
    size_t req_len = request(req, sizeof req, SMALL_REQUEST_BODY);
    size_t resp_len = (size_t)snprintf(resp, sizeof resp,
                                       "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                       "Content-Length: %zu\r\n\r\n%s",
                                       strlen(SMALL_RESPONSE_BODY), SMALL_RESPONSE_BODY);
    size_t bytes = 0;
    for (long i = 0; i < rounds; i++) {
        bytes += send_message(client, server, req, req_len);
        bytes += send_message(server, client, resp, resp_len);
        response_done();
    }
    return bytes;
}

static size_t run_sse(SSL *client, SSL *server, long rounds) {
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n";
    char req[1024], chunk[512], last[512];
    size_t req_len = request(req, sizeof req, SSE_REQUEST_BODY);
    size_t chunk_len = (size_t)snprintf(chunk, sizeof chunk, "%zx\r\n%s\r\n", sizeof SSE_EVENT - 1, SSE_EVENT);
    size_t last_len = (size_t)snprintf(last, sizeof last, "%zx\r\n%s\r\n0\r\n\r\n", sizeof SSE_USAGE - 1, SSE_USAGE);
    size_t bytes = 0;
    for (long i = 0; i < rounds; i++) {
        bytes += send_message(client, server, req, req_len);
        bytes += send_message(server, client, head, sizeof head - 1);
        for (int e = 0; e < SSE_EVENTS; e++)
            bytes += send_message(server, client, chunk, chunk_len);
        bytes += send_message(server, client, last, last_len);
        response_done();
    }
    return bytes;
}

static size_t run_bulk(SSL *client, SSL *server, long mib) {
    static const char get[] = "GET /backup.tar HTTP/1.1\r\nHost: files.internal\r\n\r\n";
    static char block[16384];
    char head[256];
    size_t head_len = (size_t)snprintf(head, sizeof head,
                                       "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                       "Content-Length: %ld\r\n\r\n", mib << 20);
    memset(block, 'x', sizeof block);
    size_t bytes = send_message(client, server, get, sizeof get - 1);
    bytes += send_message(server, client, head, head_len);
    for (long i = 0; i < (mib << 20) / (long)sizeof block; i++)
        bytes += send_message(server, client, block, sizeof block);
    return bytes;
}

/* A non-HTTP protocol: 64-byte messages both ways, timed once a tracer has had the time to judge
 * the connection from its first messages. */
static size_t run_calls(SSL *client, SSL *server, long rounds, double *start, double *cpu_start) {
    char msg[64];
    memset(msg, 'c', sizeof msg);
    for (int i = 0; i < 10; i++) {
        send_message(client, server, msg, sizeof msg);
        send_message(server, client, msg, sizeof msg);
    }
    usleep(500000);
    ssl_calls = 0;
    *start = now_s();
    *cpu_start = cpu_s();
    size_t bytes = 0;
    for (long i = 0; i < rounds; i++) {
        bytes += send_message(client, server, msg, sizeof msg);
        bytes += send_message(server, client, msg, sizeof msg);
    }
    return bytes;
}

/* small-tcp: client and server in two processes over a loopback TCP connection. The server
 * reads each request and writes its response; the client's wall time per request includes both
 * processes' work and the wake-ups between them, as a real keep-alive client's would. */
static size_t run_small_tcp(SSL_CTX *client_ctx, SSL_CTX *server_ctx, long rounds, double *start,
                            double *cpu_start) {
    char req[1024], resp[1024];
    size_t req_len = request(req, sizeof req, SMALL_REQUEST_BODY);
    size_t resp_len = (size_t)snprintf(resp, sizeof resp,
                                       "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                       "Content-Length: %zu\r\n\r\n%s",
                                       strlen(SMALL_RESPONSE_BODY), SMALL_RESPONSE_BODY);
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1) ||
        getsockname(listener, (struct sockaddr *)&addr, &alen))
        die("cannot listen on 127.0.0.1");
    pid_t server = fork();
    if (server == 0) {
        int fd = accept(listener, NULL, NULL);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        SSL *ssl = SSL_new(server_ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) != 1)
            die("server handshake");
        for (long i = 0; i < rounds; i++) {
            read_exact(ssl, req_len);
            write_all(ssl, resp, resp_len);
        }
        SSL_free(ssl);
        _exit(0);
    }
    close(listener);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr))
        die("connect");
    SSL *ssl = SSL_new(client_ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "api.openai.com");
    if (SSL_connect(ssl) != 1)
        die("client handshake");
    ssl_calls = 0;
    *start = now_s();
    *cpu_start = cpu_s();
    size_t bytes = 0;
    for (long i = 0; i < rounds; i++) {
        write_all(ssl, req, req_len);
        read_exact(ssl, resp_len);
        bytes += req_len + resp_len;
        response_done();
    }
    SSL_free(ssl);
    close(fd);
    int status = 0;
    waitpid(server, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("the server process failed");
    ssl_calls *= 2; /* the server made as many */
    return bytes;
}

/* Both handshakes, stepped in turn on the non-blocking pair. */
static void handshake(SSL *client, SSL *server) {
    int client_done = 0, server_done = 0;
    for (int step = 0; step < 1000 && !(client_done && server_done); step++) {
        if (!client_done) {
            int r = SSL_connect(client);
            if (r == 1)
                client_done = 1;
            else if (SSL_get_error(client, r) != SSL_ERROR_WANT_READ)
                die("client handshake");
        }
        if (!server_done) {
            int r = SSL_accept(server);
            if (r == 1)
                server_done = 1;
            else if (SSL_get_error(server, r) != SSL_ERROR_WANT_READ)
                die("server handshake");
        }
    }
    if (!(client_done && server_done))
        die("handshake did not finish");
}

static void report(const char *mode, long count, double elapsed, double cpu, size_t bytes);

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: tls_loop small|sse|bulk|calls COUNT CERT KEY\n");
        return 2;
    }
    const char *mode = argv[1];
    long count = atol(argv[2]);
    signal(SIGPIPE, SIG_IGN);

    /* A connected pair whose buffers hold the largest message, so that a write never waits. */
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds))
        die("socketpair");
    int size = 4 << 20;
    for (int i = 0; i < 2; i++) {
        setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
    }
    SSL_CTX *server_ctx = SSL_CTX_new(TLS_server_method());
    if (!server_ctx || SSL_CTX_use_certificate_chain_file(server_ctx, argv[3]) != 1 ||
        SSL_CTX_use_PrivateKey_file(server_ctx, argv[4], SSL_FILETYPE_PEM) != 1)
        die("server certificate");
    SSL_CTX *client_ctx = SSL_CTX_new(TLS_client_method());
    const char *times_path = getenv("SPAN_TIMES");
    times = times_path ? fopen(times_path, "a") : NULL;
    pause_us = getenv("PAUSE_US") ? atol(getenv("PAUSE_US")) : 0;
    if (!strcmp(mode, "small-tcp")) {
        double start, cpu_start;
        size_t bytes = run_small_tcp(client_ctx, server_ctx, count, &start, &cpu_start);
        report(mode, count, now_s() - start, cpu_s() - cpu_start, bytes);
        return 0;
    }
    SSL *client = SSL_new(client_ctx), *server = SSL_new(server_ctx);
    SSL_set_fd(client, fds[0]);
    SSL_set_fd(server, fds[1]);
    SSL_set_tlsext_host_name(client, "api.openai.com");
    handshake(client, server);
    ssl_calls = 0;
    double start = now_s(), cpu_start = cpu_s();
    size_t bytes;
    if (!strcmp(mode, "small"))
        bytes = run_small(client, server, count);
    else if (!strcmp(mode, "sse"))
        bytes = run_sse(client, server, count);
    else if (!strcmp(mode, "bulk"))
        bytes = run_bulk(client, server, count);
    else if (!strcmp(mode, "calls"))
        bytes = run_calls(client, server, count, &start, &cpu_start);
    else
        die("unknown mode");
    double elapsed = now_s() - start, cpu = cpu_s() - cpu_start;
    SSL_free(client);
    SSL_free(server);
    report(mode, count, elapsed, cpu, bytes);
    return 0;
}

static void report(const char *mode, long count, double elapsed, double cpu, size_t bytes) {
    printf("{\"mode\":\"%s\",\"count\":%ld,\"seconds\":%.6f,\"cpu_seconds\":%.6f,\"ssl_calls\":%ld,"
           "\"bytes\":%zu,\"cpu_us_per_call\":%.3f}\n",
           mode, count, elapsed, cpu, ssl_calls, bytes, cpu * 1e6 / (double)ssl_calls);
}
