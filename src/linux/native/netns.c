// qm_netns: the few syscalls node has no binding for, so that one metadata proxy process can serve every
// namespace of a node. A listening socket keeps the network namespace it was created in, so the agent
// creates it there (setns on its own thread, socket/bind/listen, setns back) and passes the descriptor to
// the proxy over a SOCK_SEQPACKET pair with SCM_RIGHTS; a restarted agent takes the descriptors back out
// of a running proxy with pidfd_getfd. Everything here is synchronous and takes microseconds; spawn.c runs
// commands off the main thread.
// Built by src/tools/build-native.ts with the system C compiler against node's own headers (no node-gyp).
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "qm_native.h"

#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SIOCGSKNS
#define SIOCGSKNS 0x894C
#endif

#define MAX_TAG 1024
#define MAX_FDS 64

// Throws Error(message) with .code = errno name, .errno, .syscall, like node's own ErrnoExceptions.
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *what) {
  const char *name = strerrorname_np(err);
  char msg[512];
  snprintf(msg, sizeof msg, "%s %s: %s (%s)", syscall, what ? what : "", name ? name : "E?", strerror(err));
  napi_value code, message, error, sys, no;
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "syscall", sys);
  napi_create_int32(env, -err, &no);
  napi_set_named_property(env, error, "errno", no);
  napi_throw(env, error);
  return NULL;
}

int qm_bool_property(napi_env env, napi_value obj, const char *name) {
  napi_valuetype t;
  bool has = false, b = false;
  if (napi_typeof(env, obj, &t) != napi_ok || t != napi_object) return 0;
  napi_has_named_property(env, obj, name, &has);
  if (has) {
    napi_value v;
    napi_get_named_property(env, obj, name, &v);
    napi_get_value_bool(env, v, &b);
  }
  return b;
}

napi_value qm_throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static int get_int(napi_env env, napi_value v, int32_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return 0;
  return napi_get_value_int32(env, v, out) == napi_ok;
}

// A string argument into buf; 0 when it is not a string or does not fit.
static int get_str(napi_env env, napi_value v, char *buf, size_t size, size_t *len) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) return 0;
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok || n + 1 > size) return 0;
  napi_get_value_string_utf8(env, v, buf, size, &n);
  if (len) *len = n;
  return 1;
}

// Moves this thread into the network namespace at `path`; *self gets a handle on the thread's own one to come
// back to (the node main thread may not be in the process's). 0, or an errno with the failing call and its
// object in *syscall and *what.
int qm_enter_netns(const char *path, int *self, const char **syscall, const char **what) {
  *syscall = "open";
  *what = "/proc/thread-self/ns/net";
  *self = open(*what, O_RDONLY | O_CLOEXEC);
  if (*self < 0) return errno;
  *what = path;
  int target = open(path, O_RDONLY | O_CLOEXEC);
  int err = target < 0 ? errno : 0;
  if (!err && setns(target, CLONE_NEWNET) != 0) {
    err = errno;
    *syscall = "setns";
  }
  if (target >= 0) close(target);
  if (err) close(*self);
  return err;
}

// Back to the thread's own namespace. A thread left in a router's namespace would create every later socket
// there: worse than a crash.
void qm_leave_netns(int self) {
  if (setns(self, CLONE_NEWNET) != 0) {
    fprintf(stderr, "qm_netns: cannot return to the original network namespace: %s\n", strerror(errno));
    abort();
  }
  close(self);
}

// listenInNamespace(nsPath: string | null, host: string, port: number, backlog: number, opts?: { freebind?: boolean }) -> fd
static napi_value listen_in_namespace(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) return qm_throw_type(env, "listenInNamespace(nsPath, host, port, backlog[, opts])");
  // host may carry an IPv6 zone, fe80::a9fe:a9fe%tap0: the device is looked up inside the namespace.
  char ns[4096] = "", host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  int inNs = t == napi_string;
  if (inNs && !get_str(env, argv[0], ns, sizeof ns, NULL)) return qm_throw_type(env, "nsPath: a path or null");
  if (!inNs && t != napi_null && t != napi_undefined) return qm_throw_type(env, "nsPath: a path or null");
  if (!get_str(env, argv[1], host, sizeof host, NULL)) return qm_throw_type(env, "host: an IPv4 or IPv6 address");
  char *zone = strchr(host, '%');
  if (zone) {
    *zone++ = '\0';
    if (*zone == '\0' || strlen(zone) >= IF_NAMESIZE) return qm_throw_type(env, "host: the zone after % must be a device name");
  }
  int32_t port, backlog;
  if (!get_int(env, argv[2], &port) || port < 0 || port > 65535) return qm_throw_type(env, "port: 0-65535");
  if (!get_int(env, argv[3], &backlog) || backlog < 1) return qm_throw_type(env, "backlog: a positive integer");
  int freebind = argc >= 5 && qm_bool_property(env, argv[4], "freebind");

  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t slen;
  int family;
  struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
    family = AF_INET;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    slen = sizeof *s4;
  } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
    family = AF_INET6;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    slen = sizeof *s6;
  } else {
    return qm_throw_type(env, "host: an IPv4 or IPv6 address");
  }
  if (zone && family != AF_INET6) return qm_throw_type(env, "host: only an IPv6 address takes a %zone");

  int self = -1;
  if (inNs) {
    const char *sc, *what;
    int e = qm_enter_netns(ns, &self, &sc, &what);
    if (e) return throw_errno(env, e, sc, what);
  }
  int err = 0;
  const char *where = NULL;
  int one = 1;
  int fd = -1;
  // The zone's index is the namespace's own (a device name means nothing outside it): resolved after setns.
  errno = 0;
  if (zone && (s6->sin6_scope_id = if_nametoindex(zone)) == 0) {
    err = errno ? errno : ENODEV;
    where = "if_nametoindex";
  } else if ((fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
    err = errno;
    where = "socket";
  } else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    err = errno;
    where = "setsockopt";
  } else if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) {
    // v6 only: a namespace may then have 0.0.0.0 and :: (or 169.254.169.254 and fe80::a9fe:a9fe) on one port.
    err = errno;
    where = "setsockopt";
  } else if (freebind && setsockopt(fd, family == AF_INET ? IPPROTO_IP : IPPROTO_IPV6, family == AF_INET ? IP_FREEBIND : IPV6_FREEBIND, &one, sizeof one) != 0) {
    err = errno;
    where = "setsockopt";
  } else if (bind(fd, (struct sockaddr *)&ss, slen) != 0) {
    err = errno;
    where = "bind";
  } else if (listen(fd, backlog) != 0) {
    err = errno;
    where = "listen";
  }
  if (err && fd >= 0) close(fd);
  if (inNs) qm_leave_netns(self);
  if (err) {
    char what[4200];
    snprintf(what, sizeof what, "%s%s%s:%d%s%s", host, zone ? "%" : "", zone ? zone : "", port, inNs ? " in " : "", inNs ? ns : "");
    return throw_errno(env, err, where, what);
  }
  napi_value r;
  napi_create_int32(env, fd, &r);
  return r;
}

// socketpair() -> [fd, fd]: AF_UNIX SOCK_SEQPACKET, close-on-exec (each message keeps its own descriptors).
static napi_value make_socketpair(napi_env env, napi_callback_info info) {
  (void)info;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return throw_errno(env, errno, "socketpair", "");
  napi_value arr, a, b;
  napi_create_array_with_length(env, 2, &arr);
  napi_create_int32(env, sv[0], &a);
  napi_create_int32(env, sv[1], &b);
  napi_set_element(env, arr, 0, a);
  napi_set_element(env, arr, 1, b);
  return arr;
}

// sendFds(sock, tag, fds[]): one message, the tag as its data and the descriptors as SCM_RIGHTS.
static napi_value send_fds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t sock;
  char tag[MAX_TAG];
  size_t tlen;
  if (argc < 3 || !get_int(env, argv[0], &sock)) return qm_throw_type(env, "sendFds(sock, tag, fds)");
  if (!get_str(env, argv[1], tag, sizeof tag, &tlen) || tlen == 0) return qm_throw_type(env, "tag: a non-empty string under 1 KB");
  bool isArr = false;
  napi_is_array(env, argv[2], &isArr);
  uint32_t n = 0;
  if (isArr) napi_get_array_length(env, argv[2], &n);
  if (!isArr || n > MAX_FDS) return qm_throw_type(env, "fds: an array of at most 64 descriptors");
  int fds[MAX_FDS];
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    napi_get_element(env, argv[2], i, &v);
    if (!get_int(env, v, &fds[i]) || fds[i] < 0) return qm_throw_type(env, "fds: descriptors are non-negative integers");
  }
  char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  memset(cbuf, 0, sizeof cbuf);
  struct iovec iov = {.iov_base = tag, .iov_len = tlen};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (n > 0) {
    msg.msg_control = cbuf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
  }
  ssize_t r;
  do r = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, errno, "sendmsg", tag);
  return NULL;
}

// recvFds(sock) -> { tag, fds } | null (nothing queued). The descriptors arrive close-on-exec.
static napi_value recv_fds(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t sock;
  if (argc < 1 || !get_int(env, argv[0], &sock)) return qm_throw_type(env, "recvFds(sock)");
  char tag[MAX_TAG];
  char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  struct iovec iov = {.iov_base = tag, .iov_len = sizeof tag};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
  ssize_t r;
  do r = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_value nul;
      napi_get_null(env, &nul);
      return nul;
    }
    return throw_errno(env, errno, "recvmsg", "");
  }
  int fds[MAX_FDS];
  int n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < k && n < MAX_FDS; i++) memcpy(&fds[n++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
  }
  if (r == 0 && n == 0) {
    // SOCK_SEQPACKET: a zero-length read is the peer's close.
    return throw_errno(env, ECONNRESET, "recvmsg", "peer closed");
  }
  if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
    for (int i = 0; i < n; i++) close(fds[i]);
    return throw_errno(env, EMSGSIZE, "recvmsg", "truncated message");
  }
  napi_value out, t, arr;
  napi_create_object(env, &out);
  napi_create_string_utf8(env, tag, (size_t)r, &t);
  napi_create_array_with_length(env, (size_t)n, &arr);
  for (int i = 0; i < n; i++) {
    napi_value v;
    napi_create_int32(env, fds[i], &v);
    napi_set_element(env, arr, (uint32_t)i, v);
  }
  napi_set_named_property(env, out, "tag", t);
  napi_set_named_property(env, out, "fds", arr);
  return out;
}

// pidfdGetfd(pid, fd) -> a duplicate, in this process, of descriptor `fd` of process `pid` (close-on-exec).
static napi_value pidfd_getfd_js(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t pid, fd;
  if (argc < 2 || !get_int(env, argv[0], &pid) || !get_int(env, argv[1], &fd) || pid <= 0 || fd < 0) return qm_throw_type(env, "pidfdGetfd(pid, fd)");
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) return throw_errno(env, errno, "pidfd_open", "");
  int got = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
  int e = errno;
  close(pidfd);
  if (got < 0) return throw_errno(env, e, "pidfd_getfd", "");
  napi_value r;
  napi_create_int32(env, got, &r);
  return r;
}

// listeningPort(fd) -> the local TCP port when fd is a listening TCP socket, else null.
static napi_value listening_port(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || !get_int(env, argv[0], &fd)) return qm_throw_type(env, "listeningPort(fd)");
  napi_value nul;
  napi_get_null(env, &nul);
  int acc = 0, type = 0;
  socklen_t l = sizeof acc;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) != 0 || !acc) return nul;
  l = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0 || type != SOCK_STREAM) return nul;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return nul;
  int port;
  if (ss.ss_family == AF_INET) port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  else if (ss.ss_family == AF_INET6) port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  else return nul;
  napi_value r;
  napi_create_int32(env, port, &r);
  return r;
}

// sysctlInNamespace(nsPath, key, value): writes /proc/sys/<key, dots as slashes> as seen from inside a network
// namespace. /proc/sys/net is resolved against the opening thread's namespace, so setns on this thread, open,
// setns back, then write: the L3 agent's net.ipv4.ip_forward without an `ip netns exec sysctl` process per router.
// Only net.* keys: everything else under /proc/sys is not per namespace.
static napi_value sysctl_in_namespace(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3) return qm_throw_type(env, "sysctlInNamespace(nsPath, key, value)");
  char ns[4096] = "", key[256] = "", value[256] = "", path[300];
  size_t klen = 0, vlen = 0;
  if (!get_str(env, argv[0], ns, sizeof ns, NULL)) return qm_throw_type(env, "nsPath: a path");
  if (!get_str(env, argv[1], key, sizeof key, &klen) || klen < 5 || strncmp(key, "net.", 4) != 0) return qm_throw_type(env, "key: a net.* sysctl key");
  for (size_t i = 0; i < klen; i++) {
    char c = key[i];
    if (c == '/' || (c == '.' && (i == 0 || key[i - 1] == '.'))) return qm_throw_type(env, "key: a net.* sysctl key");
    if (c == '.') key[i] = '/';
  }
  if (!get_str(env, argv[2], value, sizeof value - 1, &vlen) || vlen == 0) return qm_throw_type(env, "value: a non-empty string");
  value[vlen++] = '\n';
  snprintf(path, sizeof path, "/proc/sys/%s", key);
  int self = -1;
  const char *sc, *what;
  int e = qm_enter_netns(ns, &self, &sc, &what);
  if (e) return throw_errno(env, e, sc, what);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  e = errno;
  qm_leave_netns(self);
  if (fd < 0) return throw_errno(env, e, "open", path);
  ssize_t w = write(fd, value, vlen);
  e = errno;
  close(fd);
  if (w != (ssize_t)vlen) return throw_errno(env, w < 0 ? e : EIO, "write", path);
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// socketNetnsInode(fd) -> inode of the network namespace a socket lives in (compare with stat(/run/netns/x).ino).
static napi_value socket_netns_inode(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || !get_int(env, argv[0], &fd)) return qm_throw_type(env, "socketNetnsInode(fd)");
  int nsfd = ioctl(fd, SIOCGSKNS);
  if (nsfd < 0) return throw_errno(env, errno, "ioctl", "SIOCGSKNS");
  struct stat st;
  int r = fstat(nsfd, &st);
  int e = errno;
  close(nsfd);
  if (r != 0) return throw_errno(env, e, "fstat", "");
  napi_value v;
  napi_create_double(env, (double)st.st_ino, &v);
  return v;
}

// connectInNamespace(nsPath, host, port, mark) -> fd: a TCP connection made from inside a namespace (the
// doctor's probe of a proxy), with SO_MARK set when mark > 0 so the router's INPUT rules let it through as
// they let marked guest traffic through. Blocking, bounded by a 5 s send timeout; the thread returns to its
// own namespace before anything else runs.
static napi_value connect_in_namespace(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) return qm_throw_type(env, "connectInNamespace(nsPath, host, port, mark)");
  char ns[4096] = "", host[INET6_ADDRSTRLEN + 1];
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  int inNs = t == napi_string;
  if (inNs && !get_str(env, argv[0], ns, sizeof ns, NULL)) return qm_throw_type(env, "nsPath: a path or null");
  if (!get_str(env, argv[1], host, sizeof host, NULL)) return qm_throw_type(env, "host: an IPv4 or IPv6 address");
  int32_t port, mark;
  if (!get_int(env, argv[2], &port) || port < 1 || port > 65535) return qm_throw_type(env, "port: 1-65535");
  if (!get_int(env, argv[3], &mark) || mark < 0) return qm_throw_type(env, "mark: 0 or a positive integer");
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t slen;
  int family;
  struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
    family = AF_INET;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    slen = sizeof *s4;
  } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
    family = AF_INET6;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    slen = sizeof *s6;
  } else {
    return qm_throw_type(env, "host: an IPv4 or IPv6 address");
  }
  int self = -1;
  if (inNs) {
    const char *sc, *what;
    int e = qm_enter_netns(ns, &self, &sc, &what);
    if (e) return throw_errno(env, e, sc, what);
  }
  int err = 0;
  const char *where = NULL;
  struct timeval tv = {5, 0};
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = errno;
    where = "socket";
  } else if (mark > 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    err = errno;
    where = "setsockopt";
  } else if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
    err = errno;
    where = "setsockopt";
  } else if (connect(fd, (struct sockaddr *)&ss, slen) != 0) {
    err = errno;
    where = "connect";
  }
  if (err && fd >= 0) close(fd);
  if (inNs) qm_leave_netns(self);
  if (err) {
    char what[4200];
    snprintf(what, sizeof what, "%s:%d%s%s", host, port, inNs ? " in " : "", inNs ? ns : "");
    return throw_errno(env, err, where, what);
  }
  napi_value r;
  napi_create_int32(env, fd, &r);
  return r;
}

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"listenInNamespace", NULL, listen_in_namespace, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketpair", NULL, make_socketpair, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendFds", NULL, send_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"recvFds", NULL, recv_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pidfdGetfd", NULL, pidfd_getfd_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"listeningPort", NULL, listening_port, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketNetnsInode", NULL, socket_netns_inode, NULL, NULL, NULL, napi_enumerable, NULL},
      {"connectInNamespace", NULL, connect_in_namespace, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sysctlInNamespace", NULL, sysctl_in_namespace, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  qm_spawn_init(env, exports);
  return exports;
}
