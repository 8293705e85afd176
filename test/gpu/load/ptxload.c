// ptxload is dutyload.cu for a machine that has the NVIDIA driver and nothing
// else: no CUDA toolkit, no Python. It keeps one GPU busy for DUTY percent of
// every 100 ms, for SECONDS, while holding MIB of device memory, with the
// same command line, output and duty loop as dutyload.cu.
//
//   gcc -O2 -std=c11 -Wall -Wextra -o ptxload ptxload.c -ldl
//   ./ptxload DUTY SECONDS MIB
//
// Nothing CUDA is needed to build it: the driver library (libcuda.so.1) is
// opened at run time and the kernel is PTX text that the driver compiles for
// whatever GPU it finds. The environment variable KGE_LIBCUDA names another
// library to open instead; the tests point it at a stand-in (fakecuda.c).
//
// The kernel is dutyload.cu's: one thread spins on the GPU's nanosecond timer
// (%globaltimer) for the busy part of the period. Busy time is measured with
// CUDA events around each launch, as dutyload.cu does, so it is the time the
// GPU spent rather than the host's view of it.
//
// Exit status: 0 done, 1 a CUDA call failed, 2 usage, 3 no usable driver.

#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

static const double kPeriod = 0.1;  // seconds

// The kernel. PTX 7.0 needs a CUDA 11.0 driver (R450) or newer; sm_50 is the
// oldest target that driver still compiles for, and the driver JIT-compiles it
// for the GPU it finds, so one text serves every GPU since Maxwell.
static const char kPTX[] =
    ".version 7.0\n"
    ".target sm_50\n"
    ".address_size 64\n"
    "\n"
    ".visible .entry spin(\n"
    "\t.param .u64 ns\n"
    ")\n"
    "{\n"
    "\t.reg .pred %p<2>;\n"
    "\t.reg .b64 %rd<5>;\n"
    "\n"
    "\tld.param.u64 %rd1, [ns];\n"
    "\tmov.u64 %rd2, %globaltimer;\n"
    "WAIT:\n"
    "\tmov.u64 %rd3, %globaltimer;\n"
    "\tsub.s64 %rd4, %rd3, %rd2;\n"
    "\tsetp.lt.u64 %p1, %rd4, %rd1;\n"
    "\t@%p1 bra WAIT;\n"
    "\tret;\n"
    "}\n";

// The driver API, declared here because cuda.h comes with the toolkit, not
// the driver. Only what this program uses, with the ABI the driver exports.
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef int CUjit_option;

enum {
  CUDA_SUCCESS = 0,
  CU_JIT_ERROR_LOG_BUFFER = 5,
  CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
};

static CUresult (*cuInit)(unsigned int flags);
static CUresult (*cuDeviceGet)(CUdevice *dev, int ordinal);
static CUresult (*cuDeviceGetName)(char *name, int len, CUdevice dev);
static CUresult (*cuCtxCreate)(CUcontext *ctx, unsigned int flags, CUdevice dev);
static CUresult (*cuCtxDestroy)(CUcontext ctx);
static CUresult (*cuCtxSynchronize)(void);
static CUresult (*cuModuleLoadDataEx)(CUmodule *mod, const void *image, unsigned int n, CUjit_option *options,
                                      void **values);
static CUresult (*cuModuleGetFunction)(CUfunction *f, CUmodule mod, const char *name);
static CUresult (*cuModuleUnload)(CUmodule mod);
static CUresult (*cuMemAlloc)(CUdeviceptr *ptr, size_t bytes);
static CUresult (*cuMemFree)(CUdeviceptr ptr);
static CUresult (*cuMemsetD8)(CUdeviceptr ptr, unsigned char value, size_t n);
static CUresult (*cuLaunchKernel)(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                                  unsigned int by, unsigned int bz, unsigned int shared, CUstream stream,
                                  void **params, void **extra);
static CUresult (*cuEventCreate)(CUevent *ev, unsigned int flags);
static CUresult (*cuEventDestroy)(CUevent ev);
static CUresult (*cuEventRecord)(CUevent ev, CUstream stream);
static CUresult (*cuEventSynchronize)(CUevent ev);
static CUresult (*cuEventElapsedTime)(float *ms, CUevent start, CUevent stop);
static CUresult (*cuGetErrorString)(CUresult err, const char **str);

// Where a call has versioned names, the newest one this program's declaration
// matches comes first. The plain names of cuCtxCreate, cuCtxDestroy,
// cuMemAlloc, cuMemFree, cuMemsetD8 and cuEventDestroy keep the ABI of CUDA
// 3.x (32-bit sizes and device pointers, and the context and event rules
// that 4.0 changed) for programs built back then; binding them would get
// that ABI. The plain
// cuEventElapsedTime is still the current one on drivers before CUDA 12.8,
// which have no _v2, and it takes the same arguments.
static const struct {
  const char *names[2];  // tried in order
  void *slot;            // a pointer to one of the function pointers above
  int optional;
} kSymbols[] = {
    {{"cuInit"}, &cuInit, 0},
    {{"cuDeviceGet"}, &cuDeviceGet, 0},
    {{"cuDeviceGetName"}, &cuDeviceGetName, 0},
    {{"cuCtxCreate_v2"}, &cuCtxCreate, 0},
    {{"cuCtxDestroy_v2"}, &cuCtxDestroy, 0},
    {{"cuCtxSynchronize"}, &cuCtxSynchronize, 0},
    {{"cuModuleLoadDataEx"}, &cuModuleLoadDataEx, 0},
    {{"cuModuleGetFunction"}, &cuModuleGetFunction, 0},
    {{"cuModuleUnload"}, &cuModuleUnload, 0},
    {{"cuMemAlloc_v2"}, &cuMemAlloc, 0},
    {{"cuMemFree_v2"}, &cuMemFree, 0},
    {{"cuMemsetD8_v2"}, &cuMemsetD8, 0},
    {{"cuLaunchKernel"}, &cuLaunchKernel, 0},
    {{"cuEventCreate"}, &cuEventCreate, 0},
    {{"cuEventDestroy_v2"}, &cuEventDestroy, 0},
    {{"cuEventRecord"}, &cuEventRecord, 0},
    {{"cuEventSynchronize"}, &cuEventSynchronize, 0},
    {{"cuEventElapsedTime_v2", "cuEventElapsedTime"}, &cuEventElapsedTime, 0},
    // Only for messages; a driver without it still runs the load.
    {{"cuGetErrorString"}, &cuGetErrorString, 1},
};

// load_driver opens the driver and binds every entry point before any is
// called, so a driver that is missing or too old is reported as such (exit 3)
// rather than as a failure halfway through.
static int load_driver(void) {
  const char *path = getenv("KGE_LIBCUDA");
  if (path == NULL || *path == '\0') path = "libcuda.so.1";
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "ptxload: cannot open %s: %s\nptxload: the NVIDIA driver is needed (libcuda.so.1, R450 or newer)\n",
            path, dlerror());
    return 0;
  }
  for (size_t i = 0; i < sizeof kSymbols / sizeof kSymbols[0]; i++) {
    void *sym = NULL;
    for (size_t j = 0; j < 2 && sym == NULL && kSymbols[i].names[j] != NULL; j++) {
      sym = dlsym(lib, kSymbols[i].names[j]);
    }
    if (sym == NULL) {
      if (kSymbols[i].optional) continue;
      const char *alt = kSymbols[i].names[1];
      fprintf(stderr,
              "ptxload: %s has no symbol %s%s%s\nptxload: the NVIDIA driver is needed (libcuda.so.1, R450 or newer)\n",
              path, kSymbols[i].names[0], alt ? " or " : "", alt ? alt : "");
      return 0;
    }
    // POSIX makes a cast from dlsym's void * to a function pointer work, but
    // ISO C leaves it undefined and gcc -pedantic warns; copying the bytes
    // gets the same pointer without either.
    memcpy(kSymbols[i].slot, &sym, sizeof sym);
  }
  return 1;
}

static void check(CUresult err, const char *what) {
  if (err == CUDA_SUCCESS) return;
  const char *msg = NULL;
  if (cuGetErrorString == NULL || cuGetErrorString(err, &msg) != CUDA_SUCCESS || msg == NULL) msg = "unknown error";
  fprintf(stderr, "ptxload: %s: %s (CUresult %d)\n", what, msg, err);
  exit(1);
}

static int usage(const char *msg) {
  fprintf(stderr, "ptxload: %s\nusage: ptxload DUTY(0-100) SECONDS(>0) MIB(>=0)\n", msg);
  return 2;
}

// load_module JIT-compiles the PTX; the compiler's own log is what says what
// is wrong when it fails, so it is printed with the error.
static CUmodule load_module(void) {
  char log[4096] = "";
  CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *vals[] = {log, (void *)(uintptr_t)sizeof log};
  CUmodule mod = NULL;
  CUresult err = cuModuleLoadDataEx(&mod, kPTX, 2, opts, vals);
  if (err != CUDA_SUCCESS) {
    log[sizeof log - 1] = '\0';
    if (log[0] != '\0') fprintf(stderr, "ptxload: PTX JIT log:\n%s\n", log);
    check(err, "cuModuleLoadDataEx (JIT-compile the spin kernel)");
  }
  return mod;
}

static void launch(CUfunction f, unsigned long long ns) {
  void *params[] = {&ns};
  check(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL), "cuLaunchKernel");
}

int main(int argc, char **argv) {
  if (argc != 4) return usage("want three arguments");
  // An empty argument would parse as 0 with nothing left over; refuse it.
  char *end;
  long duty = strtol(argv[1], &end, 10);
  if (end == argv[1] || *end != '\0' || duty < 0 || duty > 100) return usage("duty must be 0-100");
  double seconds = strtod(argv[2], &end);
  if (end == argv[2] || *end != '\0' || !(seconds > 0)) return usage("seconds must be positive");
  long long mib = strtoll(argv[3], &end, 10);
  if (end == argv[3] || *end != '\0' || mib < 0) return usage("MiB must not be negative");
  // The byte count is mib << 20; more than that can hold would wrap silently.
  if ((unsigned long long)mib > SIZE_MAX >> 20) return usage("MiB too large");

  if (!load_driver()) return 3;

  check(cuInit(0), "cuInit");
  CUdevice dev;
  check(cuDeviceGet(&dev, 0), "cuDeviceGet");
  char name[256] = "";
  check(cuDeviceGetName(name, (int)sizeof name, dev), "cuDeviceGetName");
  name[sizeof name - 1] = '\0';
  CUcontext ctx;
  check(cuCtxCreate(&ctx, 0, dev), "cuCtxCreate_v2");

  // One plain allocation (never managed memory, which is not resident until
  // touched), zeroed so every page is committed.
  CUdeviceptr hold = 0;
  size_t bytes = (size_t)mib << 20;
  if (bytes > 0) {
    check(cuMemAlloc(&hold, bytes), "cuMemAlloc_v2");
    check(cuMemsetD8(hold, 0, bytes), "cuMemsetD8_v2");
  }

  // Load and run the kernel once before the first period so neither the JIT
  // nor the first launch is timed.
  CUmodule mod = load_module();
  CUfunction spin;
  check(cuModuleGetFunction(&spin, mod, "spin"), "cuModuleGetFunction");
  launch(spin, 1000);
  check(cuCtxSynchronize(), "cuCtxSynchronize (warm-up)");

  CUevent ev_start, ev_stop;
  check(cuEventCreate(&ev_start, 0), "cuEventCreate");
  check(cuEventCreate(&ev_stop, 0), "cuEventCreate");

  fprintf(stderr, "ptxload: %s, duty %ld%%, %.1fs, holding %lld MiB\n", name, duty, seconds, mib);
  printf("READY\n");
  fflush(stdout);

  const unsigned long long busy_ns = (unsigned long long)(kPeriod * 1e9 * duty / 100.0);
  const double start = now_s();
  const double stop = start + seconds;
  double period_start = start, busy_total = 0;
  long periods = 0;
  while (period_start < stop) {
    if (busy_ns > 0) {
      check(cuEventRecord(ev_start, NULL), "cuEventRecord");
      launch(spin, busy_ns);
      check(cuEventRecord(ev_stop, NULL), "cuEventRecord");
      check(cuEventSynchronize(ev_stop), "cuEventSynchronize (spin kernel)");
      float ms = 0;
      check(cuEventElapsedTime(&ms, ev_start, ev_stop), "cuEventElapsedTime");
      busy_total += ms / 1e3;
    }
    // Stay on schedule; if the busy part overran the period, restart the
    // schedule from now instead of running periods back to back to catch up.
    double next = period_start + kPeriod, t = now_s();
    if (t < next) {
      sleep_until(next);
      period_start = next;
    } else {
      period_start = t;
    }
    periods++;
  }
  double wall = now_s() - start;
  printf("DONE periods=%ld busy=%.3fs wall=%.3fs measured_duty=%.1f%%\n", periods, busy_total, wall,
         100.0 * busy_total / wall);
  fflush(stdout);

  check(cuEventDestroy(ev_start), "cuEventDestroy_v2");
  check(cuEventDestroy(ev_stop), "cuEventDestroy_v2");
  check(cuModuleUnload(mod), "cuModuleUnload");
  if (hold) check(cuMemFree(hold), "cuMemFree_v2");
  check(cuCtxDestroy(ctx), "cuCtxDestroy_v2");
  return 0;
}
