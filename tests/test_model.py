"""Mini-SegNet: shapes, parameter/MAC counters, index-free unpooling, MixupNorm, event extraction, ONNX export."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import require

torch = require("torch")

from edge_asc.errors import ConfigError
from edge_asc.model import (
    MODEL_PRESETS,
    MiniSegNetConfig,
    build_model,
    count_macs,
    count_params,
    get_preset,
    model_preset,
)
from edge_asc.model.layers import EventExtraction, InstanceNorm, MixupNorm, mask_unpool
from edge_asc.spec import PRESETS


def _toy(**kw) -> MiniSegNetConfig:
    base = {"in_channels": 1, "n_mels": 4, "n_frames": 9, "n_classes": 2, "base_channels": (4, 8), "kernel": (2, 3),
            "pool": (2, 3), "head": "events", "topk": 2, "dense_units": (5, 3), "dropout": 0.0}
    base.update(kw)
    return MiniSegNetConfig(**base)


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_preset_shapes_and_param_count(name):
    preset = get_preset(name)
    cfg = preset.config
    fe = PRESETS[preset.frontend]
    assert (cfg.in_channels, cfg.n_mels) == (fe.channels, fe.n_mels)
    model = build_model(cfg).eval()
    x = torch.randn(1, cfg.in_channels, cfg.n_mels, cfg.n_frames)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, cfg.n_classes) and torch.isfinite(y).all()
    assert count_params(cfg) == sum(p.numel() for p in model.parameters())


def test_edge_preset_within_dcase_budget():
    cfg = model_preset("edge")
    assert get_preset("edge").frontend == "edge"
    assert cfg.n_frames == PRESETS["edge"].frames_for_seconds(1.0) == 61
    assert count_params(cfg) <= 128_000
    assert count_macs(cfg) <= 30_000_000


@pytest.mark.parametrize("kw", [{"norm": "bn"}, {"norm": "in"}, {"head": "gap"}, {"unpool": "nearest"},
                                {"unpool": "soft"}, {"act_bound": 6.0}, {"width": 1.5}, {"pool": (2, 2), "n_frames": 9},
                                {"kernel": (3, 3)}, {"gap_bands": 2}, {"gap_bands": 3, "head": "gap"}])
def test_param_count_variants(kw):
    cfg = _toy(**kw)
    model = build_model(cfg)
    assert count_params(cfg) == sum(p.numel() for p in model.parameters())
    y = model.eval()(torch.randn(3, 1, cfg.n_mels, cfg.n_frames))
    assert y.shape == (3, 2)


def test_macs_hand_count_and_hooks():
    cfg = _toy()
    # H x W: 4x9 = 36 cells at full resolution, 2x3 = 6 after one 2x3 pool. Kernel 2x3 = 6 taps.
    hand = (1 * 4 * 6 * 36       # enc1  1 -> 4 @ 4x9
            + 4 * 8 * 6 * 6      # enc2a 4 -> 8 @ 2x3
            + 8 * 8 * 6 * 6      # enc2b
            + 8 * 8 * 6 * 6      # dec1a
            + 8 * 4 * 6 * 6      # dec1b 8 -> 4
            + 4 * 4 * 6 * 36     # dec2  4 -> 4 @ 4x9
            + (4 + 2) * 5 + 5 * 3 + 3 * 2)  # dense: GAP 4 + 2 event indices
    assert hand == 11283
    assert count_macs(cfg) == hand
    # gap_bands=2: the first dense layer sees 4 * 2 + 2 inputs
    assert count_macs(cfg.replace(gap_bands=2)) == hand - (4 + 2) * 5 + (8 + 2) * 5
    # the same count from forward hooks on every conv / linear of the real module, for a preset
    cfg = model_preset("edge")
    model = build_model(cfg).eval()
    total = []

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            if mod.weight.requires_grad:  # skip nothing: the event block uses F.conv2d, not a module
                total.append(out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1])
        elif isinstance(mod, torch.nn.Linear):
            total.append(mod.in_features * mod.out_features)

    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randn(1, *cfg.input_shape[1:]))
    assert sum(total) == count_macs(cfg)


@pytest.mark.parametrize("size,pool", [((8, 12), (2, 3)), ((9, 14), (2, 3)), ((7, 5), (2, 2))])
def test_mask_unpool_equals_maxunpool(size, pool):
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(2, 3, *size, generator=g)  # continuous values: no ties
    pooled, idx = torch.nn.functional.max_pool2d(pre, pool, pool, return_indices=True)
    values = torch.randn(pooled.shape, generator=g)
    ref = torch.nn.functional.max_unpool2d(values, idx, pool, pool, output_size=size)
    ours = mask_unpool(values, pre, pooled, pool)
    assert ours.shape == ref.shape
    assert torch.equal(ours, ref)


def test_mask_unpool_ties_keep_every_maximum():
    pre = torch.zeros(1, 1, 2, 2)
    pooled = torch.nn.functional.max_pool2d(pre, 2, 2)
    out = mask_unpool(torch.full((1, 1, 1, 1), 5.0), pre, pooled, (2, 2))
    assert torch.equal(out, torch.full((1, 1, 2, 2), 5.0))  # MaxUnpool2d would keep only one position


def test_soft_mask_unpool_weights_by_distance_to_the_window_max():
    # one 2x2 window: max 1.0, then 0.9 (0.1 below: 1 - 4 * 0.1 = 0.6), 0.5 (0.5 below: clamped to 0), -2
    pre = torch.tensor([[[[1.0, 0.9], [0.5, -2.0]]]])
    pooled = torch.nn.functional.max_pool2d(pre, 2, 2)
    out = mask_unpool(torch.full((1, 1, 1, 1), 10.0), pre, pooled, (2, 2), softness=4.0)
    torch.testing.assert_close(out, torch.tensor([[[[10.0, 6.0], [0.0, 0.0]]]]))
    # a steep slope is the hard mask on separated values; a small perturbation moves the soft output a little
    g = torch.Generator().manual_seed(3)
    pre = torch.randn(2, 3, 8, 12, generator=g)
    pooled = torch.nn.functional.max_pool2d(pre, (2, 3), (2, 3))
    values = torch.randn(pooled.shape, generator=g)
    hard = mask_unpool(values, pre, pooled, (2, 3))
    torch.testing.assert_close(mask_unpool(values, pre, pooled, (2, 3), softness=1e6), hard)
    eps = 1e-3 * torch.randn(pre.shape, generator=g)
    moved = mask_unpool(values, pre + eps, torch.nn.functional.max_pool2d(pre + eps, (2, 3), (2, 3)), (2, 3), 4.0)
    base = mask_unpool(values, pre, pooled, (2, 3), 4.0)
    assert (moved - base).abs().max() <= 4.0 * 2 * eps.abs().max() * values.abs().max() + 1e-6


def test_mixupnorm_limits():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 7, generator=g) * 3 + 1
    ref_in = torch.nn.InstanceNorm2d(4, affine=True)
    with torch.no_grad():
        ref_in.weight.copy_(torch.randn(4, generator=g))
        ref_in.bias.copy_(torch.randn(4, generator=g))
    m0 = MixupNorm(4, 0.0)
    m0.inorm.load_state_dict({"weight": ref_in.weight.detach(), "bias": ref_in.bias.detach()})
    torch.testing.assert_close(m0(x), ref_in(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(MixupNorm(4, 1.0)(x), x)
    m = MixupNorm(4, 0.1)
    m.inorm.load_state_dict(m0.inorm.state_dict())
    torch.testing.assert_close(m(x), 0.1 * x + 0.9 * ref_in(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(InstanceNorm(4)(x), torch.nn.InstanceNorm2d(4)(x), rtol=1e-5, atol=1e-5)


def _events_reference(x: torch.Tensor, k: int) -> torch.Tensor:
    """argmax (first max) -> bincount -> stable sort by (count desc, index asc) -> first k / C."""
    n, c = x.shape[:2]
    out = []
    for i in range(n):
        s = torch.argmax(x[i], dim=0).flatten()  # torch.argmax returns the first maximal index
        counts = torch.bincount(s, minlength=c).tolist()
        order = sorted(range(c), key=lambda j: (-counts[j], j))
        out.append([j / c for j in order[:k]])
    return torch.tensor(out, dtype=torch.float32)


def test_event_extraction_hand_built():
    # C = 4 channels on a 2x3 grid. Argmax per cell (rows): [2, 2, 1] / [1, 3, 0-tie]; the last cell ties 0 and 3.
    x = torch.zeros(1, 4, 2, 3)
    x[0, 2, 0, 0] = 1.0
    x[0, 2, 0, 1] = 1.0
    x[0, 1, 0, 2] = 1.0
    x[0, 1, 1, 0] = 1.0
    x[0, 3, 1, 1] = 1.0
    x[0, 0, 1, 2] = 2.0
    x[0, 3, 1, 2] = 2.0  # tie with channel 0 -> channel 0 (lowest index)
    # counts: ch0 = 1, ch1 = 2, ch2 = 2, ch3 = 1 -> ranking (count desc, index asc): 1, 2, 0, 3
    y = EventExtraction(4, 4)(x)
    assert torch.equal(y, torch.tensor([[1 / 4, 2 / 4, 0 / 4, 3 / 4]]))
    # all-zero map (all ties): every cell -> channel 0; the others tie at 0 and keep index order
    assert torch.equal(EventExtraction(4, 2)(torch.zeros(2, 4, 3, 3)), torch.tensor([[0.0, 0.25], [0.0, 0.25]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_event_extraction_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    # small integer values: many ties in both the per-cell maxima and the counts
    x = torch.randint(0, 3, (4, 6, 5, 7), generator=g).float()
    torch.testing.assert_close(EventExtraction(6, 4)(x), _events_reference(x, 4), rtol=0, atol=0)
    x = torch.randn(3, 16, 8, 9, generator=g)
    torch.testing.assert_close(EventExtraction(16, 4)(x), _events_reference(x, 4), rtol=0, atol=0)


def test_config_roundtrip_and_validation():
    for p in MODEL_PRESETS.values():
        assert MiniSegNetConfig.from_dict(p.config.to_dict()) == p.config
    with pytest.raises(ConfigError, match="norm"):
        _toy(norm="layer")
    with pytest.raises(ConfigError, match="topk"):
        _toy(topk=9)
    with pytest.raises(ConfigError, match="too small"):
        _toy(n_mels=3)
    with pytest.raises(ConfigError, match="mixup_lambda"):
        _toy(mixup_lambda=1.5)
    for bad in (0, -6.0, True, "6"):
        with pytest.raises(ConfigError, match="act_bound"):
            _toy(act_bound=bad)
    with pytest.raises(ConfigError, match="unknown model preset"):
        model_preset("huge")
    with pytest.raises(ConfigError, match="unknown model config"):
        MiniSegNetConfig.from_dict({"colour": 1})


def test_act_bound_caps_every_block_activation():
    """act_bound=B: each conv block's output lies in [0, B] (ReLU6 at 6); without it the same weights exceed B."""
    torch.manual_seed(0)
    bounded = build_model(_toy(act_bound=1.0)).eval()
    plain = build_model(_toy()).eval()
    plain.load_state_dict(bounded.state_dict())
    blocks = ("enc1", "enc2a", "enc2b", "dec1a", "dec1b", "dec2")
    x = 30.0 * torch.randn(4, 1, bounded.config.n_mels, bounded.config.n_frames)
    for net, capped in ((bounded, True), (plain, False)):
        outs: dict[str, torch.Tensor] = {}
        hooks = [getattr(net, b).register_forward_hook(lambda m, i, o, b=b, outs=outs: outs.__setitem__(b, o))
                 for b in blocks]
        with torch.no_grad():
            net(x)
        for h in hooks:
            h.remove()
        highs = [float(outs[b].max()) for b in blocks]
        assert min(float(outs[b].min()) for b in blocks) >= 0.0
        if capped:
            assert max(highs) <= 1.0 and max(highs) == 1.0  # reached, so the cap really acted
        else:
            assert max(highs) > 1.0
    assert model_preset("edge").act_bound == 6.0 and model_preset("paper").act_bound is None


def test_counters_do_not_import_torch():
    code = ("import sys, edge_asc.model as m; m.count_params(m.model_preset('paper')); "
            "m.count_macs(m.model_preset('edge')); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


FORBIDDEN_OPS = {"MaxUnpool", "ArgMax", "ArgMin", "TopK", "OneHot", "CumSum", "MaxRoiPool"}


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_dynamo_onnx_export(name, tmp_path):
    onnx = require("onnx")
    cfg = model_preset(name)
    model = build_model(cfg).eval()
    x = torch.randn(*cfg.input_shape)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=18, verbose=False)
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & FORBIDDEN_OPS, ops & FORBIDDEN_OPS
    if name == "edge":  # numerically: the ONNX reference evaluator agrees with torch (light: edge only)
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(proto)
        (y,) = ref.run(None, {proto.graph.input[0].name: x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(y, model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_gap_bands_average_time_and_mel_bands():
    cfg = _toy(n_mels=9, gap_bands=2, head="gap")  # 9 mels -> bands of 4 bins, the top bin left out
    model = build_model(cfg).eval()
    x = torch.randn(2, 1, 9, 9)
    with torch.no_grad():
        pre1 = model.enc1(x)
        p1 = model._pool(pre1)
        pre2 = model.enc2b(model.enc2a(p1))
        p2 = model._pool(pre2)
        d = model.dec1b(model.dec1a(model._unpool(p2, pre2, p2)))
        d = model.dec2(model._unpool(d, pre1, p1))
        g = model.embed(x)
    ref = torch.stack([d[:, :, 0:4].mean(dim=(2, 3)), d[:, :, 4:8].mean(dim=(2, 3))], dim=2).flatten(1)
    torch.testing.assert_close(g, ref)


def test_mad_instance_norm_matches_its_formula_and_the_std_norm_on_gaussian_maps():
    from edge_asc.model.layers import MAD_TO_STD, STD_FLOOR

    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 64, 61, generator=g) * torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1) + 3.0
    mad = InstanceNorm(3, stat="mad")
    std = InstanceNorm(3, stat="std")
    with torch.no_grad():
        y_mad, y_std = mad(x), std(x)
        d = x - x.mean(dim=(2, 3), keepdim=True)
        s = torch.clamp(MAD_TO_STD * d.abs().mean(dim=(2, 3), keepdim=True), min=STD_FLOOR)
    assert torch.allclose(y_mad, d / s, atol=1e-6)
    # for Gaussian activations the MAD scale equals the standard deviation (to sampling error)
    assert float((y_mad - y_std).abs().max()) < 0.05 * float(y_std.abs().max())
    mix = MixupNorm(3, 0.1, stat="mad")
    with torch.no_grad():
        assert torch.allclose(mix(x), 0.1 * x + 0.9 * y_mad, atol=1e-5)
    with pytest.raises(ValueError, match="'std' or 'mad'"):
        InstanceNorm(3, stat="var")


def test_presets_use_the_int8_friendly_norm_and_old_configs_keep_std():
    from edge_asc.model.config import MODEL_PRESETS, MiniSegNetConfig

    for name in ("paper", "paper-half", "edge", "micro"):
        assert MODEL_PRESETS[name].config.norm_stat == "mad"
        assert MODEL_PRESETS[name].config.int8_native
    d = MODEL_PRESETS["edge"].config.to_dict()
    del d["norm_stat"], d["int8_native"]  # a checkpoint written before the fields existed
    old = MiniSegNetConfig.from_dict(d)
    assert old.norm_stat == "std" and not old.int8_native
    with pytest.raises(ConfigError, match="norm_stat"):
        MiniSegNetConfig(norm_stat="var")


# ---- int8-native formulations -----------------------------------------------------------------------------------
def test_piecewise_reciprocal_is_one_over_the_clamped_scale_within_one_percent():
    from edge_asc.model.layers import RECIP_KNOTS, PiecewiseReciprocal

    r = PiecewiseReciprocal()
    s = torch.logspace(-3, 2, 4001).view(-1, 1)
    want = 1.0 / torch.clamp(s, RECIP_KNOTS[0], RECIP_KNOTS[-1])
    assert float(((r(s) - want) / want).abs().max()) < 0.009
    knots = torch.tensor(RECIP_KNOTS).view(-1, 1)
    torch.testing.assert_close(r(knots), 1.0 / knots, rtol=1e-5, atol=0)  # exact at the knots
    assert torch.allclose(r(torch.tensor([[0.0], [0.05]])), torch.tensor([[10.0], [10.0]]))  # the std floor
    torch.testing.assert_close(PiecewiseReciprocal(input_scale=2.0)(s), r(2.0 * s))
    with pytest.raises(ValueError, match="increasing"):
        PiecewiseReciprocal(knots=(1.0, 0.5))


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.5])
def test_int8_native_mixup_norm_matches_the_mad_norm(lam):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 12, 9) * torch.tensor([0.3, 1.0, 2.5, 0.05, 6.0]).view(1, -1, 1, 1) + 1.5
    ref, nat = MixupNorm(5, lam, stat="mad"), MixupNorm(5, lam, stat="mad", int8_native=True)
    with torch.no_grad():
        ref.inorm.weight.uniform_(0.5, 2.0)
        ref.inorm.bias.uniform_(-1.0, 1.0)
    nat.load_state_dict(ref.state_dict())
    with torch.no_grad():
        a, b = ref(x), nat(x)
    # the only difference is the piecewise-linear reciprocal (<= 0.9% of the normalised part); channel 3's scale
    # is below the floor in both
    assert float((a - b).abs().max()) <= 0.01 * float(a.abs().max())
    with pytest.raises(ValueError, match="mad"):
        MixupNorm(4, 0.1, stat="std", int8_native=True)


def test_int8_native_soft_unpooling_equals_the_reference():
    torch.manual_seed(1)
    pre = torch.rand(2, 3, 9, 10) * 6  # 9 x 10 with 2 x 3 pooling: a row and a column are dropped and padded back
    pooled = torch.nn.functional.max_pool2d(pre, (2, 3), (2, 3))
    values = torch.randn_like(pooled)
    torch.testing.assert_close(mask_unpool(values, pre, pooled, (2, 3), 4.0, int8_native=True),
                               mask_unpool(values, pre, pooled, (2, 3), 4.0), atol=1e-5, rtol=1e-5)


def _cells_with_argmax(winners: torch.Tensor, channels: int, margin: float = 0.5) -> torch.Tensor:
    """[N, H, W] channel indices -> x [N, C, H, W] whose per-cell maximum is at that channel, ``margin`` above the
    rest."""
    torch.manual_seed(2)
    x = torch.rand(winners.shape[0], channels, *winners.shape[1:]) * 3.0
    x.scatter_(1, winners.unsqueeze(1), 3.0 + margin)
    return x


def test_int8_native_event_block_equals_the_reference_on_separated_inputs():
    # counts 40, 25, 16, 10, 5, 4 of 100 cells for channels 5, 2, 7, 0, 3, 1: ranked 5, 2, 7, 0
    counts = {5: 40, 2: 25, 7: 16, 0: 10, 3: 5, 1: 4}
    w = torch.tensor([c for c, n in counts.items() for _ in range(n)]).view(1, 10, 10)
    x = _cells_with_argmax(w, 8)
    ref, nat = EventExtraction(8, 4)(x), EventExtraction(8, 4, int8_native=True)(x)
    torch.testing.assert_close(nat, torch.tensor([[5, 2, 7, 0]]) / 8.0)
    torch.testing.assert_close(nat, ref)


def test_int8_native_event_block_breaks_ties_towards_the_lowest_index():
    nat = EventExtraction(4, 4, int8_native=True)
    # every channel equal in every cell: the first maximum is channel 0, then counts tie at 0 -> 1, 2, 3
    torch.testing.assert_close(nat(torch.zeros(2, 4, 3, 3)), torch.tensor([[0.0, 0.25, 0.5, 0.75]] * 2))
    # two channels tie for the maximum of each cell: the lower one takes the cell
    x = torch.zeros(1, 4, 2, 2)
    x[:, 1], x[:, 3] = 5.0, 5.0
    assert nat(x)[0, 0].item() == 0.25
    # equal counts (2 cells each for channels 3 and 1): the lower index ranks first
    w = torch.tensor([[[3, 1], [1, 3]]])
    torch.testing.assert_close(nat(_cells_with_argmax(w, 4))[0, :2], torch.tensor([0.25, 0.75]))
    assert nat.count_units == 6.0 and EventExtraction(4, 4).count_units == 1.0


def _to_int8(module, calib: np.ndarray, tmp_path):
    """Export ``module`` (float32[1, C, H, W] -> float32[1, K]) through the product's chain to full int8; returns a
    function float32[C, H, W] -> float64[K] running it in LiteRT (input quantised, output dequantised)."""
    from ai_edge_litert.interpreter import Interpreter

    from edge_asc.export.convert import run_onnx2tf, to_onnx

    to_onnx(module, calib[:1], tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", calib.transpose(0, 2, 3, 1))
    from edge_asc.export.schedule import reorder_for_memory

    converted = run_onnx2tf(tmp_path / "m.onnx", tmp_path, "int8", calib_npy=tmp_path / "calib.npy").read_bytes()
    reordered, _ = reorder_for_memory(converted)
    its = [Interpreter(model_content=b) for b in (converted, reordered)]
    for it in its:
        it.allocate_tensors()
    i, o = its[0].get_input_details()[0], its[0].get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        (si, zi), (so, zo) = i["quantization"], o["quantization"]
        q = []
        for it in its:
            it.set_tensor(i["index"], np.clip(np.rint(x.transpose(1, 2, 0)[None] / si) + zi, -128, 127).astype(np.int8))
            it.invoke()
            q.append(it.get_tensor(o["index"]).copy())
        assert np.array_equal(q[0], q[1])  # the memory-aware op order computes the same int8 outputs
        return (q[1].astype(np.float64).reshape(-1) - zo) * so

    return run


@pytest.mark.slow
def test_int8_event_block_ranks_like_its_float_definition(tmp_path):
    require("onnx2tf")
    rng = np.random.default_rng(0)
    c, k = 8, 4
    block = EventExtraction(c, k, int8_native=True).eval()
    samples = []
    for _ in range(40):  # separated cell maxima (ReLU6-range activations), distinct counts
        w = torch.from_numpy(rng.choice(c, size=(1, 12, 10), p=rng.dirichlet(np.ones(c) * 0.5)))
        samples.append((_cells_with_argmax(w, c, margin=0.5) * 1.5).numpy()[0])
    calib = np.stack(samples).astype(np.float32)
    run = _to_int8(block, calib, tmp_path)
    with torch.no_grad():
        want = np.rint(block(torch.from_numpy(calib)).numpy() * c).astype(int)
    got = np.stack([np.rint(run(x) * c).astype(int) for x in calib])
    counts = [np.bincount(np.argmax(x.reshape(c, -1), 0), minlength=c) for x in calib]
    # counts whose top-k + 1 are at least 3 cells (2.5% of the cells, ~3 int8 steps of the count grid) apart
    separated = [i for i, n in enumerate(counts) if np.all(-np.diff(np.sort(n)[::-1][:k + 1]) >= 3)]
    assert len(separated) >= 10
    assert np.array_equal(got[separated], want[separated])  # the int8 block ranks exactly like its float definition
    assert not {"EQUAL", "LESS", "CAST", "QUANTIZE"} & _ops(tmp_path)


def _ops(tmp_path) -> set[str]:
    from edge_asc.export.convert import tflite_ops

    return {op.name for op in tflite_ops((tmp_path / "model_int8.tflite").read_bytes())}
