/*
 * snapship sandbox: what the stub enforces on its caller (see stub_rules.h for the list).
 * A broken rule fails the call with a VDDK error and says which rule through the warning log.
 */
#define _GNU_SOURCE
#include "stub_rules.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define COMPANION "libvixDiskLibVim.so.7"
#define MAX_PARAMS 4096
#define HIGH_BITS 0x0000000700050000ull /* what VDDK packs above the code: callers mask */

struct stub_config stub_cfg;

static VixDiskLibGenericLogFunc *log_func, *warn_func;
static int initialised, exited, forked;
static pthread_t init_thread;
static pthread_mutex_t serial_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t params_lock = PTHREAD_MUTEX_INITIALIZER;
static void *companion;

static struct {
   VixDiskLibConnectParams *p;
   int live;
} params[MAX_PARAMS];
static int params_used;

static void vlog(VixDiskLibGenericLogFunc *fn, const char *fmt, va_list ap)
{
   if (fn)
      fn(fmt, ap);
}

void stub_log(const char *fmt, ...)
{
   if (stub_cfg.log_level && stub_cfg.log_level < 3)
      return;
   va_list ap;
   va_start(ap, fmt);
   vlog(log_func, fmt, ap);
   va_end(ap);
}

void stub_warn(const char *fmt, ...)
{
   va_list ap;
   va_start(ap, fmt);
   vlog(warn_func, fmt, ap);
   va_end(ap);
}

VixError stub_err(VixError code)
{
   if (code == VIX_OK || code == VIX_ASYNC)
      return code;
   return code | HIGH_BITS;
}

static void on_fork_child(void) { forked = 1; }

static VixError parse_config(const char *path)
{
   memset(&stub_cfg, 0, sizeof stub_cfg);
   if (!path)
      return VIX_OK;
   FILE *f = fopen(path, "re");
   if (!f) {
      stub_warn("VixDiskLib: cannot read config file %s: %s\n", path, strerror(errno));
      return stub_err(VIX_E_FILE_NOT_FOUND);
   }
   char line[PATH_MAX + 128];
   while (fgets(line, sizeof line, f)) {
      char *eq = strchr(line, '=');
      if (!eq || line[0] == '#')
         continue;
      *eq = '\0';
      char *key = line, *val = eq + 1;
      while (*key == ' ')
         key++;
      for (char *e = key + strlen(key); e > key && e[-1] == ' '; *--e = '\0')
         ;
      while (*val == ' ' || *val == '"')
         val++;
      for (char *e = val + strlen(val);
           e > val && (e[-1] == '\n' || e[-1] == ' ' || e[-1] == '"' || e[-1] == '\r');)
         *--e = '\0';
      if (!strcmp(key, "vixDiskLib.nfc.ReadTimeoutMs"))
         stub_cfg.read_timeout_ms = strtol(val, NULL, 10);
      else if (!strcmp(key, "vixDiskLib.nfcAio.Session.BufSizeIn64KB"))
         stub_cfg.aio_buf_64k = strtol(val, NULL, 10);
      else if (!strcmp(key, "vixDiskLib.nfcAio.Session.BufCount"))
         stub_cfg.aio_buf_count = strtol(val, NULL, 10);
      else if (!strcmp(key, "vixDiskLib.transport.LogLevel"))
         stub_cfg.log_level = strtol(val, NULL, 10);
      else if (!strcmp(key, "tmpDirectory"))
         snprintf(stub_cfg.tmp_dir, sizeof stub_cfg.tmp_dir, "%s", val);
   }
   fclose(f);
   struct stat st;
   if (stub_cfg.tmp_dir[0] && (stat(stub_cfg.tmp_dir, &st) < 0 || !S_ISDIR(st.st_mode))) {
      stub_warn("VixDiskLib: tmpDirectory %s is not a directory\n", stub_cfg.tmp_dir);
      return stub_err(VIX_E_FILE_NOT_FOUND);
   }
   return VIX_OK;
}

VixError rules_init(VixDiskLibGenericLogFunc *log, VixDiskLibGenericLogFunc *warn,
                    VixDiskLibGenericLogFunc *panic, const char *config_file)
{
   warn_func = warn;
   if (initialised || exited) {
      stub_warn("VixDiskLib: InitEx called %s; it runs once per process\n",
                exited ? "after Exit" : "twice");
      return stub_err(VIX_E_FAIL);
   }
   if (!log || !warn || !panic) {
      stub_warn("VixDiskLib: InitEx needs log, warning and panic callbacks (not NULL)\n");
      return stub_err(VIX_E_INVALID_ARG);
   }
   if (syscall(SYS_gettid) != getpid()) {
      stub_warn("VixDiskLib: InitEx must run in the process's main thread\n");
      return stub_err(VIX_E_FAIL);
   }
   /* By bare name, like VDDK's own plugins: only LD_LIBRARY_PATH at process start finds it. */
   companion = dlopen(COMPANION, RTLD_NOW | RTLD_LOCAL);
   if (!companion) {
      stub_warn("VixDiskLib: cannot load %s (start the process with LD_LIBRARY_PATH set to "
                "the VDDK lib64 directory): %s\n", COMPANION, dlerror());
      return stub_err(VIX_E_FILE_NOT_FOUND);
   }
   VixError err = parse_config(config_file);
   if (err)
      return err;
   log_func = log;
   init_thread = pthread_self();
   initialised = 1;
   pthread_atfork(NULL, NULL, on_fork_child);
   /* VDDK 7 phones home at start and complains when it cannot: callers demote this. */
   stub_warn("VDDK_PhoneHome: Get CEIP status failed: the stub has no vCenter telemetry\n");
   return VIX_OK;
}

void rules_exit(void)
{
   if (initialised && !exited) {
      exited = 1;
      if (companion)
         dlclose(companion);
      companion = NULL;
   }
}

VixError rules_enter(const char *call)
{
   if (forked) {
      stub_warn("VixDiskLib: %s in a process forked after InitEx\n", call);
      return stub_err(VIX_E_FAIL);
   }
   if (!initialised || exited) {
      stub_warn("VixDiskLib: %s %s\n", call, exited ? "after Exit" : "before InitEx");
      return stub_err(VIX_E_FAIL);
   }
   return VIX_OK;
}

VixError rules_enter_serialised(const char *call)
{
   VixError err = rules_enter(call);
   if (err)
      return err;
   if (!pthread_equal(pthread_self(), init_thread)) {
      stub_warn("VixDiskLib: %s called from a thread other than the one that called InitEx\n",
                call);
      return stub_err(VIX_E_NOT_SUPPORTED);
   }
   if (pthread_mutex_trylock(&serial_lock) != 0) {
      stub_warn("VixDiskLib: %s called while another connect/open/close runs\n", call);
      return stub_err(VIX_E_OBJECT_IS_BUSY);
   }
   return VIX_OK;
}

void rules_leave_serialised(void) { pthread_mutex_unlock(&serial_lock); }

VixDiskLibConnectParams *params_allocate(void)
{
   VixDiskLibConnectParams *p = calloc(1, sizeof *p);
   if (!p)
      return NULL;
   pthread_mutex_lock(&params_lock);
   if (params_used < MAX_PARAMS) {
      params[params_used].p = p;
      params[params_used].live = 1;
      params_used++;
   }
   pthread_mutex_unlock(&params_lock);
   return p;
}

void params_free(VixDiskLibConnectParams *p)
{
   if (!p)
      return;
   pthread_mutex_lock(&params_lock);
   for (int i = 0; i < params_used; i++)
      if (params[i].p == p && params[i].live) {
         params[i].live = 0;
         /* kept (poisoned) rather than freed, so a later use is caught, not undefined */
         memset(p, 0x5a, sizeof *p);
         break;
      }
   pthread_mutex_unlock(&params_lock);
}

int params_live(const VixDiskLibConnectParams *p)
{
   int live = 0;
   pthread_mutex_lock(&params_lock);
   for (int i = 0; i < params_used; i++)
      if (params[i].p == p) {
         live = params[i].live;
         break;
      }
   pthread_mutex_unlock(&params_lock);
   return live;
}

void handles_changed(const char *state, int delta)
{
   static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
   static long open_handles;
   if (!state)
      return;
   pthread_mutex_lock(&lock);
   open_handles += delta;
   char dir[PATH_MAX], path[PATH_MAX + 32], tmp[PATH_MAX + 48];
   snprintf(dir, sizeof dir, "%s/vddk/handles", state);
   mkdir(dir, 0755);
   snprintf(path, sizeof path, "%s/%d", dir, (int)getpid());
   if (open_handles <= 0) {
      unlink(path);
   } else {
      snprintf(tmp, sizeof tmp, "%s.tmp", path);
      int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
         char buf[32];
         int n = snprintf(buf, sizeof buf, "%ld\n", open_handles);
         if (write(fd, buf, (size_t)n) == n)
            rename(tmp, path);
         close(fd);
      }
   }
   pthread_mutex_unlock(&lock);
}
