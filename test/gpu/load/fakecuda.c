// fakecuda is a stand-in for the NVIDIA driver library (libcuda.so.1) for the
// tests of ptxload.c only (test/gpu/ptxload_test.go), so that ptxload's
// driver calls, error paths and duty loop run on machines without a GPU. It is
// not a driver and must never be installed as one.
//
//   gcc -O2 -std=c11 -Wall -Wextra -shared -fPIC -o libcuda.so.1 fakecuda.c
//   KGE_LIBCUDA=$PWD/libcuda.so.1 ./ptxload 30 1 16
//
// It exports exactly the entry points ptxload binds, with their current ABI.
// Of cuEventElapsedTime it has only the plain name, as drivers before CUDA
// 12.8 do, so ptxload's fallback from the _v2 name is exercised too.
//
// A kernel launch takes as long as its ns argument says, on a simulated GPU
// clock: a launch queues behind the one before, an event completes when the
// GPU reaches it, and the synchronising calls sleep until then. The duty loop
// therefore really spends its busy time, and a caller that forgets to
// synchronise before cuEventElapsedTime gets CUDA_ERROR_NOT_READY, as from a
// driver. Calls are checked as a driver would check them, and beyond that for
// what ptxload must do: one thread per launch, the PTX of the spin kernel, a
// memset covering the allocation.
//
// Environment:
//   FAKECUDA_FAIL=NAME[:CODE]  the entry point NAME returns CODE (default 2,
//                              CUDA_ERROR_OUT_OF_MEMORY) instead of running
//   FAKECUDA_LOG=FILE          appends one line per call that allocates,
//                              frees, sets memory or launches, for tests to
//                              check what was asked of the "GPU"

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef int CUjit_option;

struct CUctx_st {
  int live;
};
struct CUmod_st {
  int loaded;
};
struct CUfunc_st {
  struct CUmod_st *mod;
};
struct CUevent_st {
  double at;  // when the simulated GPU reaches the event
  int recorded;
};
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;

enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_INVALID_PTX = 218,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_NOT_READY = 600,
  CU_JIT_ERROR_LOG_BUFFER = 5,
  CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
};

static int initialised;
static struct CUctx_st context;
static CUcontext current;
static struct CUmod_st module;
static struct CUfunc_st spin_function = {&module};
static double gpu_busy_until;  // CLOCK_MONOTONIC seconds

// Device memory is only bookkeeping: addresses and sizes, no bytes.
static struct {
  CUdeviceptr ptr;
  size_t bytes;
} allocs[16];
static CUdeviceptr next_ptr = 0x7f0000000000ULL;

// log_call appends a line to FAKECUDA_LOG; opening it each time keeps the
// file whole whenever the process exits.
__attribute__((format(printf, 1, 2))) static void log_call(const char *fmt, ...) {
  const char *path = getenv("FAKECUDA_LOG");
  if (path == NULL || *path == '\0') return;
  FILE *f = fopen(path, "a");
  if (f == NULL) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fclose(f);
}

// forced returns the error FAKECUDA_FAIL asks of the entry point name, or 0.
static CUresult forced(const char *name) {
  const char *spec = getenv("FAKECUDA_FAIL");
  if (spec == NULL) return CUDA_SUCCESS;
  size_t n = strlen(name);
  if (strncmp(spec, name, n) != 0) return CUDA_SUCCESS;
  if (spec[n] == '\0') return CUDA_ERROR_OUT_OF_MEMORY;
  if (spec[n] != ':') return CUDA_SUCCESS;
  int code = atoi(spec + n + 1);
  return code != 0 ? code : CUDA_ERROR_OUT_OF_MEMORY;
}

// ready is the check every call that needs a context starts with.
static CUresult ready(const char *name) {
  CUresult err = forced(name);
  if (err != CUDA_SUCCESS) return err;
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (current == NULL) return CUDA_ERROR_INVALID_CONTEXT;
  return CUDA_SUCCESS;
}

CUresult cuInit(unsigned int flags) {
  CUresult err = forced("cuInit");
  if (err != CUDA_SUCCESS) return err;
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  initialised = 1;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *dev, int ordinal) {
  CUresult err = forced("cuDeviceGet");
  if (err != CUDA_SUCCESS) return err;
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (dev == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *dev = 0;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
  CUresult err = forced("cuDeviceGetName");
  if (err != CUDA_SUCCESS) return err;
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (name == NULL || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  snprintf(name, (size_t)len, "%s", "fakecuda GPU");
  return CUDA_SUCCESS;
}

CUresult cuCtxCreate_v2(CUcontext *ctx, unsigned int flags, CUdevice dev) {
  CUresult err = forced("cuCtxCreate_v2");
  if (err != CUDA_SUCCESS) return err;
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (ctx == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  (void)flags;
  context.live = 1;
  current = *ctx = &context;
  return CUDA_SUCCESS;
}

CUresult cuCtxDestroy_v2(CUcontext ctx) {
  CUresult err = forced("cuCtxDestroy_v2");
  if (err != CUDA_SUCCESS) return err;
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (ctx != &context || !context.live) return CUDA_ERROR_INVALID_CONTEXT;
  sleep_until(gpu_busy_until);
  context.live = 0;
  current = NULL;
  return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize(void) {
  CUresult err = ready("cuCtxSynchronize");
  if (err != CUDA_SUCCESS) return err;
  sleep_until(gpu_busy_until);
  return CUDA_SUCCESS;
}

CUresult cuModuleLoadDataEx(CUmodule *mod, const void *image, unsigned int n, CUjit_option *options, void **values) {
  char *log = NULL;
  size_t log_size = 0;
  if (n > 0 && (options == NULL || values == NULL)) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned int i = 0; i < n; i++) {
    if (options[i] == CU_JIT_ERROR_LOG_BUFFER) log = values[i];
    if (options[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES) log_size = (size_t)(uintptr_t)values[i];
  }
  if (log == NULL) log_size = 0;
  if (log_size > 0) log[0] = '\0';

  CUresult err = ready("cuModuleLoadDataEx");
  if (err != CUDA_SUCCESS) {
    if (log_size > 0) snprintf(log, log_size, "fakecuda: cuModuleLoadDataEx failed as FAKECUDA_FAIL asks");
    return err;
  }
  if (mod == NULL || image == NULL) return CUDA_ERROR_INVALID_VALUE;
  // What the JIT would reject, or what would make the kernel not ptxload's.
  static const char *const needed[] = {".version ", ".target sm_", ".address_size 64", ".entry spin(", "%globaltimer"};
  for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
    if (strstr(image, needed[i]) == NULL) {
      if (log_size > 0) snprintf(log, log_size, "fakecuda: the PTX has no \"%s\"", needed[i]);
      return CUDA_ERROR_INVALID_PTX;
    }
  }
  module.loaded = 1;
  *mod = &module;
  return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction *f, CUmodule mod, const char *name) {
  CUresult err = ready("cuModuleGetFunction");
  if (err != CUDA_SUCCESS) return err;
  if (f == NULL || name == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (mod != &module || !module.loaded) return CUDA_ERROR_INVALID_HANDLE;
  if (strcmp(name, "spin") != 0) return CUDA_ERROR_NOT_FOUND;
  *f = &spin_function;
  return CUDA_SUCCESS;
}

CUresult cuModuleUnload(CUmodule mod) {
  CUresult err = ready("cuModuleUnload");
  if (err != CUDA_SUCCESS) return err;
  if (mod != &module || !module.loaded) return CUDA_ERROR_INVALID_HANDLE;
  sleep_until(gpu_busy_until);
  module.loaded = 0;
  return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr *ptr, size_t bytes) {
  CUresult err = ready("cuMemAlloc_v2");
  if (err != CUDA_SUCCESS) return err;
  if (ptr == NULL || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < sizeof allocs / sizeof allocs[0]; i++) {
    if (allocs[i].ptr == 0) {
      allocs[i].ptr = next_ptr;
      allocs[i].bytes = bytes;
      next_ptr += (bytes + 0xfffff) & ~(CUdeviceptr)0xfffff;
      *ptr = allocs[i].ptr;
      log_call("cuMemAlloc_v2 bytes=%zu", bytes);
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuMemFree_v2(CUdeviceptr ptr) {
  CUresult err = ready("cuMemFree_v2");
  if (err != CUDA_SUCCESS) return err;
  for (size_t i = 0; i < sizeof allocs / sizeof allocs[0]; i++) {
    if (ptr != 0 && allocs[i].ptr == ptr) {
      sleep_until(gpu_busy_until);
      log_call("cuMemFree_v2 bytes=%zu", allocs[i].bytes);
      allocs[i].ptr = 0;
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuMemsetD8_v2(CUdeviceptr ptr, unsigned char value, size_t n) {
  CUresult err = ready("cuMemsetD8_v2");
  if (err != CUDA_SUCCESS) return err;
  for (size_t i = 0; i < sizeof allocs / sizeof allocs[0]; i++) {
    CUdeviceptr base = allocs[i].ptr;
    if (base != 0 && ptr >= base && ptr - base <= allocs[i].bytes && n <= allocs[i].bytes - (ptr - base)) {
      log_call("cuMemsetD8_v2 offset=%llu bytes=%zu value=%u", ptr - base, n, value);
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                        unsigned int by, unsigned int bz, unsigned int shared, CUstream stream, void **params,
                        void **extra) {
  CUresult err = ready("cuLaunchKernel");
  if (err != CUDA_SUCCESS) return err;
  if (f != &spin_function || !module.loaded) return CUDA_ERROR_INVALID_HANDLE;
  if (stream != NULL) return CUDA_ERROR_INVALID_HANDLE;
  // The spin kernel takes its one argument through params; one thread is all
  // ptxload may launch.
  if (params == NULL || params[0] == NULL || extra != NULL) return CUDA_ERROR_INVALID_VALUE;
  if (gx != 1 || gy != 1 || gz != 1 || bx != 1 || by != 1 || bz != 1 || shared != 0) return CUDA_ERROR_INVALID_VALUE;
  unsigned long long ns;
  memcpy(&ns, params[0], sizeof ns);
  double start = now_s();
  if (gpu_busy_until > start) start = gpu_busy_until;
  gpu_busy_until = start + ns / 1e9;
  log_call("cuLaunchKernel ns=%llu", ns);
  return CUDA_SUCCESS;
}

CUresult cuEventCreate(CUevent *ev, unsigned int flags) {
  CUresult err = ready("cuEventCreate");
  if (err != CUDA_SUCCESS) return err;
  if (ev == NULL || flags != 0) return CUDA_ERROR_INVALID_VALUE;
  *ev = calloc(1, sizeof **ev);
  return *ev != NULL ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuEventDestroy_v2(CUevent ev) {
  CUresult err = ready("cuEventDestroy_v2");
  if (err != CUDA_SUCCESS) return err;
  if (ev == NULL) return CUDA_ERROR_INVALID_HANDLE;
  free(ev);
  return CUDA_SUCCESS;
}

CUresult cuEventRecord(CUevent ev, CUstream stream) {
  CUresult err = ready("cuEventRecord");
  if (err != CUDA_SUCCESS) return err;
  if (ev == NULL || stream != NULL) return CUDA_ERROR_INVALID_HANDLE;
  double t = now_s();
  ev->at = gpu_busy_until > t ? gpu_busy_until : t;
  ev->recorded = 1;
  return CUDA_SUCCESS;
}

CUresult cuEventSynchronize(CUevent ev) {
  CUresult err = ready("cuEventSynchronize");
  if (err != CUDA_SUCCESS) return err;
  if (ev == NULL) return CUDA_ERROR_INVALID_HANDLE;
  if (ev->recorded) sleep_until(ev->at);
  return CUDA_SUCCESS;
}

CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent stop) {
  CUresult err = ready("cuEventElapsedTime");
  if (err != CUDA_SUCCESS) return err;
  if (ms == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (start == NULL || stop == NULL || !start->recorded || !stop->recorded) return CUDA_ERROR_INVALID_HANDLE;
  double t = now_s();
  if (start->at > t || stop->at > t) return CUDA_ERROR_NOT_READY;
  *ms = (float)((stop->at - start->at) * 1e3);
  return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult code, const char **str) {
  static const struct {
    CUresult code;
    const char *msg;
  } msgs[] = {
      {CUDA_SUCCESS, "no error"},
      {CUDA_ERROR_INVALID_VALUE, "invalid argument"},
      {CUDA_ERROR_OUT_OF_MEMORY, "out of memory"},
      {CUDA_ERROR_NOT_INITIALIZED, "initialization error"},
      {CUDA_ERROR_INVALID_DEVICE, "invalid device ordinal"},
      {CUDA_ERROR_INVALID_CONTEXT, "invalid device context"},
      {CUDA_ERROR_INVALID_PTX, "a PTX JIT compilation failed"},
      {CUDA_ERROR_INVALID_HANDLE, "invalid resource handle"},
      {CUDA_ERROR_NOT_FOUND, "named symbol not found"},
      {CUDA_ERROR_NOT_READY, "device not ready"},
  };
  if (str == NULL) return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
    if (msgs[i].code == code) {
      *str = msgs[i].msg;
      return CUDA_SUCCESS;
    }
  }
  *str = NULL;
  return CUDA_ERROR_INVALID_VALUE;
}
