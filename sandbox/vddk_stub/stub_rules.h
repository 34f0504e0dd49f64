/*
 * snapship sandbox: the rules the real VDDK 7.0.3 imposes on its caller, enforced by the stub
 * (docs/DESIGN.md, "VDDK reader process"; ../../../shared reference vddk-rules.md):
 *   - InitEx once, from the process's main thread, with log callbacks; nothing after Exit;
 *     nothing in a child forked after InitEx;
 *   - ConnectEx/Open/Close/Disconnect/QueryAllocatedBlocks only from the thread that called
 *     InitEx, never two at once;
 *   - connect parameters from AllocateConnectParams, alive and unchanged until Disconnect;
 *   - every call on a disk handle from one thread;
 *   - error codes carry bits above the low 16 (callers must mask with 0xFFFF).
 */
#ifndef SNAPSHIP_STUB_RULES_H
#define SNAPSHIP_STUB_RULES_H

#include "vixDiskLib.h"

#include <limits.h>

struct stub_config {
   long read_timeout_ms;   /* vixDiskLib.nfc.ReadTimeoutMs; 0: a stalled read never returns */
   long aio_buf_64k;       /* vixDiskLib.nfcAio.Session.BufSizeIn64KB */
   long aio_buf_count;     /* vixDiskLib.nfcAio.Session.BufCount */
   long log_level;         /* vixDiskLib.transport.LogLevel (0..6; info logs from 3) */
   char tmp_dir[PATH_MAX]; /* tmpDirectory */
};

extern struct stub_config stub_cfg;

/* Logging through the caller's callbacks (set by InitEx). */
void stub_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void stub_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* An error code as the real library returns it: the code in the low 16 bits, more above. */
VixError stub_err(VixError code);

/* Library state: InitEx bookkeeping and the serialised-call rule. */
VixError rules_init(VixDiskLibGenericLogFunc *log, VixDiskLibGenericLogFunc *warn,
                    VixDiskLibGenericLogFunc *panic, const char *config_file);
void rules_exit(void);
VixError rules_enter(const char *call);             /* any call: initialised, not exited */
VixError rules_enter_serialised(const char *call);  /* the one-thread calls */
void rules_leave_serialised(void);

/* Connect parameters: allocated here, checked at ConnectEx, Open and Disconnect. */
VixDiskLibConnectParams *params_allocate(void);
void params_free(VixDiskLibConnectParams *p);
int params_live(const VixDiskLibConnectParams *p);

/* $STATE/vddk/handles/<pid>: open disk handles of this process (for cap tests). */
void handles_changed(const char *state, int delta);

#endif
