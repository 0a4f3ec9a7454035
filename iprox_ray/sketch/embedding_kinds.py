"""The embedding kinds by name (embedding_kind.py says what one is). Adding one: its module with an
`EmbeddingKind` subclass, and its line here; a scoring method names the kinds it reads in
`Needs.embeddings` / `Needs.target_embeddings`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iprox_ray.registry import Registry

if TYPE_CHECKING:
    from iprox_ray.sketch.embedding_kind import EmbeddingKind

EMBEDDING_KINDS: Registry[type[EmbeddingKind]] = Registry("embedding kind", {
    "jvp": "iprox_ray.sketch.jvp:JvpKind",
    "rds": "iprox_ray.sketch.pooled:PooledKind",
})


def embedding_kind(name: str) -> EmbeddingKind:
    """The kind registered under `name`; an unknown name raises UnknownName listing the known ones."""
    kind = EMBEDDING_KINDS.load(name)()
    assert kind.name == name, f"{EMBEDDING_KINDS.targets()[name]} declares name {kind.name!r}"
    return kind
