"""``edge-asc train --data DIR --preset edge --epochs N --out runs/NAME [--resume] [--seed K] [--device D]
[--precision P] [--nproc N] [--teacher RUN[,RUN...] --kd-temperature T --kd-weight W] [--freq-mixstyle P] [--dir P
[--dir-folder DIR]]``.

``--preset`` is ``NAME[:field=value,...]`` (:func:`edge_asc.model.resolve_preset`), e.g. the ``to train:`` line that
``edge-asc fit`` prints.

Many processes: ``edge-asc train --nproc N ...`` starts ``torchrun --standalone --nproc-per-node N -m edge_asc train
...`` (the same options, without ``--nproc``) on this machine; ``torchrun ... -m edge_asc train ...`` started by hand
(e.g. on a cluster, with torchrun's rendezvous across machines) makes each worker join its process group
(:mod:`edge_asc.train.distributed`).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder (TAU 2020/2022 Mobile layout)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (checkpoint, history)")
    p.add_argument("--preset", default="edge", metavar="PRESET",
                   help="model preset NAME[:field=value,...]: edge, edge-gap, paper or paper-half, optionally with "
                        "config fields changed, e.g. edge:n_mels=48,width=0.5,pool=2x3 (what 'edge-asc fit' prints "
                        "after 'to train:'; default: edge)")
    p.add_argument("--epochs", type=int, default=10, help="total epochs (default: 10)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> same metrics on CPU (default: 0)")
    p.add_argument("--batch-size", type=int, default=64, help="clips per batch (default: 64)")
    p.add_argument("--lr-max", type=float, default=0.1, help="SGDR maximum learning rate (default: 0.1)")
    p.add_argument("--lr-min", type=float, default=1e-5, help="SGDR minimum learning rate (default: 1e-5)")
    p.add_argument("--norm", choices=("mixup", "bn", "in"), help="override the preset's first/last normalisation")
    p.add_argument("--head", choices=("gap", "events"), help="override the preset's head")
    p.add_argument("--unpool", choices=("mask", "soft", "nearest"), help="override the preset's decoder unpooling")
    p.add_argument("--act-bound", type=float, metavar="B",
                   help="override the preset's ReLU bound (6 = ReLU6; 0 = unbounded ReLU)")
    p.add_argument("--mixup-alpha", type=float, help="mixup alpha (default 0.3; 0 disables mixup)")
    p.add_argument("--no-specaugment", action="store_true", help="disable SpecAugment masks")
    p.add_argument("--no-shift", action="store_true", help="disable random time/frequency shifts")
    p.add_argument("--no-random-crop", action="store_true", help="use the centre window instead of a random one")
    p.add_argument("--freq-mixstyle", type=float, metavar="P",
                   help="Freq-MixStyle: mix per-band feature statistics between clips of a batch with probability P "
                        "per batch (CP-JKU uses 0.4; default: off)")
    p.add_argument("--freq-mixstyle-alpha", type=float, metavar="A", help="Freq-MixStyle Beta(A, A) (default: 0.3)")
    p.add_argument("--dir", type=float, metavar="P",
                   help="device impulse response augmentation: each clip gets a device's colouration with "
                        "probability P (default: off; IRs from --dir-folder, else a synthetic device family)")
    p.add_argument("--dir-folder", metavar="DIR", help="folder of impulse-response WAVs (e.g. MicIRP) for --dir")
    p.add_argument("--teacher", metavar="RUN[,RUN...]",
                   help="knowledge distillation from these trained run directories (logits averaged; a teacher "
                        "with another front end or window scores each training clip once in its own features)")
    p.add_argument("--kd-temperature", type=float, default=2.0, metavar="T",
                   help="distillation softmax temperature (default: 2)")
    p.add_argument("--kd-weight", type=float, default=0.5, metavar="W",
                   help="weight of the distillation term; 1 - W weighs the label loss (default: 0.5)")
    p.add_argument("--val-every", type=int, default=1,
                   help="validate on the 'evaluate' split every N epochs (0: never)")
    p.add_argument("--cache-dir", metavar="DIR", help="feature cache folder (default: <out>/../feature-cache)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="where to train: auto (CUDA if available, else Apple MPS, else CPU), cpu, cuda or mps; "
                        "checkpoints are device-neutral, so --resume may continue elsewhere (default: auto)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="fp32, or mixed precision through torch.autocast: bf16 (CUDA or CPU) or fp16 (CUDA, with a "
                        "gradient scaler); weights are always stored in float32 (default: fp32)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--portable-math", action="store_true",
                   help="cap PyTorch's CPU kernels at AVX2 so the run gives the same weights on any x86-64 machine "
                        "and thread count (what 'edge-asc demo' does; see docs/reproducibility.md)")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine (DDP through torchrun: one per GPU with --device "
                        "cuda, gloo workers on the CPU); --batch-size stays the global batch and must be a multiple "
                        "of N. On many machines, start 'torchrun ... -m edge_asc train' yourself (docs/training.md)")
    p.add_argument("--step-log", metavar="FILE",
                   help="append one JSON line per optimizer step (epoch, step, lr, global-batch loss, clips) to FILE "
                        "after each epoch, e.g. to compare runs step by step")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the final checkpoint metadata as JSON")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError, require

    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.batch_size < 2:
        raise UsageError(f"--batch-size must be >= 2, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.mixup_alpha is not None and args.mixup_alpha < 0:
        raise UsageError(f"--mixup-alpha must be >= 0, got {args.mixup_alpha}")
    if args.val_every < 0:
        raise UsageError(f"--val-every must be >= 0, got {args.val_every}")
    for flag, v in (("--freq-mixstyle", args.freq_mixstyle), ("--dir", args.dir)):
        if v is not None and not 0 <= v <= 1:
            raise UsageError(f"{flag} is a probability in [0, 1], got {v}")
    if args.freq_mixstyle_alpha is not None and not args.freq_mixstyle_alpha > 0:
        raise UsageError(f"--freq-mixstyle-alpha must be > 0, got {args.freq_mixstyle_alpha}")
    if args.dir_folder is not None and not args.dir:
        raise UsageError("--dir-folder needs --dir P (the probability of applying an impulse response)")
    if not args.kd_temperature > 0:
        raise UsageError(f"--kd-temperature must be > 0, got {args.kd_temperature}")
    if not 0 <= args.kd_weight <= 1:
        raise UsageError(f"--kd-weight must be in [0, 1], got {args.kd_weight}")
    from ..train.distributed import torchrun_world_size

    world = torchrun_world_size()
    if args.nproc is not None:
        if world is not None:
            raise UsageError("--nproc starts torchrun itself: under torchrun, leave --nproc out")
        if args.nproc < 1:
            raise UsageError(f"--nproc must be >= 1, got {args.nproc}")
        world = args.nproc
    if world and args.batch_size % world:
        raise UsageError(f"--batch-size {args.batch_size} is the global batch and must split evenly over {world} "
                         f"processes: choose a multiple of {world}")
    from ..model import resolve_preset

    preset = resolve_preset(args.preset)  # a malformed preset string fails here, before torch is imported
    if args.portable_math:
        from ..train.reproducible import pin_portable_math

        if not pin_portable_math():
            raise UsageError("--portable-math must be set before torch is loaded (torch was imported earlier in this "
                             "process, or ATEN_CPU_CAPABILITY/ONEDNN_MAX_CPU_ISA are set to other values): run "
                             "'edge-asc train' in a fresh process without those variables")
    require("torch", "train", "training")
    if args.nproc is not None and args.nproc > 1:
        from ..train.distributed import launch

        return launch(args.nproc, _worker_argv(args))
    import torch

    from ..errors import ConfigError
    from ..train.device import Compute, resolve_device

    try:
        device = resolve_device(args.device)
        Compute(device=device, precision=args.precision)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None

    from ..data import load_dataset
    from ..train.augment import AugmentConfig
    from ..train.loop import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset.config
    overrides = {k: v for k, v in (("norm", args.norm), ("head", args.head), ("unpool", args.unpool)) if v is not None}
    if args.act_bound is not None:
        overrides["act_bound"] = None if args.act_bound == 0 else args.act_bound  # a negative one: ConfigError
    aug_over = {}
    if args.mixup_alpha is not None:
        aug_over["mixup_alpha"] = args.mixup_alpha
    if args.no_specaugment:
        aug_over["specaugment"] = False
    if args.no_shift:
        aug_over.update(shift_time=0, shift_freq=0)
    if args.no_random_crop:
        aug_over["random_crop"] = False
    if args.freq_mixstyle:
        aug_over["freq_mixstyle"] = args.freq_mixstyle
    if args.freq_mixstyle_alpha is not None:
        aug_over["freq_mixstyle_alpha"] = args.freq_mixstyle_alpha
    if args.dir:
        aug_over["dir"] = args.dir
    if args.dir_folder is not None:
        from pathlib import Path

        aug_over["dir_folder"] = str(Path(args.dir_folder).resolve())
    aug = AugmentConfig.for_window(cfg.n_mels, cfg.n_frames, **aug_over)
    distill = None
    if args.teacher:
        from ..train.distill import DistillConfig, teacher_refs

        runs = [r for r in args.teacher.split(",") if r.strip()]
        distill = DistillConfig(teachers=teacher_refs(runs), temperature=args.kd_temperature, weight=args.kd_weight)
    config = TrainConfig(preset=preset.name, model_overrides=overrides, epochs=args.epochs,
                         batch_size=args.batch_size, lr_max=args.lr_max, lr_min=args.lr_min, seed=args.seed,
                         augment=aug, val_every=args.val_every, distill=distill)
    dataset = load_dataset(args.data)
    from ..train.distributed import init_from_env

    dist = init_from_env(device)
    try:
        result = train(dataset, args.out, config, resume=args.resume, cache_dir=args.cache_dir,
                       progress=None if not args.no_progress else False, device=device, precision=args.precision,
                       dist=dist, step_log=args.step_log)
    finally:
        dist.shutdown()
    if not dist.is_main:
        return 0
    if args.json:
        print(json.dumps(result.meta.to_dict(), indent=2, sort_keys=True))
    else:
        m = result.meta.metrics
        print(f"checkpoint: {result.run_dir} (epoch {result.meta.epoch}, "
              f"train acc {m.get('train_acc', float('nan')):.3f}"
              + (f", val macro-acc {m['val_macro_acc']:.3f}" if "val_macro_acc" in m else "") + ")")
    return 0


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of a torchrun worker: ``train`` with every option of ``args`` that differs from its default,
    without ``--nproc``."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    argv = ["-v", "train"] if getattr(args, "verbose", False) else ["train"]
    for action in p._actions:
        if not action.option_strings or action.dest == "nproc":
            continue
        value = getattr(args, action.dest, action.default)
        if value is None or value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        argv += [flag] if action.nargs == 0 else [flag, str(value)]
    return argv
