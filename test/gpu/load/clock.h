// The monotonic clock the load generators (dutyload.cu, ptxload.c) keep
// their 100 ms periods on, and that the stand-in driver (fakecuda.c) spins
// its simulated GPU time on.
#ifndef KGE_LOAD_CLOCK_H
#define KGE_LOAD_CLOCK_H

#include <errno.h>
#include <time.h>

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// sleep_until sleeps until the monotonic time t, through interruptions.
static inline void sleep_until(double t) {
  struct timespec ts;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

#endif
