"""Fault injection, settings and inputs (issue 24): model files edited in place, missing or
unusable checkpoint and Adam-state paths, patterns that match nothing. Each is refused at the
settings check, before the warm-up, with one line naming the key; an edit anywhere in a weight
file refuses a resume.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from iprox_ray.models import fingerprint
from iprox_ray.models.fingerprint import FileHashCache, folder_fingerprint
from iprox_ray.spec.cluster import SlurmSpec

from conftest import REPO
from fault_tools import assert_clean_error, cli


@pytest.fixture
def job(make_job):
    return make_job(n_pool=48, rows_per_shard=8)


def _flip(path: Path, at: int) -> None:
    """Flip two bytes in place (size and name unchanged)."""
    with open(path, "r+b") as fh:
        fh.seek(at)
        data = fh.read(2)
        fh.seek(at)
        fh.write(bytes(b ^ 0xFF for b in data))


# ---------------------------------------------------------------- fingerprints


def test_two_flipped_bytes_anywhere_in_a_weight_file_change_the_fingerprint(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(os.urandom(8 << 20))
    (folder / "config.json").write_text("{}")
    before = folder_fingerprint(folder)
    _flip(folder / "model.safetensors", (2 << 20) + 12345)  # between the old sampled windows
    after = folder_fingerprint(folder)
    assert fingerprint.fingerprint_changes(before, after) == ["model.safetensors changed"]


def test_file_hashes_are_cached_by_path_size_mtime_and_inode(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        (folder / name).write_bytes(os.urandom(1 << 20))
        os.utime(folder / name, ns=(10**18, 10**18))  # written long ago: a hash the cache may keep
    reads: list[str] = []
    real = fingerprint.hashlib.file_digest
    monkeypatch.setattr(fingerprint.hashlib, "file_digest", lambda fh, algo: reads.append(fh.name) or real(fh, algo))
    first = FileHashCache()
    prints = folder_fingerprint(folder, first)
    assert len(reads) == 2
    reads.clear()
    assert folder_fingerprint(folder, FileHashCache(first.entries())) == prints
    assert reads == []  # a resume re-reads nothing unchanged
    _flip(folder / "a.safetensors", 10)  # the write gives the file a new mtime_ns: hashed again
    assert (folder / "a.safetensors").stat().st_mtime_ns != 10**18
    changed = folder_fingerprint(folder, FileHashCache(first.entries()))
    assert reads == [str(folder / "a.safetensors")]
    assert fingerprint.fingerprint_changes(prints, changed) == ["a.safetensors changed"]
    fresh = FileHashCache()
    folder_fingerprint(folder, fresh)
    assert len(fresh.entries()) == 1  # a.safetensors was written just now: a second write may share its mtime


def test_an_edited_checkpoint_model_refuses_the_resume(job, tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir)).save_pretrained(ckpt)
    run_dir = tmp_path / "run"
    sets = ["--set", 'proxy.method="none"', "--set", f'sketch.checkpoints=[{{model = "{ckpt}"}}]',
            "--set", "fidelity.enabled=false"]
    rc, out = cli("run", str(job), "--run-dir", str(run_dir), "-q", *sets)
    assert rc == 0, out[-3000:]
    weights = ckpt / "model.safetensors"
    _flip(weights, weights.stat().st_size // 2)
    rc, out = cli("run", str(job), "--run-dir", str(run_dir), "-q", *sets)
    assert_clean_error(rc, out, "the model files changed", "sketch.checkpoints[0].model: model.safetensors changed")


# ---------------------------------------------------------------- refused at the settings check


@pytest.mark.parametrize("case", ["optimizer-state", "checkpoint-folder", "checkpoint-optimizer",
                                  "no-adam-state", "modules"])
def test_unusable_sketch_settings_are_refused_before_the_warmup(job, tmp_path, case):
    if case == "optimizer-state":
        sets = ['sketch.optimizer="less"', f'sketch.optimizer_state="{tmp_path}/nowhere"']
        phrases = ["sketch.optimizer_state: no Adam state at", "nowhere"]
    elif case == "checkpoint-folder":
        sets = ['proxy.method="none"', f'sketch.checkpoints=[{{model = "{tmp_path}/ckpt-gone"}}]']
        phrases = [f"sketch.checkpoints[0].model folder {tmp_path}/ckpt-gone does not exist"]
    elif case == "checkpoint-optimizer":
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "config.json").write_text("{}")
        (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"x")
        sets = ['proxy.method="none"', 'sketch.optimizer="less"',
                f'sketch.checkpoints=[{{model = "{tmp_path}/ckpt", optimizer = "{tmp_path}/ckpt"}}]']
        phrases = ["sketch.checkpoints[0].optimizer: no Adam state at", "neither optimizer.json"]
    elif case == "no-adam-state":
        sets = ['sketch.optimizer="less"', "warmup.enabled=false"]
        phrases = ["sketch.optimizer = 'less' needs an Adam state", "sketch.optimizer_state"]
    else:
        sets = ['sketch.modules=["*.no_such_proj"]']
        phrases = ["sketch.modules: no linear module matches ['*.no_such_proj']"]
    args = ["run", str(job), "--run-dir", str(tmp_path / "run"), "-q"]
    for item in sets:
        args += ["--set", item]
    rc, out = cli(*args)
    assert_clean_error(rc, out, "error:", *phrases)
    assert not (tmp_path / "run" / "warmup").exists() and not (tmp_path / "run" / "stages").exists()


# ---------------------------------------------------------------- text that reaches a job script


INJECTION = 'partition = "gpu\\ntouch X\\n#"'  # the TOML of the issue: a newline ends the #SBATCH line


def test_a_cluster_profile_cannot_smuggle_a_command_into_the_job_script(job, tmp_path):
    profile = tmp_path / "evil.toml"
    profile.write_text(f'kind = "slurm"\n[slurm]\n{INJECTION}\n')
    rc, out = cli("submit", str(job), "--cluster", str(profile), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(rc, out, "cluster.slurm.partition: 'gpu\\ntouch X\\n#' holds a control character")
    assert len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "run").exists() and not (REPO / "X").exists()


@pytest.mark.parametrize("key,value", [("additional", {"qos\ntouch X": "high"}), ("additional", {"qos": "a\rb"}),
                                       ("additional", {"q os": "high"}), ("account", "acct\n#SBATCH --x"),
                                       ("folder", "logs\u2028x"), ("ray_node_ip", "10.0.0.1;touch X")])
def test_slurm_settings_refuse_control_characters_and_unquotable_keys(key, value):
    with pytest.raises(ValidationError):
        SlurmSpec(**{key: value})


@pytest.mark.parametrize("value", ["gpu", "a b", "$(touch X)", "x;y", "'q'", '"dq"', "back\\slash"])
def test_every_accepted_value_stays_on_its_sbatch_line(tmp_path, monkeypatch, value):
    """The script submitit generates from accepted settings has only #SBATCH lines in its parameter
    block, each value inside its own line (quoted by submitit)."""
    from iprox_ray.driver.submission import _executor

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit only checks that srun exists
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    slurm = SlurmSpec(partition=value, account=value, additional={"qos": value, "exclusive": True})
    script = _executor(slurm, tmp_path / "logs" / "%j", "iprox-t", 2)._executor._make_submission_file_text("CMD", "u")
    lines = script.splitlines()
    block = lines[lines.index("# Parameters") + 1 : lines.index("", lines.index("# Parameters"))]
    assert block and all(line.startswith("#SBATCH --") for line in block), script
    for flag in ("partition", "account", "qos"):
        assert sum(line.startswith(f"#SBATCH --{flag}=") for line in block) == 1, script
    assert "#SBATCH --exclusive" in block
