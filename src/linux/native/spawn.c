// qm_spawn: run a short command (ip, iptables-restore, sysctl...) without forking node. child_process.spawn
// fork()s the whole agent on its main thread, copying the page tables of a 100+ MB process for every command:
// profiles of a 1000-router converge put 70 % of the agents' busy time there. Here a thread of its own per
// command posix_spawn()s (glibc: clone(CLONE_VM|CLONE_VFORK), nothing copied), feeds stdin, collects
// stdout/stderr and reaps the child through a pidfd, while the event loop goes on. Not libuv's pool: a command
// may run for minutes (dhclient, wrk) and would starve the agent's file I/O of its four threads. A namespace is
// entered with setns(2) on that thread only, just before the spawn, so the child is born in it without an
// `ip netns exec` process in between.
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qm_native.h"

extern char **environ;

typedef struct {
  char *data;
  size_t len, cap;
} buf_t;

typedef struct {
  napi_threadsafe_function done; // back to the event loop with the result
  napi_deferred deferred;
  char **argv; // NULL-terminated
  char *ns;    // NULL: the spawning thread's own namespace
  char *input;
  size_t input_len;
  int timeout_ms;
  int output_fd; // >= 0: stdout and stderr go there, stdin is /dev/null, nothing is read back (a daemon's launcher)
  int setsid;    // a session of its own (as the agents' long-lived processes get)
  // results
  int err; // errno of the failing call, 0 when the command ran
  const char *err_call;
  const char *err_what; // the namespace path when entering it failed, else the command
  int status;
  int timed_out;
  buf_t out, errout;
} job_t;

static int buf_put(buf_t *b, const char *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return 0;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 1;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fail(job_t *j, int err, const char *call) {
  j->err = err;
  j->err_call = call;
}

// Reads what is there; 0 at EOF or on an error (the pipe is then done).
static int drain(int fd, buf_t *b) {
  char chunk[65536];
  for (;;) {
    ssize_t r = read(fd, chunk, sizeof chunk);
    if (r > 0) {
      if (!buf_put(b, chunk, (size_t)r)) return 0;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
    return 0;
  }
}

static void run_job(job_t *j) {
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (j->output_fd < 0 && (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))) {
    fail(j, errno, "pipe2");
    goto done;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&at);
  // dup2 onto 0/1/2 clears close-on-exec there; every other descriptor of node is close-on-exec already.
  if (j->output_fd >= 0) {
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, j->output_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, j->output_fd, 2);
  } else {
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  }
  // node ignores SIGPIPE (and a thread may block signals): the command gets the defaults back.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &all);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (j->setsid ? POSIX_SPAWN_SETSID : 0));

  int self = -1;
  if (j->ns) {
    const char *sc, *what;
    int e = qm_enter_netns(j->ns, &self, &sc, &what);
    if (e) {
      fail(j, e, sc);
      j->err_what = what;
      posix_spawn_file_actions_destroy(&fa);
      posix_spawnattr_destroy(&at);
      goto done;
    }
  }
  pid_t pid;
  int se = posix_spawnp(&pid, j->argv[0], &fa, &at, j->argv, environ);
  if (j->ns) qm_leave_netns(self);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (se) {
    fail(j, se, "posix_spawnp");
    goto done;
  }
  if (j->output_fd < 0) {
    close(in[0]);
    close(out[1]);
    close(err[1]);
    in[0] = out[1] = err[1] = -1;
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);

  size_t sent = 0;
  if (j->input_len == 0 && in[1] >= 0) {
    close(in[1]);
    in[1] = -1;
  }
  int exited = 0, killed = 0;
  long long deadline = now_ms() + j->timeout_ms;
  while (!exited || out[0] >= 0 || err[0] >= 0) {
    struct pollfd p[4];
    int n = 0, iin = -1, iout = -1, ierr = -1, ipid = -1;
    if (in[1] >= 0) p[iin = n++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
    if (out[0] >= 0) p[iout = n++] = (struct pollfd){.fd = out[0], .events = POLLIN};
    if (err[0] >= 0) p[ierr = n++] = (struct pollfd){.fd = err[0], .events = POLLIN};
    if (!exited && pidfd >= 0) p[ipid = n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
    long long left = deadline - now_ms();
    if (left <= 0) {
      if (!killed) {
        kill(pid, SIGKILL);
        killed = 1;
        j->timed_out = 1;
        deadline = now_ms() + 1000; // a second to reap it and read what it wrote
        continue;
      }
      break; // dead, but a descendant holds its pipes: what has been read is the answer
    }
    // Without a pidfd (a kernel before 5.3), exit is seen by polling waitpid every 10 ms.
    int wait_ms = pidfd < 0 && !exited ? 10 : (int)(left > 1000 ? 1000 : left);
    int r = poll(p, (nfds_t)n, wait_ms);
    if (r < 0 && errno != EINTR) {
      if (!killed) kill(pid, SIGKILL);
      killed = 1;
      fail(j, errno, "poll");
    }
    if (iin >= 0 && (p[iin].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t w = write(in[1], j->input + sent, j->input_len - sent);
      if (w > 0) sent += (size_t)w;
      // EPIPE: the command exits without reading all of its input; its exit status tells the story.
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || sent == j->input_len) {
        close(in[1]);
        in[1] = -1;
      }
    }
    if (iout >= 0 && (p[iout].revents & (POLLIN | POLLERR | POLLHUP)) && !drain(out[0], &j->out)) {
      close(out[0]);
      out[0] = -1;
    }
    if (ierr >= 0 && (p[ierr].revents & (POLLIN | POLLERR | POLLHUP)) && !drain(err[0], &j->errout)) {
      close(err[0]);
      err[0] = -1;
    }
    if (!exited && (pidfd < 0 || (ipid >= 0 && (p[ipid].revents & POLLIN)))) {
      int st;
      pid_t w = waitpid(pid, &st, WNOHANG);
      if (w == pid) {
        exited = 1;
        j->status = st;
      } else if (w < 0 && errno != EINTR) {
        exited = 1; // reaped elsewhere: no status to report
        j->status = -1;
      }
    }
    if (j->err) break;
  }
  if (!exited) {
    kill(pid, SIGKILL);
    int st;
    if (waitpid(pid, &st, 0) == pid) j->status = st;
  }
  if (pidfd >= 0) close(pidfd);
done:
  for (int i = 0; i < 2; i++) {
    if (in[i] >= 0) close(in[i]);
    if (out[i] >= 0) close(out[i]);
    if (err[i] >= 0) close(err[i]);
  }
}

static void free_job(job_t *j) {
  if (j->argv)
    for (char **a = j->argv; *a; a++) free(*a);
  free(j->argv);
  free(j->ns);
  free(j->input);
  free(j->out.data);
  free(j->errout.data);
  free(j);
}

static napi_value str(napi_env env, const char *p, size_t n) {
  napi_value v;
  napi_create_string_utf8(env, p ? p : "", p ? n : 0, &v);
  return v;
}

// On the event loop: the job's promise settled with what the thread found.
static void finish_job(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)js_cb;
  (void)context;
  job_t *j = data;
  if (env == NULL) return; // node is shutting down: nobody waits for the answer (the job is leaked)
  napi_value res, v;
  napi_create_object(env, &res);
  if (j->err) {
    const char *name = strerrorname_np(j->err);
    char msg[512];
    snprintf(msg, sizeof msg, "%s %s: %s (%s)", j->err_call, j->err_what ? j->err_what : j->argv[0], name ? name : "E?", strerror(j->err));
    napi_value code, message, error;
    napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, code, message, &error);
    napi_set_named_property(env, error, "syscall", str(env, j->err_call, strlen(j->err_call)));
    napi_reject_deferred(env, j->deferred, error);
  } else {
    napi_set_named_property(env, res, "stdout", str(env, j->out.data, j->out.len));
    napi_set_named_property(env, res, "stderr", str(env, j->errout.data, j->errout.len));
    if (j->status >= 0 && WIFEXITED(j->status)) napi_create_int32(env, WEXITSTATUS(j->status), &v);
    else napi_get_null(env, &v);
    napi_set_named_property(env, res, "exitCode", v);
    if (j->status >= 0 && WIFSIGNALED(j->status)) {
      const char *abbrev = sigabbrev_np(WTERMSIG(j->status));
      char name[32];
      snprintf(name, sizeof name, "SIG%s", abbrev ? abbrev : "UNKNOWN");
      v = str(env, name, strlen(name));
    } else {
      napi_get_null(env, &v);
    }
    napi_set_named_property(env, res, "signal", v);
    napi_get_boolean(env, j->timed_out, &v);
    napi_set_named_property(env, res, "timedOut", v);
    napi_resolve_deferred(env, j->deferred, res);
  }
  free_job(j);
}

static void *job_thread(void *data) {
  job_t *j = data;
  napi_threadsafe_function done = j->done;
  run_job(j);
  napi_call_threadsafe_function(done, j, napi_tsfn_blocking);
  napi_release_threadsafe_function(done, napi_tsfn_release);
  return NULL;
}

static char *dup_str(napi_env env, napi_value v, size_t *len) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) return NULL;
  size_t n = 0;
  napi_get_value_string_utf8(env, v, NULL, 0, &n);
  char *s = malloc(n + 1);
  if (!s) return NULL;
  napi_get_value_string_utf8(env, v, s, n + 1, &n);
  if (len) *len = n;
  return s;
}

// spawnCommand(argv: string[], nsPath: string | null, input: string, timeoutMs: number,
//              opts?: { outputFd?: number, setsid?: boolean })
//   -> Promise<{ stdout, stderr, exitCode: number | null, signal: string | null, timedOut: boolean }>
// With outputFd, stdout and stderr go to that descriptor (kept open by the caller until the promise settles) and
// the promise settles when the command exits: a daemon's launcher, whose daemon keeps that descriptor.
static napi_value spawn_command(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) return qm_throw_type(env, "spawnCommand(argv, nsPath, input, timeoutMs)");
  bool isArr = false;
  uint32_t n = 0;
  napi_is_array(env, argv[0], &isArr);
  if (isArr) napi_get_array_length(env, argv[0], &n);
  if (!isArr || n == 0 || n > 4096) return qm_throw_type(env, "argv: a non-empty array of strings");
  int32_t timeout;
  napi_valuetype t;
  napi_typeof(env, argv[3], &t);
  if (t != napi_number || napi_get_value_int32(env, argv[3], &timeout) != napi_ok || timeout <= 0) return qm_throw_type(env, "timeoutMs: a positive integer");
  job_t *j = calloc(1, sizeof *j);
  if (!j) return qm_throw_type(env, "out of memory");
  j->timeout_ms = timeout;
  j->output_fd = -1;
  if (argc >= 5) {
    napi_typeof(env, argv[4], &t);
    if (t == napi_object) {
      bool has = false;
      napi_value v;
      napi_has_named_property(env, argv[4], "outputFd", &has);
      if (has) {
        napi_get_named_property(env, argv[4], "outputFd", &v);
        int32_t fd;
        if (napi_typeof(env, v, &t) != napi_ok || t != napi_number || napi_get_value_int32(env, v, &fd) != napi_ok || fd < 0) {
          free(j);
          return qm_throw_type(env, "opts.outputFd: a descriptor");
        }
        j->output_fd = fd;
      }
      j->setsid = qm_bool_property(env, argv[4], "setsid");
    }
  }
  j->argv = calloc(n + 1, sizeof(char *));
  if (!j->argv) {
    free(j);
    return qm_throw_type(env, "out of memory");
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value a;
    napi_get_element(env, argv[0], i, &a);
    if (!(j->argv[i] = dup_str(env, a, NULL))) {
      free_job(j);
      return qm_throw_type(env, "argv: a non-empty array of strings");
    }
  }
  napi_typeof(env, argv[1], &t);
  if (t == napi_string) j->ns = dup_str(env, argv[1], NULL);
  else if (t != napi_null && t != napi_undefined) {
    free_job(j);
    return qm_throw_type(env, "nsPath: a path or null");
  }
  if (!(j->input = dup_str(env, argv[2], &j->input_len))) {
    free_job(j);
    return qm_throw_type(env, "input: a string");
  }
  if (j->output_fd >= 0 && j->input_len > 0) {
    free_job(j);
    return qm_throw_type(env, "input: none with opts.outputFd (stdin is /dev/null)");
  }
  napi_value promise, name;
  napi_create_string_utf8(env, "qm_spawn", NAPI_AUTO_LENGTH, &name);
  // Referenced, as a child process is: node does not exit while a command runs.
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, finish_job, &j->done) != napi_ok) {
    free_job(j);
    return qm_throw_type(env, "napi_create_threadsafe_function failed");
  }
  napi_create_promise(env, &j->deferred, &promise);
  pthread_attr_t ta;
  pthread_attr_init(&ta);
  pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&ta, 256 * 1024);
  pthread_t th;
  int e = pthread_create(&th, &ta, job_thread, j);
  pthread_attr_destroy(&ta);
  if (e) {
    // Settled here, on the loop, as a spawn error the caller handles like ENOENT.
    fail(j, e, "pthread_create");
    napi_threadsafe_function done = j->done;
    finish_job(env, NULL, NULL, j);
    napi_release_threadsafe_function(done, napi_tsfn_release);
  }
  return promise;
}

void qm_spawn_init(napi_env env, napi_value exports) {
  napi_property_descriptor p = {"spawnCommand", NULL, spawn_command, NULL, NULL, NULL, napi_enumerable, NULL};
  napi_define_properties(env, exports, 1, &p);
}
