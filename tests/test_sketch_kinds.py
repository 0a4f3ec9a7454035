"""The sketch kinds' registry (iprox_ray/sketch/kinds.py): a kind registered from outside the
package sketches and fills the store's records; the built-in kinds give the records and sketches
they gave when the factory branched on the kind's name; unknown names are refused at load time."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from iprox_ray.models.patterns import linear_dims
from iprox_ray.sketch.dense import DenseSketcher, SrhtKind
from iprox_ray.sketch.dense_projection import DenseProjector
from iprox_ray.sketch.factory import (
    features_record,
    make_sketcher,
    module_record,
    projection_record,
    reproject_dim,
    sketch_dim,
    sketched_modules,
    vectors_record,
)
from iprox_ray.sketch.kind import SketchKind
from iprox_ray.sketch.kinds import SKETCH_KINDS, check_sketch, describe_settings, kind_for, kind_named
from iprox_ray.sketch.kronecker import KroneckerSketcher
from iprox_ray.sketch.memory import sketcher_extras
from iprox_ray.sketch.vectors import VectorBlock
from iprox_ray.spec import SketchSpec, SpecError

PATTERNS = [r"re:.*\.(q_proj|o_proj|up_proj|down_proj)$"]  # 8 linears: q, o 32x32; up 64x32; down 32x64
Q = "model.layers.0.self_attn.q_proj"
DOWN = "model.layers.1.mlp.down_proj"


class ToyKind(SrhtKind):
    """A plugin kind: an SRHT sketch twice as wide as `dim`, with its own store record and text."""

    name = "toy"

    def make(self, model, spec, adam, vectors, expand_lowrank):
        return super().make(model, spec.model_copy(update={"dim": 2 * spec.dim}), adam, vectors, expand_lowrank)

    def matrix_dim(self, spec, n_modules):
        return 2 * spec.dim

    def projection_record(self, spec, n_modules):
        return {**super().projection_record(spec, n_modules), "dim": 2 * spec.dim, "toy": True}

    def describe(self, settings):
        return f"dim 2x{settings.get('dim')}"


@pytest.fixture
def toy():
    # This module as pytest imported it (its name depends on the rootdir), so the registry loads
    # the very class defined above rather than a second copy of the module.
    SKETCH_KINDS.add("toy", f"{__name__}:ToyKind")
    yield
    SKETCH_KINDS.remove("toy")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 120, (3, 10), generator=g)
    attn = torch.ones(3, 10, dtype=torch.long)
    attn[1, 6:] = 0
    trainable = attn.bool().clone()
    trainable[:, :3] = False
    return ids, attn, trainable


def _sketch(model, spec):
    sketcher = make_sketcher(copy.deepcopy(model), spec)
    try:
        return sketcher, sketcher.sketch(*_batch()).sketch
    finally:
        sketcher.close()


def _records(model, spec):
    linears = sketched_modules(model, spec)
    modules = {name: module_record(spec, name, *linear_dims(m)) for name, m in linears}
    return (projection_record(spec, len(linears)), modules[Q], modules[DOWN],
            sketch_dim(spec, len(linears), vectors_record(model, spec)), reproject_dim(spec, len(linears)),
            features_record(spec, True), features_record(spec, False), sketcher_extras(model, spec))


def test_every_registered_kind_loads_and_declares_its_name():
    assert set(SKETCH_KINDS.names) >= {"kronecker", "srht", "rademacher"}
    for name in SKETCH_KINDS.names:
        assert issubclass(SKETCH_KINDS.load(name), SketchKind), SKETCH_KINDS.targets()[name]
        assert kind_named(name).name == name


def test_an_unknown_kind_is_refused_when_the_job_is_checked_naming_the_known_ones():
    spec = SketchSpec(kind="nope")  # the spec holds a name; the registry sits above it
    with pytest.raises(SpecError, match=r"sketch\.kind: unknown sketch kind 'nope'") as err:
        check_sketch(spec)
    assert f"(known: {', '.join(SKETCH_KINDS.names)})" in str(err.value)


def test_check_names_refuses_an_unknown_kind_on_a_loaded_job(make_job):
    from iprox_ray.driver.run import check_names
    from iprox_ray.spec import load_job

    job = load_job(make_job(), ['sketch.kind="nope"'])
    with pytest.raises(SpecError, match="unknown sketch kind 'nope'"):
        check_names(job)


def test_the_built_in_kinds_take_their_default_settings():
    for name in ("kronecker", "srht", "rademacher"):
        assert check_sketch(SketchSpec(kind=name)).name == name
    with pytest.raises(SpecError, match="reproject_dim applies to kind = 'kronecker'"):
        check_sketch(SketchSpec(kind="rademacher", reproject_dim=64))
    check_sketch(SketchSpec(kind="srht", reproject_dim=0))  # zero asks for nothing


def test_a_registered_toy_kind_sketches_and_fills_the_store_records(model, toy):
    spec = SketchSpec(kind="toy", modules=PATTERNS, vectors=[], biases=False, dim=16, seed=5)
    assert check_sketch(spec).name == "toy" and isinstance(kind_for(spec), ToyKind)
    sketcher, rows = _sketch(model, spec)
    n = len(sketched_modules(model, spec))
    width = sketch_dim(spec, n, vectors_record(model, spec))
    assert width == 32 and rows.shape == (3, width) and torch.isfinite(rows).all()
    assert projection_record(spec, n) == {"kind": "toy", "seed": 5, "dim": 32, "mask_fraction": 1.0, "toy": True}
    assert module_record(spec, Q, 32, 32) == [Q, 32, 32, 1024]  # inherited from the dense kind
    assert features_record(spec.model_copy(update={"optimizer": "less"}), True)["approximation"] == "exact"
    # The same sketch as the built-in SRHT kind at the toy's width: the toy only reshaped the records.
    _, srht = _sketch(model, spec.model_copy(update={"kind": "srht", "dim": 32}))
    torch.testing.assert_close(rows, srht, rtol=0, atol=0)
    assert describe_settings({"kind": "toy", "dim": 16}) == "toy dim 2x16"


def test_a_stored_kind_this_install_lacks_still_describes():
    assert describe_settings({"kind": "gone", "dim": 8, "proj_in": 4}) == "gone dim 8"
    assert describe_settings({}) == "? dim None"  # as the report printed before the registry


def test_the_kinds_describe_their_shape_out_by_in():
    assert describe_settings(SketchSpec(proj_in=4, proj_out=3).model_dump()) == "kronecker 3x4"
    assert describe_settings(SketchSpec(kind="srht", dim=64).model_dump()) == "srht dim 64"


# The records below are literal: the values the factory's name switches produced before the kinds
# moved into classes (checked against that code on the same model and specs).

def test_kronecker_records_are_as_before(model):
    spec = SketchSpec(modules=PATTERNS, proj_in=4, proj_out=3, seed=7, reproject_dim=64)
    assert _records(model, spec) == (
        {"kind": "kronecker", "distribution": "gaussian", "seed": 7, "proj_in": 4, "proj_out": 3,
         "reproject_dim": 64},
        [Q, 32, 32, 3, 4], [DOWN, 32, 64, 3, 4], 64 + 160, 64,
        {"optimizer": "none"}, {"optimizer": "none"}, (128.0, 0))
    wide = spec.model_copy(update={"reproject_dim": 4096, "projection": "rademacher", "optimizer": "less"})
    assert _records(model, wide) == (
        {"kind": "kronecker", "distribution": "rademacher", "seed": 7, "proj_in": 4, "proj_out": 3,
         "reproject_dim": 0},  # 4096 is wider than the 96-column block: kept as it is
        [Q, 32, 32, 3, 4], [DOWN, 32, 64, 3, 4], 96 + 160, 0,
        {"optimizer": "less", "approximation": "rank1-factored"}, {"optimizer": "none"}, (128.0, 0))
    exact = wide.model_copy(update={"adam_exact": True})
    assert features_record(exact, True) == {"optimizer": "less", "approximation": "exact"}


def test_dense_records_are_as_before(model):
    spec = SketchSpec(modules=PATTERNS, kind="srht", dim=48, mask_fraction=0.5, seed=7, optimizer="less")
    assert _records(model, spec) == (
        {"kind": "srht", "seed": 7, "dim": 48, "mask_fraction": 0.5},
        [Q, 32, 32, 512], [DOWN, 32, 64, 1024], 48 + 160, 0,
        {"optimizer": "less", "approximation": "exact"}, {"optimizer": "none"}, (0.0, 2 * 4 * 1024 * 64))
    rad = SketchSpec(modules=PATTERNS, kind="rademacher", dim=40, seed=2)
    assert _records(model, rad)[0] == {"kind": "rademacher", "seed": 2, "dim": 40, "mask_fraction": 1.0}
    assert _records(model, rad)[7] == (0.0, 2 * 4 * 2048 * 64)


def sketcher_vectors(spec):
    """The vector block make_sketcher gives a sketcher (no Adam state)."""
    def vectors(m, linears):
        return VectorBlock(m, spec.vectors, linears, spec.biases, spec.vector_dim, spec.seed, None)
    return vectors


def test_make_sketcher_builds_what_the_name_switch_built(model):
    """The kinds construct the sketchers the factory constructed itself, with the same arguments:
    the same sketch, bit for bit, and the same sketch again on a second build."""
    ids, attn, trainable = _batch()
    kron = SketchSpec(modules=PATTERNS, proj_in=4, proj_out=3, seed=7, reproject_dim=64)
    sketcher, rows = _sketch(model, kron)
    assert type(sketcher) is KroneckerSketcher and rows.shape == (3, 224)
    direct = KroneckerSketcher(copy.deepcopy(model), PATTERNS, 4, 3, 7, "gaussian", vectors=sketcher_vectors(kron),
                               reproject=DenseProjector(7, 64, "srht"))
    torch.testing.assert_close(rows, direct.sketch(ids, attn, trainable).sketch, rtol=0, atol=0)
    direct.close()
    torch.testing.assert_close(rows, _sketch(model, kron)[1], rtol=0, atol=0)

    srht = SketchSpec(modules=PATTERNS, kind="srht", dim=48, mask_fraction=0.5, seed=7)
    sketcher, rows = _sketch(model, srht)
    assert type(sketcher) is DenseSketcher and sketcher.projector.kind == "srht" and rows.shape == (3, 208)
    direct = DenseSketcher(copy.deepcopy(model), PATTERNS, 48, 7, "srht", 0.5, vectors=sketcher_vectors(srht))
    torch.testing.assert_close(rows, direct.sketch(ids, attn, trainable).sketch, rtol=0, atol=0)
    direct.close()
    torch.testing.assert_close(rows, _sketch(model, srht)[1], rtol=0, atol=0)

