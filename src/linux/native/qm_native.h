// What the addon's C files share: entering and leaving a network namespace on the calling thread and the
// argument-error helper (netns.c), and the spawner's exports (spawn.c).
#ifndef QM_NATIVE_H
#define QM_NATIVE_H
#include <node_api.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 // the same number on every architecture (new syscalls are numbered once)
#endif

int qm_enter_netns(const char *path, int *self, const char **syscall, const char **what);
void qm_leave_netns(int self);
// Throws TypeError(msg) with code ERR_INVALID_ARG_TYPE, as node's own argument checks; returns NULL.
napi_value qm_throw_type(napi_env env, const char *msg);
// opts[name] as a boolean: 0 when opts is not an object or has no such property (napi_get_value_bool's rules).
int qm_bool_property(napi_env env, napi_value opts, const char *name);
void qm_spawn_init(napi_env env, napi_value exports);
#endif
