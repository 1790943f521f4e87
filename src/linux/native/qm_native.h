// What the addon's C files share: entering and leaving a network namespace on the calling thread (netns.c),
// and the spawner's exports (spawn.c).
#ifndef QM_NATIVE_H
#define QM_NATIVE_H
#include <node_api.h>

int qm_enter_netns(const char *path, int *self, const char **syscall, const char **what);
void qm_leave_netns(int self);
void qm_spawn_init(napi_env env, napi_value exports);
#endif
