// SPDX-License-Identifier: Apache-2.0
/*
 * flowgen: the traffic and map generator of the stack benchmark (benches/stack/run.sh).
 *
 * One small program instead of iperf3 or netperf because the benchmark needs what they do
 * not give: every UDP packet a 5-tuple of its own (so that neither netfilter's conntrack
 * nor policyc's can answer from an earlier packet and every packet pays the rule lookup),
 * TCP connections opened and torn down as fast as possible with their latency recorded,
 * the arrival time of the first packet after a rule change, and bpf() maps filled and
 * emptied with a stopwatch. Every mode is bounded in time and in count, and every address
 * it sends to is given on the command line: the driver only passes addresses of the
 * benchmark's own network namespaces.
 *
 *   flowgen udp    --src A --dst A --dst-count N --port P --seconds S --max N
 *                  [--offset N] [--rate PPS]
 *   flowgen server --port P --seconds S                (TCP echo on P, UDP socket on P)
 *   flowgen crr    --dst A --dst-count N --port P --seconds S --max N --conns C
 *   flowgen rr     --dst A --port P --seconds S --max N
 *   flowgen first  --port P --seconds S                (first UDP datagram on P)
 *   flowgen map    --type hash|lru|lpm --key B --value B --entries N [--no-prealloc]
 *
 * Results are one line of key=value pairs on stdout; errors go to stderr with exit 1.
 * Times are CLOCK_MONOTONIC, which every network namespace shares, so the driver can
 * compare them with its own clock.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Source ports used for UDP tuples: 1024-65535. */
#define PORT_FIRST 1024
#define PORT_COUNT 64512
/* Datagrams per sendmmsg call. */
#define BATCH 32
/* Bytes of UDP payload: small packets, so that the per-packet cost dominates. */
#define PAYLOAD 18
/* A connection that has not finished its exchange by then counts as failed. */
#define CONN_TIMEOUT_NS 2000000000ULL
/* Connections a crr run keeps open at once, at most. */
#define CONNS_MAX 1024

struct options {
	const char *mode;
	struct in_addr src;
	struct in_addr dst;
	uint32_t dst_count;
	uint16_t port;
	double seconds;
	uint64_t max;
	uint64_t offset;
	uint64_t rate;
	uint32_t conns;
	const char *map_type;
	uint32_t key;
	uint32_t value;
	uint32_t entries;
	int no_prealloc;
};

static void die(const char *what)
{
	fprintf(stderr, "flowgen: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(const char *why)
{
	fprintf(stderr, "flowgen: %s (see the comment at the top of flowgen.c)\n", why);
	exit(2);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct in_addr parse_addr(const char *text)
{
	struct in_addr addr;

	if (inet_pton(AF_INET, text, &addr) != 1)
		usage("not an IPv4 address");
	return addr;
}

static void parse(int argc, char **argv, struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->dst_count = 1;
	o->seconds = 1;
	o->max = 1000000;
	o->conns = 1;
	if (argc < 2)
		usage("no mode");
	o->mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *name = argv[i];
		const char *arg = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(name, "--no-prealloc")) {
			o->no_prealloc = 1;
			continue;
		}
		if (!arg)
			usage("an option lacks its value");
		i++;
		if (!strcmp(name, "--src"))
			o->src = parse_addr(arg);
		else if (!strcmp(name, "--dst"))
			o->dst = parse_addr(arg);
		else if (!strcmp(name, "--dst-count"))
			o->dst_count = (uint32_t)strtoul(arg, NULL, 10);
		else if (!strcmp(name, "--port"))
			o->port = (uint16_t)strtoul(arg, NULL, 10);
		else if (!strcmp(name, "--seconds"))
			o->seconds = strtod(arg, NULL);
		else if (!strcmp(name, "--max"))
			o->max = strtoull(arg, NULL, 10);
		else if (!strcmp(name, "--offset"))
			o->offset = strtoull(arg, NULL, 10);
		else if (!strcmp(name, "--rate"))
			o->rate = strtoull(arg, NULL, 10);
		else if (!strcmp(name, "--conns"))
			o->conns = (uint32_t)strtoul(arg, NULL, 10);
		else if (!strcmp(name, "--type"))
			o->map_type = arg;
		else if (!strcmp(name, "--key"))
			o->key = (uint32_t)strtoul(arg, NULL, 10);
		else if (!strcmp(name, "--value"))
			o->value = (uint32_t)strtoul(arg, NULL, 10);
		else if (!strcmp(name, "--entries"))
			o->entries = (uint32_t)strtoul(arg, NULL, 10);
		else
			usage("unknown option");
	}
	if (o->dst_count == 0 || o->conns == 0 || o->conns > CONNS_MAX)
		usage("--dst-count and --conns must be positive, --conns at most 1024");
	if (o->seconds <= 0 || o->seconds > 3600)
		usage("--seconds must be in (0, 3600]");
}

/* Internet checksum of an IPv4 header (RFC 1071). */
static uint16_t ip_checksum(const void *data, size_t len)
{
	const uint16_t *word = data;
	uint32_t sum = 0;

	for (; len > 1; len -= 2)
		sum += *word++;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

struct datagram {
	struct iphdr ip;
	struct udphdr udp;
	uint8_t payload[PAYLOAD];
} __attribute__((packed));

/*
 * Tuple number n: the source port moves fastest, then the destination address, so that
 * PORT_COUNT * dst_count datagrams go out before a tuple repeats.
 */
static void fill_datagram(struct datagram *d, struct sockaddr_in *to, const struct options *o,
                          uint64_t n, uint64_t sent_ns)
{
	uint32_t dst = ntohl(o->dst.s_addr) + (uint32_t)((n / PORT_COUNT) % o->dst_count);

	memset(d, 0, sizeof(*d));
	d->ip.version = 4;
	d->ip.ihl = 5;
	d->ip.ttl = 64;
	d->ip.protocol = IPPROTO_UDP;
	d->ip.tot_len = htons(sizeof(*d));
	d->ip.saddr = o->src.s_addr;
	d->ip.daddr = htonl(dst);
	d->ip.check = ip_checksum(&d->ip, sizeof(d->ip));
	d->udp.source = htons((uint16_t)(PORT_FIRST + n % PORT_COUNT));
	d->udp.dest = htons(o->port);
	d->udp.len = htons(sizeof(d->udp) + PAYLOAD);
	/* UDP checksum 0: none (RFC 768); the payload carries the send time. */
	memcpy(d->payload, &sent_ns, sizeof(sent_ns));
	memset(to, 0, sizeof(*to));
	to->sin_family = AF_INET;
	to->sin_addr.s_addr = d->ip.daddr;
}

/*
 * Raw IPv4 datagrams with a new tuple each, as fast as one core sends them (or at --rate),
 * until --seconds or --max. Delivery is counted by the driver at the receiving interface.
 */
static int mode_udp(const struct options *o)
{
	static struct datagram packets[BATCH];
	static struct sockaddr_in to[BATCH];
	static struct iovec iov[BATCH];
	static struct mmsghdr msgs[BATCH];
	uint64_t start = now_ns(), deadline = start + (uint64_t)(o->seconds * 1e9);
	uint64_t n = o->offset, sent = 0, failed = 0, now = start;
	uint64_t interval = o->rate ? 1000000000ULL / o->rate : 0;
	uint64_t next = start;
	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);

	if (fd < 0)
		die("raw socket");
	prctl(PR_SET_TIMERSLACK, 1UL);
	while (sent + failed < o->max && now < deadline) {
		uint64_t batch = o->rate ? 1 : BATCH;
		int done;

		if (batch > o->max - sent - failed)
			batch = o->max - sent - failed;
		if (o->rate) {
			if (now < next) {
				struct timespec pause = { 0, (long)(next - now) };

				nanosleep(&pause, NULL);
			}
			next += interval;
		}
		for (uint64_t i = 0; i < batch; i++) {
			fill_datagram(&packets[i], &to[i], o, n + i, now_ns());
			iov[i].iov_base = &packets[i];
			iov[i].iov_len = sizeof(packets[i]);
			memset(&msgs[i], 0, sizeof(msgs[i]));
			msgs[i].msg_hdr.msg_name = &to[i];
			msgs[i].msg_hdr.msg_namelen = sizeof(to[i]);
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
		}
		done = sendmmsg(fd, msgs, (unsigned)batch, 0);
		if (done < 0) {
			/* A full queue (ENOBUFS) loses the datagram: counted, not retried. */
			if (errno != ENOBUFS && errno != EAGAIN && errno != EPERM)
				die("sendmmsg");
			done = 1;
			failed++;
		} else {
			sent += (uint64_t)done;
		}
		n += (uint64_t)done;
		now = now_ns();
	}
	printf("sent=%llu failed=%llu seconds=%.6f next_offset=%llu\n", (unsigned long long)sent,
	       (unsigned long long)failed, (double)(now - start) / 1e9, (unsigned long long)n);
	return 0;
}

static int listen_tcp(uint16_t port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	if (fd < 0)
		die("tcp socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("bind tcp");
	if (listen(fd, 4096) < 0)
		die("listen");
	return fd;
}

static int bind_udp(uint16_t port, int rcvbuf)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0)
		die("udp socket");
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("bind udp");
	return fd;
}

/*
 * The server: a TCP echo (every byte read is written back; a connection ends when the
 * client closes or resets it) and a UDP socket on the same port that is never read, so
 * that flood datagrams are delivered to a socket (no ICMP port unreachable) and dropped
 * there cheaply.
 */
static int mode_server(const struct options *o)
{
	int listener = listen_tcp(o->port);
	int udp = bind_udp(o->port, 4096);
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = listener };
	uint64_t deadline = now_ns() + (uint64_t)(o->seconds * 1e9);
	uint64_t accepted = 0;

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) < 0)
		die("epoll");
	/* The driver waits for this line before it sends anything. */
	printf("ready\n");
	fflush(stdout);
	while (now_ns() < deadline) {
		struct epoll_event events[64];
		int n = epoll_wait(ep, events, 64, 200);

		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;

			if (fd == listener) {
				int conn;

				while ((conn = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					int one = 1;
					struct epoll_event cev = { .events = EPOLLIN,
						                   .data.fd = conn };

					setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one,
					           sizeof(one));
					if (epoll_ctl(ep, EPOLL_CTL_ADD, conn, &cev) < 0)
						close(conn);
					accepted++;
				}
				continue;
			}
			char buf[256];
			ssize_t got = read(fd, buf, sizeof(buf));

			if (got > 0 && write(fd, buf, (size_t)got) == got)
				continue;
			if (got < 0 && errno == EAGAIN)
				continue;
			close(fd);
		}
	}
	close(udp);
	printf("accepted=%llu\n", (unsigned long long)accepted);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Prints count, rate and latency percentiles (microseconds) of finished exchanges. */
static void report(const char *what, uint64_t *lat, uint64_t done, uint64_t failed, uint64_t ns)
{
	double p[5] = { 0 };
	const double at[4] = { 0.5, 0.9, 0.99, 0.999 };

	qsort(lat, done, sizeof(*lat), cmp_u64);
	for (int i = 0; i < 4 && done; i++)
		p[i] = (double)lat[(uint64_t)(at[i] * (double)(done - 1))] / 1e3;
	if (done)
		p[4] = (double)lat[done - 1] / 1e3;
	printf("%s=%llu failed=%llu seconds=%.6f rate=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f "
	       "p999_us=%.1f max_us=%.1f\n",
	       what, (unsigned long long)done, (unsigned long long)failed, (double)ns / 1e9,
	       (double)done * 1e9 / (double)ns, p[0], p[1], p[2], p[3], p[4]);
}

struct conn {
	int fd;
	int state; /* 0: free, 1: connecting, 2: waiting for the echo */
	uint64_t started;
};

static int open_conn(struct conn *c, int ep, const struct options *o, uint64_t n)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(o->port) };
	struct linger reset = { 1, 0 };
	int one = 1;
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };

	to.sin_addr.s_addr = htonl(ntohl(o->dst.s_addr) + (uint32_t)(n % o->dst_count));
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (c->fd < 0)
		die("socket");
	/* Close with a reset: no TIME_WAIT, so ports are never the limit. */
	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->started = now_ns();
	if (connect(c->fd, (struct sockaddr *)&to, sizeof(to)) < 0 && errno != EINPROGRESS) {
		close(c->fd);
		c->state = 0;
		return -1;
	}
	c->state = 1;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		die("epoll_ctl");
	return 0;
}

/*
 * New TCP connections, --conns at a time: connect, one byte each way, reset. Latency is
 * from connect() to the echo, so it holds the handshake and one round trip.
 */
static int mode_crr(const struct options *o)
{
	static struct conn conns[CONNS_MAX];
	uint64_t *lat = calloc(o->max ? o->max : 1, sizeof(uint64_t));
	uint64_t start = now_ns(), deadline = start + (uint64_t)(o->seconds * 1e9);
	uint64_t opened = 0, done = 0, failed = 0, now = start;
	int ep = epoll_create1(0);

	if (!lat || ep < 0)
		die("setup");
	for (;;) {
		struct epoll_event events[64];
		int active = 0, n;

		for (uint32_t i = 0; i < o->conns; i++) {
			struct conn *c = &conns[i];

			if (c->state && now - c->started > CONN_TIMEOUT_NS) {
				close(c->fd);
				c->state = 0;
				failed++;
			}
			if (!c->state && now < deadline && opened < o->max) {
				if (open_conn(c, ep, o, opened++) < 0)
					failed++;
			}
			active += c->state != 0;
		}
		if (!active)
			break;
		n = epoll_wait(ep, events, 64, 10);
		now = now_ns();
		for (int i = 0; i < n; i++) {
			struct conn *c = events[i].data.ptr;
			int err = 0;
			socklen_t len = sizeof(err);
			char byte = 'x';

			if (c->state == 1) {
				struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (!err && write(c->fd, &byte, 1) == 1 &&
				    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
					c->state = 2;
					continue;
				}
			} else if (read(c->fd, &byte, 1) == 1) {
				lat[done++] = now - c->started;
				close(c->fd);
				c->state = 0;
				continue;
			}
			close(c->fd);
			c->state = 0;
			failed++;
		}
	}
	report("conns", lat, done, failed, now - start);
	return 0;
}

/* One connection, one byte each way, one exchange at a time: the established path. */
static int mode_rr(const struct options *o)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(o->port) };
	uint64_t *lat = calloc(o->max ? o->max : 1, sizeof(uint64_t));
	uint64_t start, deadline, done = 0, failed = 0, now;
	struct timeval wait = { 1, 0 };
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (!lat || fd < 0)
		die("setup");
	to.sin_addr = o->dst;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
	if (connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0)
		die("connect");
	start = now = now_ns();
	deadline = start + (uint64_t)(o->seconds * 1e9);
	while (now < deadline && done < o->max) {
		char byte = 'x';
		uint64_t sent = now;

		if (write(fd, &byte, 1) != 1 || read(fd, &byte, 1) != 1) {
			failed++;
			break;
		}
		now = now_ns();
		lat[done++] = now - sent;
	}
	close(fd);
	report("exchanges", lat, done, failed, now - start);
	return 0;
}

/* Waits for the first UDP datagram on --port and prints when it came and when it left. */
static int mode_first(const struct options *o)
{
	int fd = bind_udp(o->port, 0);
	int ms = (int)(o->seconds * 1000);
	struct timeval wait = { ms / 1000, (ms % 1000) * 1000 };
	uint8_t buf[64];
	uint64_t sent_ns = 0;
	ssize_t got;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
	printf("ready\n");
	fflush(stdout);
	got = recv(fd, buf, sizeof(buf), 0);
	if (got < 0) {
		printf("first_ns=0 sent_ns=0\n");
		return 0;
	}
	if (got >= (ssize_t)sizeof(sent_ns))
		memcpy(&sent_ns, buf, sizeof(sent_ns));
	printf("first_ns=%llu sent_ns=%llu\n", (unsigned long long)now_ns(),
	       (unsigned long long)sent_ns);
	return 0;
}

static long bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

/* memlock of a map as its fdinfo reports it (the kernel's estimate of its memory). */
static uint64_t memlock(int fd)
{
	char path[64], line[256];
	uint64_t bytes = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		die("fdinfo");
	while (fgets(line, sizeof(line), f))
		sscanf(line, "memlock: %llu", (unsigned long long *)&bytes);
	fclose(f);
	return bytes;
}

/*
 * Creates a map of the datapath's shape, fills it with --entries distinct keys, reads its
 * memory (fdinfo's memlock: the kernel's own account of the map), deletes every entry and
 * fills it again. The kernel frees a closed map later, in a work queue, so the time that
 * takes cannot be read from here; the runtime never drops a filled map anyway, it deletes
 * entries, which is what the delete round times.
 */
static int mode_map(const struct options *o)
{
	union bpf_attr attr;
	uint8_t key[64], value[64];
	uint64_t t0, t1, t2 = 0, t3 = 0, t4, empty, full;
	uint64_t missing = 0;
	__u32 map_type;
	int fd;

	if (!o->map_type || o->key < 12 || o->key > 64 || o->value > 64 || !o->entries)
		usage("map needs --type, --key 12-64, --value up to 64 and --entries");
	if (!strcmp(o->map_type, "hash"))
		map_type = BPF_MAP_TYPE_HASH;
	else if (!strcmp(o->map_type, "lru"))
		map_type = BPF_MAP_TYPE_LRU_HASH;
	else if (!strcmp(o->map_type, "lpm"))
		map_type = BPF_MAP_TYPE_LPM_TRIE;
	else
		usage("--type is hash, lru or lpm");
	memset(&attr, 0, sizeof(attr));
	attr.map_type = map_type;
	attr.key_size = o->key;
	attr.value_size = o->value;
	attr.max_entries = o->entries;
	if (o->no_prealloc || map_type == BPF_MAP_TYPE_LPM_TRIE)
		attr.map_flags = BPF_F_NO_PREALLOC;
	t0 = now_ns();
	fd = (int)bpf(BPF_MAP_CREATE, &attr);
	if (fd < 0)
		die("BPF_MAP_CREATE");
	t1 = now_ns();
	empty = memlock(fd);

	memset(value, 0x5a, sizeof(value));
	for (int round = 0; round < 3; round++) {
		/* Rounds: fill, delete every entry, fill again. */
		int cmd = round == 1 ? BPF_MAP_DELETE_ELEM : BPF_MAP_UPDATE_ELEM;

		if (round == 1)
			t2 = now_ns();
		if (round == 2)
			t3 = now_ns();
		for (uint32_t i = 0; i < o->entries; i++) {
			memset(key, 0, sizeof(key));
			if (map_type == BPF_MAP_TYPE_LPM_TRIE) {
				/* As the ipcache: 32 bits of family and padding, then an IPv4 /32
				 * (from 240.0.0.0/4: keys only, never an address in use). */
				uint32_t prefixlen = 64, addr = htonl(0xf0000000u + i);

				memcpy(key, &prefixlen, 4);
				key[4] = 4;
				memcpy(key + 8, &addr, 4);
			} else {
				/* Spread over the key as a real key's fields would be. */
				uint32_t mixed = i * 2654435761u;

				memcpy(key, &i, 4);
				memcpy(key + 8, &mixed, 4);
			}
			memset(&attr, 0, sizeof(attr));
			attr.map_fd = (uint32_t)fd;
			attr.key = (uint64_t)(uintptr_t)key;
			/* Delete takes no value: the kernel refuses fields past the key. */
			if (cmd == BPF_MAP_UPDATE_ELEM)
				attr.value = (uint64_t)(uintptr_t)value;
			if (bpf(cmd, &attr) == 0)
				continue;
			/* An LRU map may have evicted an entry before it was full. */
			if (cmd == BPF_MAP_DELETE_ELEM && errno == ENOENT)
				missing++;
			else
				die(cmd == BPF_MAP_DELETE_ELEM ? "BPF_MAP_DELETE_ELEM"
				                               : "BPF_MAP_UPDATE_ELEM");
		}
	}
	t4 = now_ns();
	full = memlock(fd);
	close(fd);
	printf("create_s=%.6f fill_s=%.6f delete_s=%.6f refill_s=%.6f memlock_empty=%llu "
	       "memlock_full=%llu lru_missing=%llu\n",
	       (double)(t1 - t0) / 1e9, (double)(t2 - t1) / 1e9, (double)(t3 - t2) / 1e9,
	       (double)(t4 - t3) / 1e9, (unsigned long long)empty, (unsigned long long)full,
	       (unsigned long long)missing);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;

	parse(argc, argv, &o);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(o.mode, "udp"))
		return mode_udp(&o);
	if (!strcmp(o.mode, "server"))
		return mode_server(&o);
	if (!strcmp(o.mode, "crr"))
		return mode_crr(&o);
	if (!strcmp(o.mode, "rr"))
		return mode_rr(&o);
	if (!strcmp(o.mode, "first"))
		return mode_first(&o);
	if (!strcmp(o.mode, "map"))
		return mode_map(&o);
	usage("unknown mode");
	return 2;
}
