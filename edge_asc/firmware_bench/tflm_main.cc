/* edge-asc: TensorFlow Lite Micro (+ CMSIS-NN) reference firmware for the same .tflite file and core as the
 * generated firmware (edge_asc/firmware_bench/tflm_ref.py fills in the @...@ fields and builds it).
 *
 * It measures the way ek_main.c does, with the same platform file (ek_platform_cm.c: vector table, stack painting,
 * SysTick ticks under QEMU -icount shift=0, semihosting files): inputs from ek_in.bin (each the concatenated bytes of
 * the model's input tensors), outputs appended to ek_out.bin, one MicroInterpreter::Invoke() between two tick
 * readings, and per-op ticks from a MicroProfilerInterface that reads the same SysTick counter.
 * Report lines on the console:
 *   EK calibrate <instructions> <ticks>      a loop of known instruction count (instructions per tick)
 *   TFLM arena <bytes> <used bytes>          the arena given to the interpreter and arena_used_bytes()
 *   TFLM arena_min <bytes>                   (EK_FIND_ARENA) the smallest arena, in 16-byte steps, with which
 *                                            AllocateTensors() succeeds (exactly arena_used_bytes() can fail)
 *   EK inference <k> <ticks>                 ticks of inference k
 *   TFLM op <event> <ticks> <TAG>            ticks per profiler event (one per op), summed over all inferences
 *   EK stack <bytes>                         stack high-water mark
 *   EK done <n>                              n inferences ran */
#include <stddef.h>
#include <stdint.h>

#include <new>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/schema/schema_generated.h"

extern "C" {
#include "ek_platform.h"
}

#ifndef EK_CAL_LOOPS
#define EK_CAL_LOOPS 1000000u
#endif
#ifndef EK_ARENA_BYTES
#define EK_ARENA_BYTES @ARENA_BYTES@
#endif
#ifndef EK_FIND_ARENA
#define EK_FIND_ARENA @FIND_ARENA@
#endif
#define EK_N_OP_TYPES @N_OP_TYPES@
#define EK_MAX_EVENTS @MAX_EVENTS@

extern const unsigned char ek_tflm_model[];

alignas(16) static uint8_t ek_arena[EK_ARENA_BYTES];

typedef void (*ek_ctor_t)(void);
extern "C" ek_ctor_t __init_array_start[];
extern "C" ek_ctor_t __init_array_end[];

namespace {

/* Ticks per profiler event, summed over the inferences; events are numbered in the order of one Invoke(). */
class EkProfiler : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char* tag) override {
    const uint32_t k = next_++;
    if (recording_ && k < EK_MAX_EVENTS) {
      tags_[k] = tag;
      start_[k] = ek_ticks();
    }
    return k;
  }
  void EndEvent(uint32_t k) override {
    if (recording_ && k < EK_MAX_EVENTS) ticks_[k] += ek_ticks() - start_[k];
  }
  void Start() {
    next_ = 0;
    recording_ = true;
  }
  void Stop() {
    recording_ = false;
    if (next_ > events_) events_ = next_;
  }
  uint32_t events() const { return events_; }
  uint64_t ticks(uint32_t k) const { return ticks_[k]; }
  const char* tag(uint32_t k) const { return tags_[k] ? tags_[k] : "?"; }

 private:
  bool recording_ = false;
  uint32_t next_ = 0;
  uint32_t events_ = 0;
  const char* tags_[EK_MAX_EVENTS] = {};
  uint64_t start_[EK_MAX_EVENTS] = {};
  uint64_t ticks_[EK_MAX_EVENTS] = {};
};

/* constructed in place in main(): a global with a destructor would need __cxa_atexit and __dso_handle */
alignas(EkProfiler) uint8_t ek_profiler_storage[sizeof(EkProfiler)];

#if EK_FIND_ARENA
alignas(tflite::MicroInterpreter) uint8_t ek_trial_storage[sizeof(tflite::MicroInterpreter)];

/* AllocateTensors() on a fresh interpreter with the first `bytes` of the arena. */
bool ek_allocates(const tflite::Model* model, const tflite::MicroOpResolver& resolver, size_t bytes) {
  auto* it = new (ek_trial_storage) tflite::MicroInterpreter(model, resolver, ek_arena, bytes);
  const bool ok = it->AllocateTensors() == kTfLiteOk;
  it->~MicroInterpreter();
  return ok;
}
#endif

void ek_fail(const char* what) {
  ek_puts("EK error: ");
  ek_puts(what);
  ek_puts("\n");
  ek_exit(2);
}

}  // namespace

int main(void) {
  /* C++ static constructors (the firmware links with -nostartfiles) */
  for (ek_ctor_t* f = __init_array_start; f < __init_array_end; ++f) (*f)();
  ek_platform_init();
  const uint64_t cal = ek_calibrate(EK_CAL_LOOPS);
  ek_puts("EK calibrate ");
  ek_putu(2ull * EK_CAL_LOOPS);
  ek_puts(" ");
  ek_putu(cal);
  ek_puts("\n");

  const tflite::Model* model = tflite::GetModel(ek_tflm_model);
  tflite::MicroMutableOpResolver<EK_N_OP_TYPES> resolver;
@ADD_OPS@
  EkProfiler& ek_profiler = *new (ek_profiler_storage) EkProfiler();
  tflite::MicroInterpreter interpreter(model, resolver, ek_arena, EK_ARENA_BYTES, nullptr, &ek_profiler);
  if (interpreter.AllocateTensors() != kTfLiteOk) ek_fail("AllocateTensors failed (arena too small?)");
  ek_puts("TFLM arena ");
  ek_putu(EK_ARENA_BYTES);
  ek_puts(" ");
  ek_putu(interpreter.arena_used_bytes());
  ek_puts("\n");
#if EK_FIND_ARENA
  {
    /* binary search in 16-byte steps between arena_used_bytes() and the arena that worked */
    size_t lo = (interpreter.arena_used_bytes() & ~(size_t)15u), hi = EK_ARENA_BYTES;
    if (ek_allocates(model, resolver, lo)) {
      hi = lo;
    } else {
      while (hi - lo > 16) {
        const size_t mid = (lo + (hi - lo) / 2) & ~(size_t)15u;
        if (ek_allocates(model, resolver, mid)) hi = mid; else lo = mid;
      }
    }
    ek_puts("TFLM arena_min ");
    ek_putu(hi);
    ek_puts("\n");
    ek_puts("EK done 0\n");
    return 0;
  }
#endif

  uint32_t in_bytes = 0;
  for (size_t i = 0; i < interpreter.inputs_size(); ++i) in_bytes += interpreter.input(i)->bytes;
  const int fin = ek_file_open("ek_in.bin", 0);
  const int fout = ek_file_open("ek_out.bin", 1);
  if (fin < 0 || fout < 0 || in_bytes == 0) ek_fail("cannot open ek_in.bin / ek_out.bin");
  const long n = ek_file_size(fin) / (long)in_bytes;
  if (n <= 0) ek_fail("ek_in.bin is shorter than one input");
  for (long k = 0; k < n; ++k) {
    for (size_t i = 0; i < interpreter.inputs_size(); ++i) {
      TfLiteTensor* t = interpreter.input(i);
      if (ek_file_read(fin, t->data.raw, t->bytes) != 0) ek_fail("short read of ek_in.bin");
    }
    ek_profiler.Start();
    const uint64_t t0 = ek_ticks();
    const TfLiteStatus status = interpreter.Invoke();
    const uint64_t t1 = ek_ticks();
    ek_profiler.Stop();
    if (status != kTfLiteOk) ek_fail("Invoke failed");
    ek_puts("EK inference ");
    ek_putu((uint64_t)k);
    ek_puts(" ");
    ek_putu(t1 - t0);
    ek_puts("\n");
    for (size_t i = 0; i < interpreter.outputs_size(); ++i) {
      const TfLiteTensor* t = interpreter.output(i);
      ek_file_write(fout, t->data.raw, t->bytes);
    }
  }
  ek_file_close(fin);
  ek_file_close(fout);
  const uint32_t events = ek_profiler.events() < EK_MAX_EVENTS ? ek_profiler.events() : EK_MAX_EVENTS;
  for (uint32_t k = 0; k < events; ++k) {
    ek_puts("TFLM op ");
    ek_putu(k);
    ek_puts(" ");
    ek_putu(ek_profiler.ticks(k));
    ek_puts(" ");
    ek_puts(ek_profiler.tag(k));
    ek_puts("\n");
  }
  ek_puts("EK stack ");
  ek_putu(ek_stack_used());
  ek_puts("\nEK done ");
  ek_putu((uint64_t)n);
  ek_puts("\n");
  return 0;
}
