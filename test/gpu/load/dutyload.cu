// dutyload keeps one GPU busy for DUTY percent of every 100 ms, for SECONDS,
// while holding MIB of device memory. It is the load generator of
// kube-gpu-exporter's real-GPU validation (test/gpu); dutyload.py does the
// same with PyTorch or CuPy where no CUDA compiler is installed.
//
//   nvcc -O2 -o dutyload dutyload.cu
//   ./dutyload DUTY SECONDS MIB
//
// Each period runs one single-thread kernel that spins on the GPU's
// nanosecond timer (%globaltimer) for DUTY% of 100 ms, waits for it, and
// sleeps on the host until the period ends. NVML counts a sample period in
// which any kernel runs as busy, so one thread suffices and the utilization
// NVML reports is the duty itself. Spinning on the timer rather than on clock
// cycles keeps the busy time right whatever clock the GPU runs at.
//
// The memory is one plain cudaMalloc (never managed memory, which is not
// resident until touched), zeroed so every page is committed. "READY" is
// printed once it is held and the first period is about to start.

#include <cuda_runtime.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

static const double kPeriod = 0.1;  // seconds

__global__ void spin(unsigned long long ns) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}

static void check(cudaError_t err, const char *what) {
  if (err != cudaSuccess) {
    fprintf(stderr, "dutyload: %s: %s\n", what, cudaGetErrorString(err));
    exit(1);
  }
}

static int usage(const char *msg) {
  fprintf(stderr, "dutyload: %s\nusage: dutyload DUTY(0-100) SECONDS(>0) MIB(>=0)\n", msg);
  return 2;
}

int main(int argc, char **argv) {
  if (argc != 4) return usage("want three arguments");
  char *end;
  long duty = strtol(argv[1], &end, 10);
  if (*end != '\0' || duty < 0 || duty > 100) return usage("duty must be 0-100");
  double seconds = strtod(argv[2], &end);
  if (*end != '\0' || !(seconds > 0)) return usage("seconds must be positive");
  long long mib = strtoll(argv[3], &end, 10);
  if (*end != '\0' || mib < 0) return usage("MiB must not be negative");

  check(cudaSetDevice(0), "cudaSetDevice");
  check(cudaFree(0), "create CUDA context");
  void *hold = NULL;
  size_t bytes = (size_t)mib << 20;
  if (bytes > 0) {
    check(cudaMalloc(&hold, bytes), "cudaMalloc");
    check(cudaMemset(hold, 0, bytes), "cudaMemset");
  }
  // Load the kernel before the first period so the module load is not timed.
  spin<<<1, 1>>>(1000);
  check(cudaGetLastError(), "launch");
  check(cudaDeviceSynchronize(), "warm-up");

  cudaEvent_t ev_start, ev_stop;
  check(cudaEventCreate(&ev_start), "cudaEventCreate");
  check(cudaEventCreate(&ev_stop), "cudaEventCreate");

  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  fprintf(stderr, "dutyload: %s, duty %ld%%, %.1fs, holding %lld MiB\n", prop.name, duty, seconds, mib);
  printf("READY\n");
  fflush(stdout);

  const unsigned long long busy_ns = (unsigned long long)(kPeriod * 1e9 * duty / 100.0);
  const double start = now_s();
  const double stop = start + seconds;
  double period_start = start, busy_total = 0;
  long periods = 0;
  while (period_start < stop) {
    if (busy_ns > 0) {
      check(cudaEventRecord(ev_start), "cudaEventRecord");
      spin<<<1, 1>>>(busy_ns);
      check(cudaGetLastError(), "launch");
      check(cudaEventRecord(ev_stop), "cudaEventRecord");
      check(cudaEventSynchronize(ev_stop), "kernel");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, ev_start, ev_stop), "cudaEventElapsedTime");
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
  if (hold) cudaFree(hold);
  return 0;
}
