#!/usr/bin/env python3
"""Keep one GPU busy for DUTY percent of every 100 ms.

The load generator of kube-gpu-exporter's real-GPU validation (test/gpu),
for machines with PyTorch or CuPy but no CUDA compiler; dutyload.cu does the
same with nvcc. Each 100 ms period runs one single-thread kernel for DUTY% of
the period, waits for it, and sleeps the rest. NVML counts a period in which
any kernel runs as busy, so one thread is enough and the GPU's utilization is
the duty itself.

MIB of device memory are held with a plain cudaMalloc (never managed memory,
which NVML would not count as used until touched) and zeroed, so the
allocation shows in nvidia-smi and the exporter. "READY" is printed once the
memory is held and the load is about to start.

    dutyload.py [--backend auto|torch|cupy] [--device N] DUTY SECONDS MIB
"""

import argparse
import sys
import time

PERIOD = 0.1  # seconds

# The CuPy backend's kernel: spins on the GPU's nanosecond timer, so the busy
# time does not depend on clocks that move with load and temperature.
SPIN_SRC = r"""
extern "C" __global__ void spin(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < ns);
}
"""


def _duty(s):
    v = int(s)
    if not 0 <= v <= 100:
        raise argparse.ArgumentTypeError("duty must be 0-100")
    return v


def _seconds(s):
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError("seconds must be positive")
    return v


def _mib(s):
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError("MiB must not be negative")
    return v


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Keep a GPU busy for a given duty percent of every 100 ms "
        "while holding a given amount of device memory.")
    p.add_argument("duty", type=_duty, help="percent of every 100 ms the GPU is busy (0-100)")
    p.add_argument("seconds", type=_seconds, help="how long to run")
    p.add_argument("mib", type=_mib, help="MiB of device memory to hold (plain cudaMalloc)")
    p.add_argument("--backend", choices=["auto", "torch", "cupy"], default="auto",
                   help="GPU library to use (auto: PyTorch, else CuPy)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index")
    return p.parse_args(argv)


class TorchBackend:
    """Busy periods with torch.cuda._sleep, which spins for a number of GPU
    clock cycles. Cycles per second are measured before the run and then
    followed, because the clock moves with load and temperature."""

    name = "torch"

    def __init__(self, device, mib):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("PyTorch has no CUDA device")
        self.torch = torch
        torch.cuda.set_device(device)
        self.hold = None
        if mib:
            # A plain tensor is backed by cudaMalloc through the caching
            # allocator; zeroing commits every page.
            self.hold = torch.empty(mib << 20, dtype=torch.uint8, device="cuda")
            self.hold.zero_()
        torch.cuda.synchronize()
        self.cycles_per_s = self._calibrate()

    def _run(self, cycles):
        start = time.perf_counter()
        self.torch.cuda._sleep(int(cycles))
        self.torch.cuda.synchronize()
        return time.perf_counter() - start

    def _calibrate(self):
        self._run(1000)  # first launch pays for module loading
        n = 20_000_000
        rates = sorted(n / self._run(n) for _ in range(5))
        return rates[len(rates) // 2]

    def busy(self, seconds):
        took = self._run(self.cycles_per_s * seconds)
        if took > 0:
            # Damped correction towards the observed rate.
            ratio = min(2.0, max(0.5, seconds / took))
            self.cycles_per_s *= ratio ** 0.5
        return took


class CupyBackend:
    """Busy periods with a spin kernel on the GPU's nanosecond timer."""

    name = "cupy"

    def __init__(self, device, mib):
        import cupy

        self.cupy = cupy
        cupy.cuda.Device(device).use()
        self.rt = cupy.cuda.runtime
        self.ptr = 0
        if mib:
            self.ptr = self.rt.malloc(mib << 20)  # cudaMalloc, not managed
            self.rt.memset(self.ptr, 0, mib << 20)
        self.kernel = cupy.RawKernel(SPIN_SRC, "spin")
        self.busy(0.0001)  # compile and load before the first period
        self.rt.deviceSynchronize()

    def busy(self, seconds):
        start = time.perf_counter()
        self.kernel((1,), (1,), (self.cupy.uint64(int(seconds * 1e9)),))
        self.rt.deviceSynchronize()
        return time.perf_counter() - start


def open_backend(choice, device, mib):
    if choice in ("auto", "torch"):
        try:
            return TorchBackend(device, mib)
        except ImportError:
            if choice == "torch":
                raise
    return CupyBackend(device, mib)


def run(backend, duty, seconds):
    """Runs the duty loop; each period starts on schedule unless the busy
    part overran it, in which case the schedule restarts from now."""
    busy_s = PERIOD * duty / 100.0
    start = time.monotonic()
    end = start + seconds
    period_start = start
    periods = 0
    busy_total = 0.0
    while period_start < end:
        if busy_s > 0:
            busy_total += backend.busy(busy_s)
        next_start = period_start + PERIOD
        now = time.monotonic()
        if now < next_start:
            time.sleep(next_start - now)
            period_start = next_start
        else:
            period_start = now
        periods += 1
    wall = time.monotonic() - start
    print("DONE backend=%s periods=%d busy=%.3fs wall=%.3fs measured_duty=%.1f%%"
          % (backend.name, periods, busy_total, wall, 100.0 * busy_total / wall), flush=True)


def main(argv):
    args = parse_args(argv)
    try:
        backend = open_backend(args.backend, args.device, args.mib)
    except Exception as e:  # report any library failure as one clear line
        print("dutyload: no usable GPU backend (%s): %s" % (args.backend, e), file=sys.stderr)
        return 1
    print("dutyload: backend %s, duty %d%%, %.1fs, holding %d MiB"
          % (backend.name, args.duty, args.seconds, args.mib), file=sys.stderr, flush=True)
    print("READY", flush=True)
    run(backend, args.duty, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
