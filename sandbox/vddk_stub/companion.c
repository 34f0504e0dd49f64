/*
 * snapship sandbox: the companion library the stub libvixDiskLib dlopen()s by bare name at
 * InitEx, as the real VDDK does with its own plugins and its bundled OpenSSL/libstdc++. It is
 * found only when LD_LIBRARY_PATH named the tarball's lib64 when the process started.
 */
const char *VixDiskLibVim_Version(void);

const char *VixDiskLibVim_Version(void) { return "snapship-stub-vim 7.0.3"; }
