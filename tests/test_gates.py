"""Hard Concrete gates on the N:M region: masks, hardening, loss terms, schedule, optimizer helpers."""

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from flexhinm import (
    NMGates,
    RegionLayout,
    apply_masks,
    apply_nm_gates,
    bake_masks,
    clamp_log_alpha_,
    entered_groups,
    from_gemm,
    gate_loss,
    gate_loss_terms,
    gate_param_group,
    gate_parameters,
    gates_of,
    gemm_shape,
    harden_gates,
    masks_of,
    nm_keep_from_scores,
    non_gate_parameters,
    remove_gates,
    set_temperature,
    temperature_at,
    to_gemm,
)


# ------------------------------------------------------------------------------------- helpers
def make_layout(shape, tile_rows, counts, seed=0):
    """Random row order, random column split into (pruned, N:M, dense) counts, random valid keep."""
    generator = torch.Generator().manual_seed(seed)
    rows, columns = gemm_shape(shape)
    tiles = rows // tile_rows
    pruned, nm, _ = counts
    split = torch.stack([torch.randperm(columns, generator=generator) for _ in range(tiles)])
    keep = nm_keep_from_scores(torch.rand(tiles, tile_rows, nm, generator=generator))
    return RegionLayout(
        shape=shape,
        tile_rows=tile_rows,
        row_order=torch.randperm(rows, generator=generator),
        pruned_cols=split[:, :pruned],
        nm_cols=split[:, pruned:pruned + nm],
        dense_cols=split[:, pruned + nm:],
        nm_keep=keep,
    )


def all_nm_layout(shape=(8, 16), tile_rows=4, seed=0):
    return make_layout(shape, tile_rows, (0, gemm_shape(shape)[1], 0), seed=seed)


def ordered_layout(shape, tile_rows):
    """Every column in the N:M region, rows and columns in their natural order."""
    rows, columns = shape
    tiles = rows // tile_rows
    empty = torch.empty(tiles, 0, dtype=torch.long)
    return RegionLayout(shape=shape, tile_rows=tile_rows, row_order=torch.arange(rows),
                        pruned_cols=empty, nm_cols=torch.arange(columns).expand(tiles, -1),
                        dense_cols=empty,
                        nm_keep=nm_keep_from_scores(torch.zeros(tiles, tile_rows, columns)))


def brute_force_multiplier(layout, live, values):
    """The gated mask built entry by entry with Python loops (values: (G, V, m) gate values)."""
    rows, columns = gemm_shape(layout.shape)
    tile_rows, m = layout.tile_rows, layout.m
    matrix = torch.zeros(rows, columns, dtype=values.dtype)
    for tile in range(layout.num_tiles):
        for r in range(tile_rows):
            row = int(layout.row_order[tile * tile_rows + r])
            for column in layout.dense_cols[tile].tolist():
                matrix[row, column] = 1.0
            for j, column in enumerate(layout.nm_cols[tile].tolist()):
                matrix[row, column] = float(layout.nm_keep[tile, r, j])
    k = 0
    for tile in range(layout.num_tiles):
        for group in range(live.shape[1]):
            if not live[tile, group]:
                continue
            for r in range(tile_rows):
                row = int(layout.row_order[tile * tile_rows + r])
                for i in range(m):
                    matrix[row, int(layout.nm_cols[tile, m * group + i])] = values[k, r, i]
            k += 1
    return from_gemm(matrix, layout.shape)


def randomize(gates, seed=0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        shape = gates.gate.log_alpha.shape
        gates.gate.log_alpha.copy_(torch.randn(shape, generator=generator) * scale)
    return gates


LAYOUT_CASES = {
    "linear_all_nm": lambda: (all_nm_layout(), None),
    "conv_three_regions": lambda: (make_layout((8, 4, 3, 3), 4, (12, 16, 8), seed=1), None),
    "conv_some_groups_live": lambda: (
        make_layout((8, 4, 3, 3), 2, (4, 24, 8), seed=2),
        torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 0, 0, 1, 0]],
                     dtype=torch.bool),
    ),
}


# ------------------------------------------------------------------------------------- layer gates
def test_nm_gates_default_init_from_layout():
    """log_alpha is (G, V, m) and starts at +2 where nm_keep is True and -2 elsewhere."""
    layout = all_nm_layout()
    gates = NMGates(layout)
    expected = layout.nm_keep.reshape(2, 4, 4, 4).transpose(1, 2).reshape(8, 4, 4)
    assert tuple(gates.gate.log_alpha.shape) == (8, 4, 4)
    assert torch.equal(gates.gate.log_alpha.detach() > 0, expected)
    assert set(gates.gate.log_alpha.abs().flatten().tolist()) == {2.0}


def test_nm_gates_init_from_scores():
    """With scores, the n highest scores of each live group start open at +init_log_alpha."""
    layout = all_nm_layout()
    scores = torch.rand(8, 16, generator=torch.Generator().manual_seed(3))
    gates = NMGates(layout, scores=scores, init_log_alpha=1.5).eval()
    opened = gates(torch.ones(8, 16)) > 0.5
    by_scores = torch.zeros(8, 16, dtype=torch.bool)
    for row in range(8):
        for tile in range(2):
            if row not in layout.tile_row_indices[tile].tolist():
                continue
            for group in range(4):
                columns = layout.nm_cols[tile, 4 * group:4 * group + 4]
                top = scores[row, columns].topk(2).indices
                by_scores[row, columns[top]] = True
    assert torch.equal(opened, by_scores)
    assert set(gates.gate.log_alpha.abs().flatten().tolist()) == {1.5}


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_nm_gates_forward_matches_brute_force(case):
    """In eval mode the gated weight equals weight times a mask built entry by entry."""
    layout, live = LAYOUT_CASES[case]()
    gates = randomize(NMGates(layout, live_groups=live)).eval()
    if live is None:
        live = torch.ones(layout.num_tiles, layout.counts[1] // 4, dtype=torch.bool)
    weight = torch.randn(layout.shape, generator=torch.Generator().manual_seed(4))
    expected = weight * brute_force_multiplier(layout, live, gates.gate.deterministic_gate().detach())
    assert torch.equal(gates(weight), expected)


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_nm_gates_training_regions(case):
    """In training mode pruned weights are 0, dense and fixed N:M weights are exact, gates in [0, 1]."""
    layout, live = LAYOUT_CASES[case]()
    gates = NMGates(layout, live_groups=live).train()
    weight = torch.randn(layout.shape, generator=torch.Generator().manual_seed(5))
    gated = to_gemm(gates(weight).detach())
    weight_gemm = to_gemm(weight)
    codes = layout.region_map()

    live_entries = torch.zeros_like(codes, dtype=torch.bool)
    rows, cols = layout.tile_row_indices, layout.nm_cols.reshape(layout.num_tiles, -1, 4)
    for tile, group in gates.live_groups.nonzero().tolist():
        live_entries[rows[tile][:, None], cols[tile, group][None, :]] = True
    fixed = to_gemm(layout.mask())

    assert bool((gated[codes == 0] == 0).all())
    assert torch.equal(gated[codes == 2], weight_gemm[codes == 2])
    fixed_nm = (codes == 1) & ~live_entries
    assert torch.equal(gated[fixed_nm], (weight_gemm * fixed)[fixed_nm])
    ratio = gated[live_entries] / weight_gemm[live_entries]
    assert bool(((ratio >= -1e-6) & (ratio <= 1 + 1e-6)).all())


def test_nm_gates_gradient_reaches_log_alpha():
    """Backward through a gated Conv2d reaches log_alpha and the weight, never pruned weights.

    At log_alpha = 0 about 66 % of samples lie strictly inside (0, 1), where the gradient is
    non-zero; a clipped sample passes no gradient.
    """
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3)
    layout = make_layout((8, 4, 3, 3), 4, (12, 16, 8), seed=1)
    apply_nm_gates(conv, {"weight": NMGates(layout, init_log_alpha=0.0)})
    conv(torch.randn(2, 4, 5, 5)).square().sum().backward()
    log_alpha_grad = conv.parametrizations.weight[0].gate.log_alpha.grad
    weight_grad = conv.parametrizations.weight.original.grad
    assert log_alpha_grad is not None
    assert bool(torch.isfinite(log_alpha_grad).all())
    assert int((log_alpha_grad != 0).sum()) > log_alpha_grad.numel() // 3
    assert bool((to_gemm(weight_grad)[layout.region_map() == 0] == 0).all())


def test_nm_gates_bad_arguments():
    """Wrong live_groups shape or dtype, wrong scores shape and negative init raise."""
    layout = all_nm_layout()
    with pytest.raises(ValueError, match=r"live_groups has shape \(2, 3\).*shape \(2, 4\)"):
        NMGates(layout, live_groups=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="live_groups must be a bool tensor"):
        NMGates(layout, live_groups=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"scores must be a tensor of the weight's shape \(8, 16\)"):
        NMGates(layout, scores=torch.rand(16, 8))
    bad_scores = torch.rand(8, 16)
    bad_scores[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"scores contains 1 NaN"):
        NMGates(layout, scores=bad_scores)
    with pytest.raises(ValueError, match=r"init_log_alpha=-1.0 is invalid"):
        NMGates(layout, init_log_alpha=-1.0)
    with pytest.raises(TypeError, match="layout must be a RegionLayout"):
        NMGates({"shape": (8, 16)})
    with pytest.raises(ValueError, match=r"temperature=0.0 is invalid"):
        NMGates(layout, temperature=0.0)
    with pytest.raises(ValueError, match=r"gamma=0.0 is invalid"):
        NMGates(layout, gamma=0.0)
    with pytest.raises(ValueError, match=r"zeta=1.0 is invalid"):
        NMGates(layout, zeta=1.0)


# ------------------------------------------------------------------------------------- hardening
def test_nm_keep_from_scores_ties_keep_lower_index():
    """Equal scores keep the first n of each group."""
    keep = nm_keep_from_scores(torch.zeros(3, 8))
    assert keep.int().tolist() == [[1, 1, 0, 0, 1, 1, 0, 0]] * 3


def test_nm_keep_from_scores_bad_input():
    """NaN, a bad last dimension and integer scores raise."""
    with pytest.raises(ValueError, match="scores contain 1 NaN"):
        nm_keep_from_scores(torch.tensor([0.0, float("nan"), 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"groups of m=4.*multiple of 4"):
        nm_keep_from_scores(torch.zeros(2, 6))
    with pytest.raises(TypeError, match="floating tensor"):
        nm_keep_from_scores(torch.zeros(4, dtype=torch.long))


SPECIAL_LOGITS = [0.0, 1.0, -1.0, 4.6, -4.6, 1e30, -1e30, float("inf"), float("-inf"), 2.4, -2.4]
LOGITS = st.one_of(st.sampled_from(SPECIAL_LOGITS), st.floats(allow_nan=False, width=32))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), leading=st.integers(1, 5), groups=st.integers(1, 4),
       n=st.integers(1, 3))
def test_nm_keep_from_scores_always_valid(data, leading, groups, n):
    """Any non-NaN scores, ties and infinities included, give exactly n kept of every 4."""
    values = data.draw(st.lists(LOGITS, min_size=leading * groups * 4,
                                max_size=leading * groups * 4))
    scores = torch.tensor(values, dtype=torch.float32).reshape(leading, groups * 4)
    keep = nm_keep_from_scores(scores, n=n, m=4)
    assert keep.dtype == torch.bool
    assert keep.shape == scores.shape
    assert bool((keep.reshape(leading, groups, 4).sum(-1) == n).all())


@settings(max_examples=40, deadline=None)
@given(data=st.data(), tiles=st.integers(1, 3), tile_rows=st.sampled_from([1, 2, 4]),
       groups=st.integers(1, 3))
def test_harden_valid_for_any_logits(data, tiles, tile_rows, groups):
    """Hardening gives a valid 2:4 layout for any log_alpha (RegionLayout checks it on creation)."""
    layout = make_layout((tiles * tile_rows, 4 * groups + 4), tile_rows, (4, 4 * groups, 0))
    gates = NMGates(layout)
    values = data.draw(st.lists(LOGITS, min_size=gates.gate.log_alpha.numel(),
                                max_size=gates.gate.log_alpha.numel()))
    with torch.no_grad():
        gates.gate.log_alpha.copy_(torch.tensor(values).reshape(gates.gate.log_alpha.shape))
    hardened = gates.harden()
    kept_per_group = hardened.nm_keep.reshape(tiles, tile_rows, groups, 4).sum(-1)
    assert bool((kept_per_group == 2).all())
    assert int(hardened.mask().sum()) == tiles * tile_rows * 2 * groups
    assert torch.equal(hardened.nm_cols, layout.nm_cols)


def test_harden_equals_threshold_when_valid():
    """When each group has exactly 2 deterministic gates above 0.5, hardening is the 0.5 threshold."""
    layout = all_nm_layout()
    gates = NMGates(layout)
    generator = torch.Generator().manual_seed(6)
    magnitude = torch.rand(gates.gate.log_alpha.shape, generator=generator) * 4 + 0.01
    with torch.no_grad():
        order = torch.rand(magnitude.shape, generator=generator).argsort(dim=-1)
        sign = torch.where(order < 2, 1.0, -1.0)
        gates.gate.log_alpha.copy_(sign * magnitude)
    threshold = gates.eval()(torch.ones(8, 16)) > 0.5
    assert torch.equal(gates.hardened_mask(), threshold)


def test_harden_prefers_larger_logit_among_clipped_gates():
    """Gates tied at 1 after clipping are ranked by log_alpha, not by position."""
    gates = NMGates(ordered_layout((1, 4), 1))
    with torch.no_grad():
        gates.gate.log_alpha.copy_(torch.tensor([[[3.0, 4.0, 5.0, -3.0]]]))
    assert gates.eval()(torch.ones(1, 4)).tolist() == [[1.0, 1.0, 1.0, 0.0]]
    assert gates.hardened_mask().tolist() == [[False, True, True, False]]


def test_harden_changes_only_live_groups():
    """Groups without gates keep the layout's nm_keep; regions stay the same."""
    layout, live = LAYOUT_CASES["conv_some_groups_live"]()
    gates = randomize(NMGates(layout, live_groups=live), seed=7)
    hardened = gates.harden()
    before = layout.nm_keep.reshape(4, 2, 6, 4).transpose(1, 2)
    after = hardened.nm_keep.reshape(4, 2, 6, 4).transpose(1, 2)
    assert torch.equal(after[~live], before[~live])
    assert not torch.equal(after[live], before[live])
    for field in ("row_order", "pruned_cols", "nm_cols", "dense_cols"):
        assert torch.equal(getattr(hardened, field), getattr(layout, field)), field


def test_harden_rejects_nan_logits():
    """A NaN log_alpha raises instead of producing an arbitrary mask."""
    gates = NMGates(all_nm_layout())
    with torch.no_grad():
        gates.gate.log_alpha[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN log_alpha means training diverged"):
        gates.harden()


def test_saturated_eval_equals_hardened_mask():
    """With |log_alpha| >= 2.4 every deterministic gate is 0 or 1 and equals the hardened mask."""
    layout = make_layout((8, 4, 3, 3), 4, (12, 16, 8), seed=1)
    gates = randomize(NMGates(layout), seed=8)
    with torch.no_grad():
        log_alpha = gates.gate.log_alpha
        log_alpha.copy_(torch.where(nm_keep_from_scores(log_alpha), 5.0, -5.0))
    weight = torch.randn(layout.shape)
    assert torch.equal(gates.eval()(weight), weight * gates.hardened_mask())


def test_harden_gates_gives_exact_masked_weight():
    """After harden_gates the weight is exactly original * layout.mask() and masks_of reports it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 9, 16))
    layouts = {"0.weight": make_layout((8, 4, 3, 3), 4, (12, 16, 8), seed=1),
               "2.weight": all_nm_layout((16, 72), 8, seed=2)}
    gates = {name: randomize(NMGates(layout), seed=9) for name, layout in layouts.items()}
    apply_nm_gates(model, gates)
    expected_masks = {name: layer_gates.hardened_mask() for name, layer_gates in gates.items()}

    hardened = harden_gates(model)
    assert sorted(hardened) == ["0.weight", "2.weight"]
    assert gates_of(model) == {}
    for name, layout in hardened.items():
        module = model.get_submodule(name.split(".")[0])
        original = module.parametrizations.weight.original.detach()
        assert torch.equal(layout.mask(), expected_masks[name]), name
        assert torch.equal(module.weight.detach(), original * layout.mask()), name
        assert torch.equal(masks_of(model)[name], layout.mask()), name


# ------------------------------------------------------------------------------------- models
def test_harden_gates_nan_leaves_model_unchanged():
    """A NaN logit in the second layer raises before the first layer is hardened."""
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 8))
    apply_nm_gates(model, {"0.weight": NMGates(all_nm_layout()),
                           "1.weight": NMGates(all_nm_layout((8, 8)))})
    with torch.no_grad():
        gates_of(model)["1.weight"].gate.log_alpha[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        harden_gates(model)
    assert sorted(gates_of(model)) == ["0.weight", "1.weight"]
    assert masks_of(model) == {}


def test_apply_replaces_mask_and_keeps_parameter():
    """Gates take the place of a MaskedWeight; the weight stays the same Parameter object."""
    linear = nn.Linear(16, 8)
    layout = all_nm_layout()
    parameter = linear.weight
    apply_masks(linear, {"weight": layout.mask()})
    apply_nm_gates(linear, {"weight": NMGates(layout)})
    assert len(linear.parametrizations.weight) == 1
    assert isinstance(linear.parametrizations.weight[0], NMGates)
    assert linear.parametrizations.weight.original is parameter
    assert masks_of(linear) == {}


def test_apply_draws_no_random_numbers():
    """Registering gates leaves the global random state untouched."""
    linear = nn.Linear(16, 8)
    state = torch.random.get_rng_state()
    apply_nm_gates(linear, {"weight": NMGates(all_nm_layout())})
    assert torch.equal(torch.random.get_rng_state(), state)


def test_apply_bad_arguments():
    """Unknown names, wrong shapes, non-gate values and foreign parametrizations raise."""
    model = nn.Sequential(nn.Linear(16, 8))
    with pytest.raises(ValueError, match="'1.weight' does not match any module"):
        apply_nm_gates(model, {"1.weight": NMGates(all_nm_layout())})
    with pytest.raises(ValueError, match=r"built for shape \(8, 32\) but the weight has shape"):
        apply_nm_gates(model, {"0.weight": NMGates(all_nm_layout((8, 32)))})
    with pytest.raises(TypeError, match="must be NMGates"):
        apply_nm_gates(model, {"0.weight": all_nm_layout()})

    with pytest.raises(ValueError, match="module '0' has no tensor 'scale'"):
        apply_nm_gates(model, {"0.scale": NMGates(all_nm_layout())})

    class Double(nn.Module):
        def forward(self, weight):
            return 2 * weight

    parametrize.register_parametrization(model[0], "weight", Double())
    with pytest.raises(ValueError, match="carries a Double parametrization"):
        apply_nm_gates(model, {"0.weight": NMGates(all_nm_layout())})


def test_apply_shape_error_keeps_existing_mask():
    """A shape mismatch raises before the weight's current mask is removed."""
    linear = nn.Linear(16, 8)
    mask = all_nm_layout().mask()
    apply_masks(linear, {"weight": mask})
    with pytest.raises(ValueError, match="built for shape"):
        apply_nm_gates(linear, {"weight": NMGates(all_nm_layout((8, 32)))})
    assert torch.equal(masks_of(linear)["weight"], mask)


def test_harden_gates_rejects_stacked_parametrizations():
    """A gated weight that later got a second parametrization raises instead of losing it."""
    linear = nn.Linear(16, 8)
    apply_nm_gates(linear, {"weight": NMGates(all_nm_layout())})
    parametrize.register_parametrization(linear, "weight", nn.Identity(), unsafe=True)
    with pytest.raises(ValueError, match=r"'weight' carries 2 parametrizations"):
        harden_gates(linear)
    with pytest.raises(ValueError, match=r"'weight' carries 2 parametrizations"):
        remove_gates(linear)


def test_mask_helpers_skip_gated_weights():
    """masks_of and bake_masks ignore gated weights; remove_gates restores the dense weight."""
    linear = nn.Linear(16, 8)
    dense = linear.weight.detach().clone()
    apply_nm_gates(linear, {"weight": NMGates(all_nm_layout())})
    assert masks_of(linear) == {}
    bake_masks(linear)
    assert list(gates_of(linear)) == ["weight"]
    remove_gates(linear)
    assert not parametrize.is_parametrized(linear)
    assert torch.equal(linear.weight.detach(), dense)


def test_entered_groups_marks_new_columns():
    """A group is new when one of its columns was outside the previous N:M region of its tile."""
    empty = torch.empty(1, 0, dtype=torch.long)
    previous = RegionLayout(shape=(2, 16), tile_rows=2, row_order=torch.arange(2),
                            pruned_cols=torch.arange(4)[None], nm_cols=torch.arange(4, 12)[None],
                            dense_cols=torch.arange(12, 16)[None],
                            nm_keep=nm_keep_from_scores(torch.zeros(1, 2, 8)))
    current = RegionLayout(shape=(2, 16), tile_rows=2, row_order=torch.arange(2),
                           pruned_cols=torch.arange(8)[None],
                           nm_cols=torch.tensor([[8, 9, 10, 11, 12, 13, 14, 15]]), dense_cols=empty,
                           nm_keep=nm_keep_from_scores(torch.zeros(1, 2, 8)))
    assert entered_groups(previous, current).tolist() == [[False, True]]
    assert entered_groups(current, current).tolist() == [[False, False]]
    other = RegionLayout(**{**current.state_dict(), "shape": (2, 16), "row_order": torch.tensor([1, 0])})
    with pytest.raises(ValueError, match="the layouts describe different tilings"):
        entered_groups(previous, other)


# ------------------------------------------------------------------------------------- saving
def test_nm_gates_state_dict_weights_only():
    """NMGates.from_state_dict rebuilds gates, layout and temperature from a weights_only load."""
    layout, live = LAYOUT_CASES["conv_some_groups_live"]()
    gates = randomize(NMGates(layout, live_groups=live), seed=10)
    gates.gate.temperature = 0.3
    buffer = io.BytesIO()
    torch.save(gates.state_dict(), buffer)
    buffer.seek(0)
    restored = NMGates.from_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.gate.log_alpha, gates.gate.log_alpha)
    assert restored.gate.temperature == 0.3
    assert torch.equal(restored.live_groups, live)
    assert torch.equal(restored.layout.nm_keep, layout.nm_keep)
    assert torch.equal(restored.harden().nm_keep, gates.harden().nm_keep)


def test_model_state_dict_resumes_into_fresh_gates():
    """A gated model's state_dict loads (weights_only) into a model gated from the same layout."""
    torch.manual_seed(0)
    layout = all_nm_layout()
    source = nn.Linear(16, 8)
    apply_nm_gates(source, {"weight": randomize(NMGates(layout), seed=11)})
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)

    target = nn.Linear(16, 8)
    apply_nm_gates(target, {"weight": NMGates(layout)})
    target.load_state_dict(torch.load(buffer, weights_only=True))
    inputs = torch.randn(3, 16)
    assert torch.equal(target.eval()(inputs), source.eval()(inputs))


# ------------------------------------------------------------------------------------- loss terms
def gates_with_logits(logits, shape=(1, 4)):
    """One-tile all-N:M gates on a (rows, 4k) weight with the given log_alpha, in eval mode."""
    gates = NMGates(ordered_layout(shape, shape[0]))
    with torch.no_grad():
        gates.gate.log_alpha.copy_(torch.tensor(logits).reshape(gates.gate.log_alpha.shape))
    return gates.eval()


def test_gate_loss_hand_computed():
    """Deterministic gates [1, 1, 0, 0.5]: mean 0.625, |sum - 2| = 0.5, loss 0.1*0.625 + 2*0.5."""
    gates = gates_with_logits([10.0, 10.0, -10.0, 0.0])
    with torch.no_grad():
        sparse, constraint = gate_loss_terms([gates])
        loss = gate_loss([gates], lambda_sparse=0.1, lambda_constraint=2.0)
    assert math.isclose(float(sparse), 0.625, abs_tol=1e-7)
    assert math.isclose(float(constraint), 0.5, abs_tol=1e-7)
    assert math.isclose(float(loss), 1.0625, abs_tol=1e-6)


def test_gate_loss_pools_layers_and_groups():
    """Means pool every gate and every group over layers: (2.5 + 6) / 12 and (0.5 + 2 + 0) / 3."""
    model = nn.ModuleDict({
        "a": gates_with_logits([10.0, 10.0, -10.0, 0.0]),
        "b": gates_with_logits([10.0] * 4 + [10.0, -10.0] * 2, shape=(2, 4)),
    })
    with torch.no_grad():
        sparse, constraint = gate_loss_terms(model)
    assert math.isclose(float(sparse), 8.5 / 12, abs_tol=1e-7)
    assert math.isclose(float(constraint), 2.5 / 3, abs_tol=1e-7)


def test_gate_loss_without_gates_is_zero():
    """A model without gates gives zero terms."""
    sparse, constraint = gate_loss_terms(nn.Linear(4, 4))
    assert float(sparse) == 0.0
    assert float(constraint) == 0.0
    assert float(gate_loss(nn.Linear(4, 4))) == 0.0


def test_gate_loss_gradient_in_training():
    """In training mode the loss is sampled and differentiable in log_alpha."""
    torch.manual_seed(0)
    gates = NMGates(all_nm_layout()).train()
    gate_loss(gates, lambda_sparse=0.01, lambda_constraint=1.0).backward()
    assert gates.gate.log_alpha.grad is not None
    assert int((gates.gate.log_alpha.grad != 0).sum()) > 0


@pytest.mark.parametrize("name", ["lambda_sparse", "lambda_constraint"])
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_gate_loss_bad_lambda(name, value):
    """A negative or non-finite loss weight raises ValueError naming it."""
    with pytest.raises(ValueError, match=rf"{name}=.* is invalid; loss weights must be finite"):
        gate_loss([], **{name: value})


def test_gate_loss_lambda_type():
    """A non-number loss weight raises TypeError."""
    with pytest.raises(TypeError, match="lambda_sparse must be a number"):
        gate_loss([], lambda_sparse="0.1")


def test_gate_loss_bad_source():
    """A list holding something other than gates raises TypeError."""
    with pytest.raises(TypeError, match="expected NMGates, got Linear"):
        gate_loss_terms([nn.Linear(2, 2)])


# ------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("epoch, expected", [
    (0, 2 / 3), (4, 2 / 3), (5, 2 / 3 * 0.8), (9, 2 / 3 * 0.8), (10, 2 / 3 * 0.64),
    (40, max(0.1, 2 / 3 * 0.8 ** 8)), (45, 0.1), (1000, 0.1),
])
def test_temperature_at_defaults(epoch, expected):
    """tau = max(0.1, 2/3 * 0.8 ** (epoch // 5))."""
    assert math.isclose(temperature_at(epoch), expected, rel_tol=1e-12), f"epoch {epoch}"


def test_temperature_at_custom():
    """Custom initial, factor, every and floor follow the same formula."""
    assert temperature_at(7, initial=1.0, factor=0.5, every=2, floor=0.01) == 0.125
    assert temperature_at(100, initial=1.0, factor=1.0, every=1, floor=0.5) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"epoch": -1}, r"epoch=-1 is invalid"),
    ({"epoch": 0, "every": 0}, r"every=0 is invalid"),
    ({"epoch": 0, "initial": 0.0}, r"initial=0.0 is invalid"),
    ({"epoch": 0, "factor": 1.5}, r"factor=1.5 is invalid"),
    ({"epoch": 0, "factor": -0.5}, r"factor=-0.5 is invalid"),
    ({"epoch": 0, "floor": 0.0}, r"floor=0.0 is invalid"),
    ({"epoch": 0, "floor": 1.0}, r"floor=1.0 is above initial"),
])
def test_temperature_at_bad_arguments(kwargs, message):
    """Out-of-range schedule arguments raise ValueError naming them."""
    with pytest.raises(ValueError, match=message):
        temperature_at(**kwargs)


def test_temperature_at_epoch_type():
    """A float epoch raises TypeError."""
    with pytest.raises(TypeError, match="epoch must be an int"):
        temperature_at(1.5)


def test_set_temperature_all_gates():
    """set_temperature reaches every gate of a model and rejects non-positive values."""
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 8))
    apply_nm_gates(model, {"0.weight": NMGates(all_nm_layout()),
                           "1.weight": NMGates(all_nm_layout((8, 8)))})
    set_temperature(model, 0.25)
    assert [g.gate.temperature for g in gates_of(model).values()] == [0.25, 0.25]
    with pytest.raises(ValueError, match=r"temperature=-1.0 is invalid"):
        set_temperature(model, -1.0)


# ------------------------------------------------------------------------------------- optimizer
def test_clamp_log_alpha():
    """clamp_log_alpha_ limits every logit to [-4.6, 4.6] by default, in place."""
    gates = randomize(NMGates(all_nm_layout()), scale=20.0)
    clamp_log_alpha_([gates])
    log_alpha = gates.gate.log_alpha.detach()
    assert float(log_alpha.max()) == pytest.approx(4.6)
    assert float(log_alpha.min()) == pytest.approx(-4.6)
    with pytest.raises(ValueError, match=r"low=1.0, high=-1.0 is invalid"):
        clamp_log_alpha_([gates], low=1.0, high=-1.0)


def test_param_groups_partition_model():
    """Gate and non-gate parameters split the model's parameters; the gate group has no decay."""
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8))
    apply_nm_gates(model, {"0.weight": NMGates(all_nm_layout())})
    gate_ids = {id(p) for p in gate_parameters(model)}
    other_ids = {id(p) for p in non_gate_parameters(model)}
    group = gate_param_group(model)
    assert gate_ids == {id(model[0].parametrizations.weight[0].gate.log_alpha)}
    assert not gate_ids & other_ids
    assert gate_ids | other_ids == {id(p) for p in model.parameters()}
    assert (group["lr"], group["weight_decay"]) == (0.01, 0.0)
    with pytest.raises(ValueError, match=r"lr=-1 is invalid"):
        gate_param_group(model, lr=-1)


def test_adam_step_moves_gates_and_weights():
    """One Adam step with both groups changes the logits and the weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8))
    apply_nm_gates(model, {"0.weight": NMGates(all_nm_layout())})
    optimizer = torch.optim.Adam([{"params": non_gate_parameters(model), "lr": 1e-3,
                                   "weight_decay": 1e-4}, gate_param_group(model)])
    log_alpha = gates_of(model)["0.weight"].gate.log_alpha
    before = (log_alpha.detach().clone(), model[0].parametrizations.weight.original.detach().clone())
    loss = model(torch.randn(4, 16)).square().mean() + gate_loss(model)
    loss.backward()
    optimizer.step()
    assert not torch.equal(log_alpha.detach(), before[0])
    assert not torch.equal(model[0].parametrizations.weight.original.detach(), before[1])


# ------------------------------------------------------------------------------------- end to end
def train_gates_against_dense_teacher(lambda_constraint, steps=300, seed=0):
    """Train only the gates of a Linear to match its own dense output; return deterministic gates."""
    torch.manual_seed(seed)
    student = nn.Linear(16, 8, bias=False)
    teacher_weight = student.weight.detach().clone()
    gates = NMGates(all_nm_layout(seed=seed), scores=torch.rand(8, 16))
    apply_nm_gates(student, {"weight": gates})
    student.parametrizations.weight.original.requires_grad_(False)
    optimizer = torch.optim.Adam([gate_param_group(student, lr=0.1)])
    inputs = torch.randn(256, 16)
    targets = inputs @ teacher_weight.T
    for _ in range(steps):
        optimizer.zero_grad()
        task = (student(inputs) - targets).square().mean()
        (task + gate_loss(student, lambda_constraint=lambda_constraint)).backward()
        optimizer.step()
        clamp_log_alpha_(student)
    return gates.gate.deterministic_gate().detach().sort(dim=-1, descending=True).values


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constraint_converges_to_two_of_four(seed):
    """With lambda_constraint = 10 and 300 Adam steps every group ends with two gates > 0.9 and
    two < 0.1, although the task (match the dense layer) wants every gate open."""
    ranked = train_gates_against_dense_teacher(10.0, seed=seed)
    assert float(ranked[..., :2].min()) > 0.9, f"smallest open gate {float(ranked[..., :2].min()):.3f}"
    assert float(ranked[..., 2:].max()) < 0.1, f"largest closed gate {float(ranked[..., 2:].max()):.3f}"


def test_without_constraint_gates_open():
    """Control: with lambda_constraint = 0 the same task opens more than 2 gates per group."""
    ranked = train_gates_against_dense_teacher(0.0)
    assert float(ranked[..., 2:].max()) > 0.9, f"largest third gate {float(ranked[..., 2:].max()):.3f}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gates_on_cuda_model():
    """Gates built from a CPU layout train and harden on a CUDA model; masks land on the GPU."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 9, 16)).cuda()
    layouts = {"0.weight": make_layout((8, 4, 3, 3), 4, (12, 16, 8), seed=1),
               "2.weight": all_nm_layout((16, 72), 8, seed=2)}
    apply_nm_gates(model, {name: NMGates(layout) for name, layout in layouts.items()})
    optimizer = torch.optim.Adam([{"params": non_gate_parameters(model), "lr": 1e-3},
                                  gate_param_group(model)])
    loss = model(torch.randn(2, 4, 5, 5, device="cuda")).square().mean() + gate_loss(model)
    loss.backward()
    optimizer.step()
    clamp_log_alpha_(model)
    assert all(g.gate.log_alpha.is_cuda for g in gates_of(model).values())

    hardened = harden_gates(model)
    for name, layout in hardened.items():
        mask = masks_of(model)[name]
        assert mask.is_cuda, name
        assert torch.equal(mask.cpu(), layout.mask()), name
