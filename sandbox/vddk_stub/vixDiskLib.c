/*
 * snapship sandbox: a stub libvixDiskLib (VDDK 7.0.3 ABI) that serves the vSphere simulator's
 * disks (docs/DESIGN.md, "Sandbox disk format").
 *
 * State directory: getenv("SNAPSHIP_STUB_VDDK_STATE"), read at call time; a ':'-separated list
 * serves several simulators (ConnectEx picks the one whose endpoint names host and port).
 *   vddk/endpoint                    "host port thumbprint"  (checked by ConnectEx)
 *   vddk/users                       "user<TAB>password" lines
 *   vddk/snapshots/<vm>/<snapshot>   datastore paths openable for that snapshot
 *   vddk/faults                      read_error_every=N, read_latency_us=N (re-read at Open),
 *                                    connect_error=VIXERROR (re-read at each ConnectEx)
 *   datastores/<ds>/<folder>/<name>.vmdk|.data|.map   layers (descriptor, data, grain map)
 *
 *   vddk/handles/<pid>               open disk handles of that process (written by the stub)
 *
 * Every handle owns its own file descriptors and maps, and reads use pread, so handles may be
 * used from different threads at once (one handle per thread, as with the real library). The
 * exported functions at the end of this file enforce the real library's rules (stub_rules.h)
 * around the implementations (impl_*), and return error codes with VDDK's high bits set.
 *
 * Faults (vddk/faults, re-read at Open): read_error_every=N fails every Nth read with 14011;
 * read_latency_us=N delays each read; read_stall=1 stalls every read until the config file's
 * vixDiskLib.nfc.ReadTimeoutMs has passed (then 14011), or forever without that timeout;
 * read_mib_per_s=N caps a handle's reads at N MiB/s, one after another, as a real NBD
 * connection carries them (peers measured 75-150 MB/s per disk): queued ReadAsync calls overlap
 * their latency but not their transfer.
 */
#define _GNU_SOURCE
#include "vixDiskLib.h"
#include "stub_rules.h"

#include <pthread.h>
#include <time.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_ENV "SNAPSHIP_STUB_VDDK_STATE"
#define MAX_CHAIN 64
#define CONN_MAGIC 0x434f4e4eu
#define HANDLE_MAGIC 0x48444c45u

struct stub_conn {
   unsigned magic;
   char state[PATH_MAX];
   char vm[128];
   char snapshot[128];
   char mode[16];
   int read_only;
   const VixDiskLibConnectParams *params; /* must stay alive and unchanged until Disconnect */
   char server_copy[256];
   char vmx_copy[256];
   char user_copy[256];
};

struct stub_layer {
   int fd;
   uint64_t capacity;
   uint64_t grain;
   uint8_t *map;
   uint64_t map_len;
};

struct stub_handle {
   unsigned magic;
   struct stub_conn *conn;
   int depth;                       /* layers[0] is the top (opened) layer */
   struct stub_layer layers[MAX_CHAIN];
   uint64_t capacity;               /* bytes, of the top layer */
   uint64_t grain;
   char uuid[128];
   char parent_hint[PATH_MAX];
   long read_error_every;
   long read_latency_us;
   long read_stall;
   long read_mib_per_s;             /* the connection's transfer rate (0: unlimited) */
   long long wire_free_ns;          /* CLOCK_MONOTONIC when this handle's last read has crossed */
   int has_owner;                   /* every read call on a handle comes from one thread */
   pthread_t owner;
   /* ReadAsync: a queue served by one stub thread, which runs the completion callbacks */
   pthread_t aio_thread;
   pthread_mutex_t aio_lock;
   pthread_cond_t aio_cond;
   struct aio_op *aio_head, *aio_tail;
   int aio_pending, aio_stop;
};

struct aio_op {
   struct aio_op *next;
   VixDiskLibSectorType start, count;
   uint8_t *buf;
   VixDiskLibCompletionCB cb;
   void *cb_data;
   struct timespec due; /* submit time + read_latency_us: queued reads overlap their latency */
};

static unsigned long read_counter; /* shared by all handles: deterministic fault injection */

/* ----- small helpers ------------------------------------------------------------------- */

static int read_file(const char *path, char **out, size_t *len)
{
   int fd = open(path, O_RDONLY | O_CLOEXEC);
   if (fd < 0)
      return -1;
   struct stat st;
   if (fstat(fd, &st) < 0) {
      close(fd);
      return -1;
   }
   size_t size = (size_t)st.st_size;
   char *buf = malloc(size + 1);
   if (!buf) {
      close(fd);
      return -1;
   }
   size_t got = 0;
   while (got < size) {
      ssize_t n = read(fd, buf + got, size - got);
      if (n < 0 && errno == EINTR)
         continue;
      if (n <= 0)
         break;
      got += (size_t)n;
   }
   close(fd);
   buf[got] = '\0';
   *out = buf;
   if (len)
      *len = got;
   return 0;
}

static char *next_line(char **cursor)
{
   char *s = *cursor;
   if (!s || !*s)
      return NULL;
   char *nl = strchr(s, '\n');
   if (nl) {
      *nl = '\0';
      *cursor = nl + 1;
   } else {
      *cursor = s + strlen(s);
   }
   size_t n = strlen(s);
   while (n && (s[n - 1] == '\r' || s[n - 1] == ' '))
      s[--n] = '\0';
   return s;
}

static const char *state_dir(void)
{
   const char *s = getenv(STATE_ENV);
   return (s && *s) ? s : NULL;
}

/* "[ds1] vm-1/vm-1.vmdk" -> "$STATE/datastores/ds1/vm-1/vm-1.vmdk" */
static int map_datastore_path(const char *state, const char *ds_path, char *out, size_t outlen)
{
   if (!ds_path || ds_path[0] != '[')
      return -1;
   const char *close_b = strchr(ds_path, ']');
   if (!close_b || close_b == ds_path + 1)
      return -1;
   const char *rest = close_b + 1;
   while (*rest == ' ')
      rest++;
   if (!*rest || rest[0] == '/' || strstr(rest, "..") || strstr(ds_path, "\n"))
      return -1;
   int n = snprintf(out, outlen, "%s/datastores/%.*s/%s", state, (int)(close_b - ds_path - 1),
                    ds_path + 1, rest);
   return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

/* ----- descriptor / layer loading ---------------------------------------------------- */

struct descriptor {
   uint64_t capacity;
   uint64_t grain;
   char data[256];
   char map[256];
   char parent[256];
   char uuid[128];
};

static void copy_value(char *dst, size_t dstlen, const char *v)
{
   size_t n = strlen(v);
   if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
      v++;
      n -= 2;
   }
   if (n >= dstlen)
      n = dstlen - 1;
   memcpy(dst, v, n);
   dst[n] = '\0';
}

static int parse_descriptor(const char *path, struct descriptor *d)
{
   char *text;
   if (read_file(path, &text, NULL) < 0)
      return -1;
   memset(d, 0, sizeof *d);
   char *cursor = text, *line;
   while ((line = next_line(&cursor)) != NULL) {
      char *eq = strchr(line, '=');
      if (!eq)
         continue;
      *eq = '\0';
      char tmp[256];
      copy_value(tmp, sizeof tmp, eq + 1);
      if (!strcmp(line, "capacity"))
         d->capacity = strtoull(tmp, NULL, 10);
      else if (!strcmp(line, "grain"))
         d->grain = strtoull(tmp, NULL, 10);
      else if (!strcmp(line, "data"))
         copy_value(d->data, sizeof d->data, tmp);
      else if (!strcmp(line, "map"))
         copy_value(d->map, sizeof d->map, tmp);
      else if (!strcmp(line, "parent"))
         copy_value(d->parent, sizeof d->parent, tmp);
      else if (!strcmp(line, "uuid"))
         copy_value(d->uuid, sizeof d->uuid, tmp);
   }
   free(text);
   if (!d->capacity || !d->grain || !d->data[0] || !d->map[0] || strchr(d->data, '/') ||
       strchr(d->map, '/') || strchr(d->parent, '/'))
      return -1;
   return 0;
}

static void free_layers(struct stub_handle *h)
{
   for (int i = 0; i < h->depth; i++) {
      if (h->layers[i].fd >= 0)
         close(h->layers[i].fd);
      free(h->layers[i].map);
   }
   h->depth = 0;
}

/* Open the chain starting at descriptor `path`; the folder is shared by every layer. */
static VixError load_chain(struct stub_handle *h, const char *path)
{
   char dir[PATH_MAX], cur[PATH_MAX + 300];
   snprintf(cur, sizeof cur, "%s", path);
   const char *slash = strrchr(path, '/');
   snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
   while (1) {
      if (h->depth >= MAX_CHAIN)
         return VIX_E_DISK_PARTIALCHAIN;
      struct descriptor d;
      if (parse_descriptor(cur, &d) < 0)
         return h->depth ? VIX_E_DISK_PARTIALCHAIN : VIX_E_FILE_NOT_FOUND;
      struct stub_layer *l = &h->layers[h->depth];
      char p[PATH_MAX + 300];
      snprintf(p, sizeof p, "%s/%s", dir, d.data);
      l->fd = open(p, O_RDONLY | O_CLOEXEC);
      l->map = NULL;
      if (l->fd < 0)
         return VIX_E_DISK_PARTIALCHAIN;
      h->depth++;
      l->capacity = d.capacity;
      l->grain = d.grain;
      snprintf(p, sizeof p, "%s/%s", dir, d.map);
      char *map;
      size_t len;
      if (read_file(p, &map, &len) < 0)
         return VIX_E_DISK_PARTIALCHAIN;
      l->map = (uint8_t *)map;
      l->map_len = len;
      if (h->depth == 1) {
         h->capacity = d.capacity;
         h->grain = d.grain;
         snprintf(h->uuid, sizeof h->uuid, "%s", d.uuid);
         snprintf(h->parent_hint, sizeof h->parent_hint, "%s", d.parent);
      } else if (d.grain != h->grain) {
         return VIX_E_DISK_INVAL;
      }
      if (!d.parent[0])
         return VIX_OK;
      snprintf(cur, sizeof cur, "%s/%s", dir, d.parent);
   }
}

static void load_faults(struct stub_handle *h, const char *state)
{
   char path[PATH_MAX + 32], *text;
   h->read_error_every = 0;
   h->read_latency_us = 0;
   h->read_stall = 0;
   h->read_mib_per_s = 0;
   snprintf(path, sizeof path, "%s/vddk/faults", state);
   if (read_file(path, &text, NULL) < 0)
      return;
   char *cursor = text, *line;
   while ((line = next_line(&cursor)) != NULL) {
      char *eq = strchr(line, '=');
      if (!eq)
         continue;
      *eq = '\0';
      long v = strtol(eq + 1, NULL, 10);
      if (!strcmp(line, "read_error_every"))
         h->read_error_every = v;
      else if (!strcmp(line, "read_latency_us"))
         h->read_latency_us = v;
      else if (!strcmp(line, "read_stall"))
         h->read_stall = v;
      else if (!strcmp(line, "read_mib_per_s"))
         h->read_mib_per_s = v;
   }
   free(text);
}

/* The VixError every ConnectEx answers while `connect_error=N` is set (0: connect normally).
 * Read at each call, so a test can make VDDK unreachable and reachable again. */
static VixError connect_fault(const char *state)
{
   char path[PATH_MAX + 32], *text;
   VixError err = VIX_OK;
   snprintf(path, sizeof path, "%s/vddk/faults", state);
   if (read_file(path, &text, NULL) < 0)
      return VIX_OK;
   char *cursor = text, *line;
   while ((line = next_line(&cursor)) != NULL)
      if (!strncmp(line, "connect_error=", 14))
         err = (VixError)strtoull(line + 14, NULL, 10);
   free(text);
   return err;
}

/* Is `path` listed in the snapshot file of this connection? */
static VixError snapshot_lists(const struct stub_conn *c, const char *path)
{
   char p[PATH_MAX + 300], *text;
   snprintf(p, sizeof p, "%s/vddk/snapshots/%s/%s", c->state, c->vm, c->snapshot);
   if (read_file(p, &text, NULL) < 0)
      return VIX_E_SNAPSHOT_NOTFOUND;
   VixError err = VIX_E_FILE_NOT_FOUND;
   char *cursor = text, *line;
   while ((line = next_line(&cursor)) != NULL)
      if (!strcmp(line, path)) {
         err = VIX_OK;
         break;
      }
   free(text);
   return err;
}

/* ----- library lifecycle --------------------------------------------------------------- */

VixError VixDiskLib_InitEx(uint32_t majorVersion, uint32_t minorVersion,
                           VixDiskLibGenericLogFunc *log, VixDiskLibGenericLogFunc *warn,
                           VixDiskLibGenericLogFunc *panic, const char *libDir,
                           const char *configFile)
{
   if (majorVersion > VIXDISKLIB_VERSION_MAJOR)
      return stub_err(VIX_E_NOT_SUPPORTED);
   VixError err = rules_init(log, warn, panic, configFile);
   if (err)
      return err;
   stub_log("VixDiskLib: snapship stub %u.%u initialised, libDir=%s\n", majorVersion,
            minorVersion, libDir ? libDir : "(null)");
   return VIX_OK;
}

void VixDiskLib_Exit(void) { rules_exit(); }

VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void) { return params_allocate(); }

void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *params) { params_free(params); }

const char *VixDiskLib_ListTransportModes(void) { return "nbdssl:nbd"; }

VixError VixDiskLib_PrepareForAccess(const VixDiskLibConnectParams *params, const char *identity)
{
   return (params && identity) ? VIX_OK : VIX_E_INVALID_ARG;
}

VixError VixDiskLib_EndAccess(const VixDiskLibConnectParams *params, const char *identity)
{
   return (params && identity) ? VIX_OK : VIX_E_INVALID_ARG;
}

/* ----- connections --------------------------------------------------------------------- */

static int pick_mode(const char *modes, char *out, size_t outlen)
{
   const char *m = modes && *modes ? modes : "nbdssl:nbd";
   while (*m) {
      const char *end = strchr(m, ':');
      size_t n = end ? (size_t)(end - m) : strlen(m);
      if ((n == 6 && !strncmp(m, "nbdssl", 6)) || (n == 3 && !strncmp(m, "nbd", 3))) {
         snprintf(out, outlen, "%.*s", (int)n, m);
         return 0;
      }
      if (!end)
         break;
      m = end + 1;
   }
   return -1;
}

/* "host port thumbprint" of the simulator a state directory belongs to; 0 when readable. */
static int read_endpoint(const char *state, char *host, size_t hostlen, unsigned *port,
                         char *thumb, size_t thumblen)
{
   char path[PATH_MAX + 32], *text;
   snprintf(path, sizeof path, "%s/vddk/endpoint", state);
   if (read_file(path, &text, NULL) < 0)
      return -1;
   char h[256] = "", t[256] = "";
   unsigned pt = 0;
   int n = sscanf(text, "%255s %u %255s", h, &pt, t);
   free(text);
   if (n != 3)
      return -1;
   snprintf(host, hostlen, "%s", h);
   snprintf(thumb, thumblen, "%s", t);
   *port = pt;
   return 0;
}

static unsigned wanted_port(const VixDiskLibConnectParams *p)
{
   return p->port ? p->port : 443;
}

static VixError check_endpoint(const char *state, const VixDiskLibConnectParams *p)
{
   char host[256], thumb[256];
   unsigned port = 0;
   if (read_endpoint(state, host, sizeof host, &port, thumb, sizeof thumb) < 0)
      return VIX_E_HOST_SERVER_NOT_FOUND;
   if (!p->serverName || strcmp(p->serverName, host) || wanted_port(p) != port)
      return VIX_E_HOST_NETWORK_CONN_REFUSED;
   if (!p->thumbPrint || strcasecmp(p->thumbPrint, thumb))
      return VIX_E_NET_HTTP_SSL_SECURITY;
   return VIX_OK;
}

/* The state directory serving a connection. SNAPSHIP_STUB_VDDK_STATE holds one directory or a
 * ':'-separated list (one per simulator, like PATH), because one process may read from several
 * vCenters: the directory whose vddk/endpoint names the connection's host and port serves it.
 * None matching -> the first, whose endpoint check then refuses the connection as before. */
static int pick_state(const VixDiskLibConnectParams *p, char *out, size_t outlen)
{
   const char *cur = state_dir();
   int found = 0;
   while (cur) {
      const char *colon = strchr(cur, ':');
      size_t n = colon ? (size_t)(colon - cur) : strlen(cur);
      if (n && n < outlen && n < PATH_MAX) {
         char cand[PATH_MAX], host[256], thumb[256];
         unsigned port = 0;
         memcpy(cand, cur, n);
         cand[n] = '\0';
         if (!found) {
            snprintf(out, outlen, "%s", cand);
            found = 1;
         }
         if (read_endpoint(cand, host, sizeof host, &port, thumb, sizeof thumb) == 0 &&
             p->serverName && !strcmp(p->serverName, host) && wanted_port(p) == port) {
            snprintf(out, outlen, "%s", cand);
            return 0;
         }
      }
      cur = colon ? colon + 1 : NULL;
   }
   return found ? 0 : -1;
}

static VixError check_user(const char *state, const VixDiskLibConnectParams *p)
{
   if (p->credType != VIXDISKLIB_CRED_UID || !p->creds.uid.userName || !p->creds.uid.password)
      return VIX_E_HOST_USER_PERMISSIONS;
   char path[PATH_MAX + 32], *text;
   snprintf(path, sizeof path, "%s/vddk/users", state);
   if (read_file(path, &text, NULL) < 0)
      return VIX_E_HOST_USER_PERMISSIONS;
   VixError err = VIX_E_HOST_USER_PERMISSIONS;
   char *cursor = text, *line;
   while ((line = next_line(&cursor)) != NULL) {
      char *tab = strchr(line, '\t');
      if (!tab)
         continue;
      *tab = '\0';
      if (!strcmp(line, p->creds.uid.userName) && !strcmp(tab + 1, p->creds.uid.password)) {
         err = VIX_OK;
         break;
      }
   }
   free(text);
   return err;
}

static int valid_ref(const char *s)
{
   if (!s || !*s || strlen(s) >= 128)
      return 0;
   for (; *s; s++)
      if (!isalnum((unsigned char)*s) && !strchr("-_.:", *s))
         return 0;
   return 1;
}

static VixError impl_ConnectEx(const VixDiskLibConnectParams *params, Bool readOnly,
                              const char *snapshotRef, const char *transportModes,
                              VixDiskLibConnection *connection)
{
   if (!params || !connection)
      return VIX_E_INVALID_ARG;
   *connection = NULL;
   char state[PATH_MAX];
   if (pick_state(params, state, sizeof state) < 0)
      return VIX_E_HOST_SERVER_NOT_FOUND;
   VixError err = connect_fault(state);
   if (err)
      return err;
   err = check_endpoint(state, params);
   if (err)
      return err;
   if ((err = check_user(state, params)) != VIX_OK)
      return err;
   const char *vmx = params->vmxSpec;
   if (!vmx || strncmp(vmx, "moref=", 6) || !valid_ref(vmx + 6))
      return VIX_E_INVALID_ARG;
   if (!valid_ref(snapshotRef))
      return VIX_E_INVALID_ARG;
   struct stub_conn *c = calloc(1, sizeof *c);
   if (!c)
      return VIX_E_OUT_OF_MEMORY;
   c->magic = CONN_MAGIC;
   snprintf(c->state, sizeof c->state, "%s", state);
   snprintf(c->vm, sizeof c->vm, "%s", vmx + 6);
   snprintf(c->snapshot, sizeof c->snapshot, "%s", snapshotRef);
   c->read_only = readOnly ? 1 : 0;
   c->params = params;
   snprintf(c->server_copy, sizeof c->server_copy, "%s", params->serverName);
   snprintf(c->vmx_copy, sizeof c->vmx_copy, "%s", params->vmxSpec);
   snprintf(c->user_copy, sizeof c->user_copy, "%s", params->creds.uid.userName);
   char p[PATH_MAX + 300];
   struct stat st;
   snprintf(p, sizeof p, "%s/vddk/snapshots/%s/%s", c->state, c->vm, c->snapshot);
   if (stat(p, &st) < 0) {
      free(c);
      return VIX_E_SNAPSHOT_NOTFOUND;
   }
   if (pick_mode(transportModes, c->mode, sizeof c->mode) < 0) {
      free(c);
      return VIX_E_NOT_SUPPORTED;
   }
   *connection = c;
   return VIX_OK;
}

static VixError impl_Disconnect(VixDiskLibConnection connection)
{
   struct stub_conn *c = connection;
   if (!c || c->magic != CONN_MAGIC)
      return VIX_E_INVALID_ARG;
   c->magic = 0;
   free(c);
   return VIX_OK;
}

/* ----- disks ----------------------------------------------------------------------------- */

static VixError impl_Open(const VixDiskLibConnection connection, const char *path, uint32_t flags,
                         VixDiskLibHandle *diskHandle)
{
   struct stub_conn *c = connection;
   if (!c || c->magic != CONN_MAGIC || !path || !diskHandle)
      return VIX_E_INVALID_ARG;
   *diskHandle = NULL;
   if (!(flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY) || !c->read_only)
      return VIX_E_FILE_READ_ONLY; /* snapshot disks are only ever opened for reading */
   VixError err = snapshot_lists(c, path);
   if (err)
      return err;
   char file[PATH_MAX];
   if (map_datastore_path(c->state, path, file, sizeof file) < 0)
      return VIX_E_FILE_NOT_FOUND;
   struct stub_handle *h = calloc(1, sizeof *h);
   if (!h)
      return VIX_E_OUT_OF_MEMORY;
   h->magic = HANDLE_MAGIC;
   h->conn = c;
   if ((err = load_chain(h, file)) != VIX_OK) {
      free_layers(h);
      free(h);
      return err;
   }
   load_faults(h, c->state);
   stub_log("VixDiskLib: Open %s (%d links, %llu sectors, mode %s)\n", path, h->depth,
            (unsigned long long)(h->capacity / VIXDISKLIB_SECTOR_SIZE), c->mode);
   *diskHandle = h;
   return VIX_OK;
}

static VixError impl_Close(VixDiskLibHandle diskHandle)
{
   struct stub_handle *h = diskHandle;
   if (!h || h->magic != HANDLE_MAGIC)
      return VIX_E_INVALID_ARG;
   h->magic = 0;
   free_layers(h);
   free(h);
   return VIX_OK;
}

const char *VixDiskLib_GetTransportMode(VixDiskLibHandle diskHandle)
{
   struct stub_handle *h = diskHandle;
   if (!h || h->magic != HANDLE_MAGIC)
      return NULL;
   return h->conn->mode;
}

VixError VixDiskLib_GetInfo(VixDiskLibHandle diskHandle, VixDiskLibInfo **info)
{
   struct stub_handle *h = diskHandle;
   if (!h || h->magic != HANDLE_MAGIC || !info)
      return VIX_E_INVALID_ARG;
   VixDiskLibInfo *i = calloc(1, sizeof *i);
   if (!i)
      return VIX_E_OUT_OF_MEMORY;
   uint64_t sectors = h->capacity / VIXDISKLIB_SECTOR_SIZE;
   uint64_t cyl = sectors / (255 * 63);
   i->biosGeo.heads = i->physGeo.heads = 255;
   i->biosGeo.sectors = i->physGeo.sectors = 63;
   i->biosGeo.cylinders = i->physGeo.cylinders = cyl > 65535 ? 65535 : (uint32_t)cyl;
   i->capacity = sectors;
   i->adapterType = VIXDISKLIB_ADAPTER_SCSI_LSILOGIC;
   i->numLinks = h->depth;
   i->parentFileNameHint = h->parent_hint[0] ? strdup(h->parent_hint) : NULL;
   i->uuid = strdup(h->uuid);
   *info = i;
   return VIX_OK;
}

void VixDiskLib_FreeInfo(VixDiskLibInfo *info)
{
   if (!info)
      return;
   free(info->parentFileNameHint);
   free(info->uuid);
   free(info);
}

/* Index of the first layer (top first) holding grain g, or -1. */
static int owner_of(const struct stub_handle *h, uint64_t g)
{
   for (int i = 0; i < h->depth; i++)
      if (g < h->layers[i].map_len && h->layers[i].map[g])
         return i;
   return -1;
}

static int pread_full(int fd, uint8_t *buf, uint64_t len, uint64_t off)
{
   while (len) {
      ssize_t n = pread(fd, buf, len, (off_t)off);
      if (n < 0 && errno == EINTR)
         continue;
      if (n < 0)
         return -1;
      if (n == 0) { /* beyond the end of a sparse file: zeros */
         memset(buf, 0, len);
         return 0;
      }
      buf += n;
      len -= (uint64_t)n;
      off += (uint64_t)n;
   }
   return 0;
}

static VixError impl_Read(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                         VixDiskLibSectorType numSectors, uint8_t *readBuffer)
{
   struct stub_handle *h = diskHandle;
   if (!h || h->magic != HANDLE_MAGIC || !readBuffer)
      return VIX_E_INVALID_ARG;
   uint64_t total = h->capacity / VIXDISKLIB_SECTOR_SIZE;
   if (startSector > total || numSectors > total - startSector)
      return VIX_E_DISK_OUTOFRANGE;
   if (h->read_stall > 0) {
      /* a host that stopped answering: only the NFC read timeout ends the wait */
      long waited = 0;
      while (stub_cfg.read_timeout_ms <= 0 || waited < stub_cfg.read_timeout_ms) {
         usleep(20000);
         waited += 20;
      }
      stub_warn("VixDiskLib: NFC read timed out after %ld ms\n", waited);
      return VIX_E_HOST_TCP_CONN_LOST;
   }
   if (h->read_error_every > 0) {
      unsigned long n = __atomic_add_fetch(&read_counter, 1, __ATOMIC_SEQ_CST);
      if (n % (unsigned long)h->read_error_every == 0)
         return VIX_E_HOST_TCP_CONN_LOST;
   }
   uint64_t off = startSector * VIXDISKLIB_SECTOR_SIZE;
   uint64_t end = off + numSectors * VIXDISKLIB_SECTOR_SIZE;
   uint64_t g = h->grain;
   while (off < end) {
      uint64_t gi = off / g;
      int owner = owner_of(h, gi);
      uint64_t run_end = (gi + 1) * g;
      while (run_end < end && owner_of(h, run_end / g) == owner)
         run_end += g;
      if (run_end > end)
         run_end = end;
      uint8_t *dst = readBuffer + (off - startSector * VIXDISKLIB_SECTOR_SIZE);
      if (owner < 0)
         memset(dst, 0, run_end - off);
      else if (pread_full(h->layers[owner].fd, dst, run_end - off, off) < 0)
         return VIX_E_FILE_ERROR;
      off = run_end;
   }
   return VIX_OK;
}

VixError VixDiskLib_Write(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                          VixDiskLibSectorType numSectors, const uint8_t *writeBuffer)
{
   (void)startSector;
   (void)numSectors;
   (void)writeBuffer;
   struct stub_handle *h = diskHandle;
   if (!h || h->magic != HANDLE_MAGIC)
      return VIX_E_INVALID_ARG;
   return VIX_E_FILE_READ_ONLY;
}

VixError VixDiskLib_Flush(VixDiskLibHandle diskHandle)
{
   struct stub_handle *h = diskHandle;
   return (h && h->magic == HANDLE_MAGIC) ? VIX_OK : VIX_E_INVALID_ARG;
}

static VixError impl_QueryAllocatedBlocks(VixDiskLibHandle diskHandle,
                                         VixDiskLibSectorType startSector,
                                         VixDiskLibSectorType numSectors,
                                         VixDiskLibSectorType chunkSize,
                                         VixDiskLibBlockList **blockList)
{
   struct stub_handle *h = diskHandle;
   if (!h || h->magic != HANDLE_MAGIC || !blockList)
      return VIX_E_INVALID_ARG;
   *blockList = NULL;
   uint64_t total = h->capacity / VIXDISKLIB_SECTOR_SIZE;
   if (chunkSize < VIXDISKLIB_MIN_CHUNK_SIZE || startSector % chunkSize)
      return VIX_E_INVALID_ARG;
   if (startSector > total || numSectors > total - startSector)
      return VIX_E_DISK_OUTOFRANGE;
   if (numSectors % chunkSize && startSector + numSectors != total)
      return VIX_E_INVALID_ARG;
   uint64_t chunks = (numSectors + chunkSize - 1) / chunkSize;
   if (chunks > VIXDISKLIB_MAX_CHUNK_NUMBER)
      return VIX_E_INVALID_ARG;
   VixDiskLibBlockList *list =
       malloc(sizeof(VixDiskLibBlockList) + (chunks ? chunks : 1) * sizeof(VixDiskLibBlock));
   if (!list)
      return VIX_E_OUT_OF_MEMORY;
   list->numBlocks = 0;
   uint64_t spg = h->grain / VIXDISKLIB_SECTOR_SIZE; /* sectors per grain */
   for (uint64_t c = 0; c < chunks; c++) {
      uint64_t s0 = startSector + c * chunkSize;
      uint64_t s1 = s0 + chunkSize;
      if (s1 > startSector + numSectors)
         s1 = startSector + numSectors;
      int allocated = 0;
      for (uint64_t gi = s0 / spg; gi * spg < s1; gi++)
         if (owner_of(h, gi) >= 0) {
            allocated = 1;
            break;
         }
      if (!allocated)
         continue;
      VixDiskLibBlock *last = list->numBlocks ? &list->blocks[list->numBlocks - 1] : NULL;
      if (last && last->offset + last->length == s0)
         last->length += s1 - s0;
      else {
         list->blocks[list->numBlocks].offset = s0;
         list->blocks[list->numBlocks].length = s1 - s0;
         list->numBlocks++;
      }
   }
   *blockList = list;
   return VIX_OK;
}

VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *blockList)
{
   free(blockList);
   return VIX_OK;
}

/* ----- errors ---------------------------------------------------------------------------- */

static const struct {
   VixError code;
   const char *text;
} error_texts[] = {
    {VIX_OK, "The operation was successful"},
    {VIX_E_FAIL, "Unknown error"},
    {VIX_E_OUT_OF_MEMORY, "Memory allocation failed. Out of memory."},
    {VIX_E_INVALID_ARG, "One of the parameters was invalid"},
    {VIX_E_FILE_NOT_FOUND, "The file was not found"},
    {VIX_E_NOT_SUPPORTED, "The operation is not supported"},
    {VIX_E_FILE_ERROR, "A file access error occurred on the host or guest operating system"},
    {VIX_E_FILE_READ_ONLY, "The file is write-protected"},
    {VIX_E_FILE_ACCESS_ERROR, "You do not have access rights to this file"},
    {VIX_E_OBJECT_NOT_FOUND, "The object was not found"},
    {VIX_E_HOST_USER_PERMISSIONS, "Insufficient permissions in the host operating system"},
    {VIX_E_SNAPSHOT_NOTFOUND, "The snapshot was not found"},
    {VIX_E_HOST_SERVER_NOT_FOUND, "Cannot connect to the host"},
    {VIX_E_HOST_NETWORK_CONN_REFUSED, "The host refused the connection"},
    {VIX_E_HOST_TCP_CONN_LOST, "The network connection to the host was lost"},
    {VIX_E_HOST_TCP_SOCKET_ERROR, "A network socket error occurred"},
    {VIX_E_HOST_SERVER_SHUTDOWN, "The host is shutting down"},
    {VIX_E_HOST_SERVER_NOT_AVAILABLE, "The host is not available (maintenance mode)"},
    {VIX_E_HOST_CONNECTION_LOST, "The connection to the host was lost"},
    {VIX_E_OBJECT_IS_BUSY, "The object is busy"},
    {VIX_E_DISK_INVAL, "One of the parameters supplied is invalid"},
    {VIX_E_DISK_PARTIALCHAIN, "The parent virtual disk has been modified since the child was "
                              "created"},
    {VIX_E_DISK_OUTOFRANGE, "The requested sectors are out of range"},
    {VIX_E_NET_HTTP_SSL_SECURITY, "SSL security error: the server's thumbprint does not match"},
};

static char *impl_GetErrorText(VixError err, const char *locale)
{
   (void)locale;
   for (size_t i = 0; i < sizeof error_texts / sizeof error_texts[0]; i++)
      if (error_texts[i].code == err)
         return strdup(error_texts[i].text);
   char buf[64];
   snprintf(buf, sizeof buf, "Unknown error %llu", (unsigned long long)err);
   return strdup(buf);
}

void VixDiskLib_FreeErrorText(char *errMsg) { free(errMsg); }

/* ----- the rules around the calls (stub_rules.h) ----------------------------------------- */

/* The connection's parameters must be the ones ConnectEx saw, still allocated, unchanged. */
static VixError check_params(const struct stub_conn *c, const char *call)
{
   const VixDiskLibConnectParams *p = c->params;
   if (!params_live(p) || !p->serverName || strcmp(p->serverName, c->server_copy) ||
       !p->vmxSpec || strcmp(p->vmxSpec, c->vmx_copy) || !p->creds.uid.userName ||
       strcmp(p->creds.uid.userName, c->user_copy)) {
      stub_warn("VixDiskLib: %s: the connect parameters were freed or changed after ConnectEx "
                "(keep them until Disconnect)\n", call);
      return VIX_E_INVALID_ARG;
   }
   return VIX_OK;
}

VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *params, Bool readOnly,
                              const char *snapshotRef, const char *transportModes,
                              VixDiskLibConnection *connection)
{
   VixError err = rules_enter_serialised("VixDiskLib_ConnectEx");
   if (err)
      return err;
   if (params && !params_live(params)) {
      stub_warn("VixDiskLib: ConnectEx: parameters not from VixDiskLib_AllocateConnectParams "
                "(or already freed)\n");
      err = VIX_E_INVALID_ARG;
   } else {
      err = impl_ConnectEx(params, readOnly, snapshotRef, transportModes, connection);
   }
   rules_leave_serialised();
   return stub_err(err);
}

VixError VixDiskLib_Disconnect(VixDiskLibConnection connection)
{
   VixError err = rules_enter_serialised("VixDiskLib_Disconnect");
   if (err)
      return err;
   struct stub_conn *c = connection;
   if (c && c->magic == CONN_MAGIC)
      err = check_params(c, "Disconnect");
   if (!err)
      err = impl_Disconnect(connection);
   rules_leave_serialised();
   return stub_err(err);
}

static void *aio_main(void *arg)
{
   struct stub_handle *h = arg;
   pthread_mutex_lock(&h->aio_lock);
   while (1) {
      while (!h->aio_head && !h->aio_stop)
         pthread_cond_wait(&h->aio_cond, &h->aio_lock);
      if (!h->aio_head)
         break;
      struct aio_op *op = h->aio_head;
      h->aio_head = op->next;
      if (!h->aio_head)
         h->aio_tail = NULL;
      pthread_mutex_unlock(&h->aio_lock);
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &op->due, NULL) == EINTR)
         ;
      VixError err = impl_Read(h, op->start, op->count, op->buf);
      op->cb(op->cb_data, stub_err(err));
      free(op);
      pthread_mutex_lock(&h->aio_lock);
      h->aio_pending--;
      pthread_cond_broadcast(&h->aio_cond);
   }
   pthread_mutex_unlock(&h->aio_lock);
   return NULL;
}

VixError VixDiskLib_Open(const VixDiskLibConnection connection, const char *path,
                         uint32_t flags, VixDiskLibHandle *diskHandle)
{
   VixError err = rules_enter_serialised("VixDiskLib_Open");
   if (err)
      return err;
   struct stub_conn *c = connection;
   if (c && c->magic == CONN_MAGIC)
      err = check_params(c, "Open");
   if (!err && stub_cfg.aio_buf_64k * stub_cfg.aio_buf_count * 65536L > 16L * 1024 * 1024) {
      stub_warn("VixDiskLib: Open: NFC AIO session memory %ld KiB exceeds 16 MiB\n",
                stub_cfg.aio_buf_64k * stub_cfg.aio_buf_count * 64);
      err = VIX_E_OUT_OF_MEMORY;
   }
   if (!err)
      err = impl_Open(connection, path, flags, diskHandle);
   if (!err) {
      struct stub_handle *h = *diskHandle;
      pthread_mutex_init(&h->aio_lock, NULL);
      pthread_cond_init(&h->aio_cond, NULL);
      if (pthread_create(&h->aio_thread, NULL, aio_main, h) != 0) {
         impl_Close(h);
         *diskHandle = NULL;
         err = VIX_E_OUT_OF_MEMORY;
      } else {
         handles_changed(c->state, +1);
      }
   }
   rules_leave_serialised();
   return stub_err(err);
}

VixError VixDiskLib_Close(VixDiskLibHandle diskHandle)
{
   VixError err = rules_enter_serialised("VixDiskLib_Close");
   if (err)
      return err;
   struct stub_handle *h = diskHandle;
   if (!h || h->magic != HANDLE_MAGIC) {
      rules_leave_serialised();
      return stub_err(VIX_E_INVALID_ARG);
   }
   pthread_mutex_lock(&h->aio_lock);
   int pending = h->aio_pending;
   if (!pending)
      h->aio_stop = 1;
   pthread_cond_broadcast(&h->aio_cond);
   pthread_mutex_unlock(&h->aio_lock);
   if (pending) {
      stub_warn("VixDiskLib: Close with %d asynchronous reads pending (call Wait first)\n",
                pending);
      rules_leave_serialised();
      return stub_err(VIX_E_OBJECT_IS_BUSY);
   }
   pthread_join(h->aio_thread, NULL);
   char state[PATH_MAX];
   snprintf(state, sizeof state, "%s", h->conn->state);
   err = impl_Close(h);
   if (!err)
      handles_changed(state, -1);
   rules_leave_serialised();
   return stub_err(err);
}

/* Every read call on a handle from one thread (the first that read). */
static VixError check_owner(struct stub_handle *h, const char *call)
{
   if (!h || h->magic != HANDLE_MAGIC)
      return VIX_E_INVALID_ARG;
   pthread_mutex_lock(&h->aio_lock);
   int ok = 1;
   if (!h->has_owner) {
      h->owner = pthread_self();
      h->has_owner = 1;
   } else if (!pthread_equal(h->owner, pthread_self())) {
      ok = 0;
   }
   pthread_mutex_unlock(&h->aio_lock);
   if (!ok) {
      stub_warn("VixDiskLib: %s on a handle another thread reads (one thread per handle)\n",
                call);
      return VIX_E_OBJECT_IS_BUSY;
   }
   return VIX_OK;
}

/* When a read of `sectors` submitted now has arrived: after the reads before it on this handle
 * have crossed the wire (read_mib_per_s), plus the read latency. Only the handle's owner thread
 * calls this, so the wire clock needs no lock. */
static struct timespec read_due(struct stub_handle *h, VixDiskLibSectorType sectors)
{
   struct timespec now;
   clock_gettime(CLOCK_MONOTONIC, &now);
   long long at = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
   if (h->read_mib_per_s > 0) {
      long long bytes = (long long)sectors * VIXDISKLIB_SECTOR_SIZE;
      if (h->wire_free_ns > at)
         at = h->wire_free_ns;
      at += bytes * 1000000000LL / (h->read_mib_per_s * 1048576LL);
      h->wire_free_ns = at;
   }
   at += (long long)h->read_latency_us * 1000LL;
   struct timespec due = {(time_t)(at / 1000000000LL), (long)(at % 1000000000LL)};
   return due;
}

VixError VixDiskLib_Read(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                         VixDiskLibSectorType numSectors, uint8_t *readBuffer)
{
   VixError err = rules_enter("VixDiskLib_Read");
   if (err)
      return err;
   if ((err = check_owner(diskHandle, "Read")) == VIX_OK) {
      struct stub_handle *h = diskHandle;
      if (h->read_latency_us > 0 || h->read_mib_per_s > 0) {
         struct timespec due = read_due(h, numSectors);
         while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR)
            ;
      }
      err = impl_Read(diskHandle, startSector, numSectors, readBuffer);
   }
   return stub_err(err);
}

VixError VixDiskLib_ReadAsync(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                              VixDiskLibSectorType numSectors, uint8_t *readBuffer,
                              VixDiskLibCompletionCB callback, void *cbData)
{
   VixError err = rules_enter("VixDiskLib_ReadAsync");
   if (err)
      return err;
   if ((err = check_owner(diskHandle, "ReadAsync")) != VIX_OK)
      return stub_err(err);
   struct stub_handle *h = diskHandle;
   uint64_t total = h->capacity / VIXDISKLIB_SECTOR_SIZE;
   if (!readBuffer || !callback)
      return stub_err(VIX_E_INVALID_ARG);
   if (startSector > total || numSectors > total - startSector)
      return stub_err(VIX_E_DISK_OUTOFRANGE);
   if (numSectors * VIXDISKLIB_SECTOR_SIZE > 2u * 1024 * 1024) {
      stub_warn("VixDiskLib: ReadAsync of more than 2 MiB\n");
      return stub_err(VIX_E_INVALID_ARG);
   }
   struct aio_op *op = calloc(1, sizeof *op);
   if (!op)
      return stub_err(VIX_E_OUT_OF_MEMORY);
   op->start = startSector;
   op->count = numSectors;
   op->buf = readBuffer;
   op->cb = callback;
   op->cb_data = cbData;
   op->due = read_due(h, numSectors);
   pthread_mutex_lock(&h->aio_lock);
   if (h->aio_tail)
      h->aio_tail->next = op;
   else
      h->aio_head = op;
   h->aio_tail = op;
   h->aio_pending++;
   pthread_cond_broadcast(&h->aio_cond);
   pthread_mutex_unlock(&h->aio_lock);
   return VIX_ASYNC;
}

VixError VixDiskLib_Wait(VixDiskLibHandle diskHandle)
{
   VixError err = rules_enter("VixDiskLib_Wait");
   if (err)
      return err;
   if ((err = check_owner(diskHandle, "Wait")) != VIX_OK)
      return stub_err(err);
   struct stub_handle *h = diskHandle;
   pthread_mutex_lock(&h->aio_lock);
   while (h->aio_pending)
      pthread_cond_wait(&h->aio_cond, &h->aio_lock);
   pthread_mutex_unlock(&h->aio_lock);
   return VIX_OK;
}

VixError VixDiskLib_QueryAllocatedBlocks(VixDiskLibHandle diskHandle,
                                         VixDiskLibSectorType startSector,
                                         VixDiskLibSectorType numSectors,
                                         VixDiskLibSectorType chunkSize,
                                         VixDiskLibBlockList **blockList)
{
   VixError err = rules_enter_serialised("VixDiskLib_QueryAllocatedBlocks");
   if (err)
      return err;
   err = impl_QueryAllocatedBlocks(diskHandle, startSector, numSectors, chunkSize, blockList);
   rules_leave_serialised();
   return stub_err(err);
}

char *VixDiskLib_GetErrorText(VixError err, const char *locale)
{
   return impl_GetErrorText(err & 0xFFFF, locale);
}
