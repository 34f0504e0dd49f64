/*
 * snapship sandbox: the subset of VMware VDDK 7.0.3's libvixDiskLib ABI that snapship uses.
 *
 * Written for the stub library in this directory. Type sizes, struct member order and calling
 * conventions follow the published VDDK 7.0.3 API so that a client built against the stub (or
 * a ctypes binding written for it) works unchanged with the real library.
 */
#ifndef SNAPSHIP_STUB_VIXDISKLIB_H
#define SNAPSHIP_STUB_VIXDISKLIB_H

#include <stdarg.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t VixError;
typedef uint64_t VixDiskLibSectorType;
typedef char Bool;

#define VIXDISKLIB_VERSION_MAJOR 7
#define VIXDISKLIB_VERSION_MINOR 0

#define VIXDISKLIB_SECTOR_SIZE 512
#define VIXDISKLIB_MIN_CHUNK_SIZE 128
#define VIXDISKLIB_MAX_CHUNK_NUMBER (512 * 1024)

#define VIXDISKLIB_FLAG_OPEN_UNBUFFERED 1
#define VIXDISKLIB_FLAG_OPEN_SINGLE_LINK 2
#define VIXDISKLIB_FLAG_OPEN_READ_ONLY 4

/* Error codes (values as in VMware's vix.h). */
enum {
   VIX_OK = 0,
   VIX_E_FAIL = 1,
   VIX_E_OUT_OF_MEMORY = 2,
   VIX_E_INVALID_ARG = 3,
   VIX_E_FILE_NOT_FOUND = 4,
   VIX_E_OBJECT_IS_BUSY = 5,
   VIX_E_NOT_SUPPORTED = 6,
   VIX_E_FILE_ERROR = 7,
   VIX_E_FILE_READ_ONLY = 11,
   VIX_E_FILE_ACCESS_ERROR = 13,
   VIX_E_OBJECT_NOT_FOUND = 25,
   VIX_E_HOST_NOT_CONNECTED = 26,
   VIX_E_AUTHENTICATION_FAIL = 35,
   VIX_E_HOST_CONNECTION_LOST = 36,
   VIX_E_INVALID_HANDLE = 1000,
   VIX_E_HOST_USER_PERMISSIONS = 3014,
   VIX_E_SNAPSHOT_NOTFOUND = 13003,
   VIX_E_HOST_SERVER_NOT_FOUND = 14008,
   VIX_E_HOST_NETWORK_CONN_REFUSED = 14009,
   VIX_E_HOST_TCP_SOCKET_ERROR = 14010,
   VIX_E_HOST_TCP_CONN_LOST = 14011,
   VIX_E_HOST_SERVER_SHUTDOWN = 14014,
   VIX_E_HOST_SERVER_NOT_AVAILABLE = 14015,
   VIX_ASYNC = 25000,
   VIX_E_DISK_INVAL = 16000,
   VIX_E_DISK_NOINIT = 16001,
   VIX_E_DISK_NOIO = 16002,
   VIX_E_DISK_PARTIALCHAIN = 16003,
   VIX_E_DISK_OUTOFRANGE = 16007,
   VIX_E_DISK_INVALID_CONNECTION = 16054,
   VIX_E_NET_HTTP_SSL_SECURITY = 30201
};

typedef void *VixDiskLibConnection;
typedef void *VixDiskLibHandle;

typedef void VixDiskLibGenericLogFunc(const char *fmt, va_list args);

typedef enum {
   VIXDISKLIB_CRED_UID = 1,
   VIXDISKLIB_CRED_SESSIONID = 2,
   VIXDISKLIB_CRED_TICKETID = 3,
   VIXDISKLIB_CRED_SSPI = 4,
   VIXDISKLIB_CRED_UNKNOWN = 256
} VixDiskLibCredType;

typedef enum {
   VIXDISKLIB_SPEC_VMX = 0,
   VIXDISKLIB_SPEC_VSTORAGE_OBJECT = 1,
   VIXDISKLIB_SPEC_UNKNOWN = 2
} VixDiskLibSpecType;

typedef struct {
   char *id;
   char *datastoreMoRef;
   char *ssId;
} VixDiskLibVStorageObjectSpec;

typedef struct {
   char *userName;
   char *password;
} VixDiskLibUidPasswdCreds;

typedef struct {
   char *cookie;
   char *userName;
   char *key;
} VixDiskLibSessionIdCreds;

struct VixDiskLibTicketIdCreds;

typedef struct {
   char *vmxSpec;            /* "moref=vm-N" */
   char *serverName;
   char *thumbPrint;         /* SHA-1, "AA:BB:..." */
   long privateUse;
   VixDiskLibCredType credType;
   union {
      VixDiskLibUidPasswdCreds uid;
      VixDiskLibSessionIdCreds sessionId;
      struct VixDiskLibTicketIdCreds *ticketId;
   } creds;
   uint32_t port;
   uint32_t nfcHostPort;
   char *vimApiVer;
   char reserved[8];
   void *reserved2;
   union {
      VixDiskLibVStorageObjectSpec vStorageObjSpec;
   } spec;
   VixDiskLibSpecType specType;
} VixDiskLibConnectParams;

typedef struct {
   uint32_t cylinders;
   uint32_t heads;
   uint32_t sectors;
} VixDiskLibGeometry;

typedef enum {
   VIXDISKLIB_ADAPTER_IDE = 1,
   VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC = 2,
   VIXDISKLIB_ADAPTER_SCSI_LSILOGIC = 3,
   VIXDISKLIB_ADAPTER_UNKNOWN = 256
} VixDiskLibAdapterType;

typedef struct {
   VixDiskLibGeometry biosGeo;
   VixDiskLibGeometry physGeo;
   VixDiskLibSectorType capacity;       /* in sectors */
   VixDiskLibAdapterType adapterType;
   int numLinks;
   char *parentFileNameHint;
   char *uuid;
} VixDiskLibInfo;

typedef struct {
   VixDiskLibSectorType offset;
   VixDiskLibSectorType length;
} VixDiskLibBlock;

typedef struct {
   uint32_t numBlocks;
   VixDiskLibBlock blocks[1];
} VixDiskLibBlockList;

VixError VixDiskLib_InitEx(uint32_t majorVersion, uint32_t minorVersion,
                           VixDiskLibGenericLogFunc *log, VixDiskLibGenericLogFunc *warn,
                           VixDiskLibGenericLogFunc *panic, const char *libDir,
                           const char *configFile);
void VixDiskLib_Exit(void);
VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void);
void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *params);
const char *VixDiskLib_ListTransportModes(void);
VixError VixDiskLib_PrepareForAccess(const VixDiskLibConnectParams *params,
                                     const char *identity);
VixError VixDiskLib_EndAccess(const VixDiskLibConnectParams *params, const char *identity);
VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *params, Bool readOnly,
                              const char *snapshotRef, const char *transportModes,
                              VixDiskLibConnection *connection);
VixError VixDiskLib_Disconnect(VixDiskLibConnection connection);
VixError VixDiskLib_Open(const VixDiskLibConnection connection, const char *path,
                         uint32_t flags, VixDiskLibHandle *diskHandle);
VixError VixDiskLib_Close(VixDiskLibHandle diskHandle);
const char *VixDiskLib_GetTransportMode(VixDiskLibHandle diskHandle);
VixError VixDiskLib_GetInfo(VixDiskLibHandle diskHandle, VixDiskLibInfo **info);
void VixDiskLib_FreeInfo(VixDiskLibInfo *info);
VixError VixDiskLib_Read(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                         VixDiskLibSectorType numSectors, uint8_t *readBuffer);
typedef void (*VixDiskLibCompletionCB)(void *cbData, VixError result);
VixError VixDiskLib_ReadAsync(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                              VixDiskLibSectorType numSectors, uint8_t *readBuffer,
                              VixDiskLibCompletionCB callback, void *cbData);
VixError VixDiskLib_Wait(VixDiskLibHandle diskHandle);
VixError VixDiskLib_Write(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                          VixDiskLibSectorType numSectors, const uint8_t *writeBuffer);
VixError VixDiskLib_Flush(VixDiskLibHandle diskHandle);
VixError VixDiskLib_QueryAllocatedBlocks(VixDiskLibHandle diskHandle,
                                         VixDiskLibSectorType startSector,
                                         VixDiskLibSectorType numSectors,
                                         VixDiskLibSectorType chunkSize,
                                         VixDiskLibBlockList **blockList);
VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *blockList);
char *VixDiskLib_GetErrorText(VixError err, const char *locale);
void VixDiskLib_FreeErrorText(char *errMsg);

#ifdef __cplusplus
}
#endif

#endif
