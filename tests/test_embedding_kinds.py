"""The embedding-kind registry: every name loads, an unknown one is refused naming the known ones,
jvp and rds record exactly what the stage hard-coded per name before, and a kind registered from
outside the package (a toy) runs through the embed stage with no line of the stage changed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iprox_ray.execution.context import RunContext
from iprox_ray.execution.planning import plan_workers
from iprox_ray.methods import METHOD_NAMES, method_named
from iprox_ray.models.loading import load_config, random_init, save_model
from iprox_ray.registry import UnknownName
from iprox_ray.sketch.embedding_kind import EmbeddingKind
from iprox_ray.sketch.embedding_kinds import EMBEDDING_KINDS, embedding_kind
from iprox_ray.spec import DataSpec, load_job
from iprox_ray.stages.embed import embedding_dim, embedding_fingerprint, embedding_settings, run_embed
from iprox_ray.store.embedding_store import EMPTY, OK, EmbeddingStore
from iprox_ray.store.layout import POOL, RunLayout
from iprox_ray.tasks.embed_task import make_embedder
from iprox_ray.tasks.inputs import manifest_for
from iprox_ray.tasks.model_ref import ModelRef

TOY_DIM = 8


class ToyEmbedder:
    """Mean of the input embeddings over real tokens, first TOY_DIM coordinates."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.dim = TOY_DIM

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            vectors = self.model.get_input_embeddings()(input_ids).float()
        weights = attention_mask.float() / attention_mask.sum(1, keepdim=True).clamp(min=1)
        return (vectors * weights[..., None]).sum(1)[:, :TOY_DIM]

    def close(self) -> None:
        pass


class ToyKind(EmbeddingKind):
    name = "toy"
    needs_eager_attention = True  # so the test sees the worker honour the flag (the default is sdpa)
    attn_seen: list[str] = []  # the attention each model handed to make() was loaded with

    def make(self, model, spec):
        ToyKind.attn_seen.append(model.config._attn_implementation)
        return ToyEmbedder(model)

    def settings(self, spec):
        return {"pooling": "mean-input-embedding", "dim": TOY_DIM}

    def fingerprint_keys(self):
        return ("scoring.embed.seed",)

    def dim(self, spec, meta_model):
        return TOY_DIM


@pytest.fixture
def toy_kind():
    # By this module's own name: pytest imports it as `test_embedding_kinds`, and a second import
    # as `tests.test_embedding_kinds` would be a second ToyKind class with its own attn_seen.
    EMBEDDING_KINDS.add("toy", f"{__name__}:ToyKind")
    ToyKind.attn_seen.clear()
    yield
    EMBEDDING_KINDS.remove("toy")
    assert "toy" not in EMBEDDING_KINDS


class _NoMeta:
    """A model reference whose meta model must not be built (a kind whose width is a setting)."""

    def meta(self):
        raise AssertionError("the meta model was built")


@pytest.mark.parametrize("name", EMBEDDING_KINDS.names)
def test_every_registered_kind_loads_under_its_name(name):
    kind = embedding_kind(name)
    assert isinstance(kind, EmbeddingKind) and kind.name == name


def test_every_kind_a_method_reads_is_registered():
    for name in METHOD_NAMES:
        needs = method_named(name).needs
        assert set(needs.embeddings) | set(needs.target_embeddings) <= set(EMBEDDING_KINDS.names), name


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(UnknownName, match=r"unknown embedding kind 'nope' \(known: jvp, rds\)"):
        embedding_kind("nope")
    with pytest.raises(UnknownName, match="unknown embedding kind 'nope'"):
        make_embedder("nope", torch.nn.Linear(1, 1), None)


def test_jvp_and_rds_record_what_the_stage_hard_coded_before(make_job, tiny_model_dir):
    job = load_job(make_job())
    ctx, spec = SimpleNamespace(job=job), job.scoring.embed
    sections = ["run.seed", "model", "warmup", "proxy", *DataSpec.encoding_keys(True)]
    # The literal values of the switch this registry replaced (stages/embed.py's JVP_SETTINGS):
    # the store refuses a group whose settings differ, and the fingerprint decides a redo.
    old_jvp = ("blocks", "block_patterns", "tangents", "readout", "final_norm", "dim", "seed")
    assert embedding_settings(ctx, "jvp") == {k: getattr(spec, k) for k in old_jvp}
    assert list(embedding_settings(ctx, "jvp")) == list(old_jvp)
    assert embedding_settings(ctx, "rds") == {"pooling": "position-weighted-mean"}
    assert embedding_kind("jvp").fingerprint_keys() == tuple(f"scoring.embed.{k}" for k in old_jvp)
    assert embedding_kind("rds").fingerprint_keys() == ()
    assert embedding_fingerprint(ctx, "jvp", POOL) == job.stage_fingerprint(
        *sections, *(f"scoring.embed.{k}" for k in old_jvp))
    assert embedding_fingerprint(ctx, "rds", POOL) == job.stage_fingerprint(*sections)
    assert embedding_kind("jvp").needs_eager_attention and not embedding_kind("rds").needs_eager_attention
    assert embedding_dim(ctx, "jvp", _NoMeta()) == spec.dim
    assert embedding_dim(ctx, "rds", ModelRef("hf", tiny_model_dir)) == load_config(tiny_model_dir).hidden_size


def test_a_registered_toy_kind_runs_through_the_embed_stage(toy_kind, make_job, tiny_model_dir, tmp_path):
    job = load_job(make_job(n_pool=40))
    weights = tmp_path / "weights"
    save_model(random_init(load_config(tiny_model_dir), seed=0), weights)
    ref = ModelRef("hf", weights)  # sdpa attention unless the kind asks for eager
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    ctx = RunContext(job, layout, quiet=True)
    manifest = manifest_for(ctx, POOL)

    run_embed(ctx, [("toy", POOL)], ref, plan_workers("inline", "no", None, 1, 1, 0))

    assert EMBEDDING_KINDS.load("toy") is ToyKind and ToyKind.attn_seen == ["eager"]
    store = EmbeddingStore.open(layout.store, "toy", POOL, mode="r")
    attrs = dict(store.group.attrs)
    assert store.dim == TOY_DIM and attrs["settings"] == {"pooling": "mean-input-embedding", "dim": TOY_DIM}
    assert attrs["fingerprint"] == embedding_fingerprint(ctx, "toy", POOL) != embedding_fingerprint(ctx, "rds", POOL)
    written = store.read("written")  # shard i owns rows [i*S, (i+1)*S): a short shard leaves EMPTY rows
    assert (written == OK).sum() == manifest.n_rows and set(written.tolist()) == {EMPTY, OK}
    vectors = store.read("embedding")[written == OK]
    assert vectors.shape == (manifest.n_rows, TOY_DIM) and np.isfinite(vectors).all()
    assert (vectors != 0).any(axis=1).all()  # every row was written, none left at the fill value
