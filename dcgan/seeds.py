"""Several GAN seeds of chapter 02's models (issue 22: no verdict on a trained model rests on one seed).

A verdict on what "the" DCGAN of a data set does is a claim about the recipe, and one run of it is one
draw of its training noise. Chapters 02-07 therefore use every seed of their ``gan_seeds`` parameter:

* :func:`seed_runs`: chapter 02's preset per seed (``preset(name, profile).replace(seed=s)``), trained in
  one :func:`dcgan.train.train_many` call (or loaded from the run cache), each at its book snapshot
  (:func:`dcgan.gate.book_run`);
* :func:`gate_seeds`: the quality gate of each seed's model, recorded as ``<name>_s<seed>_gate`` (with its
  numbers), and ``<name>_gate`` 1 only when every seed passed; :mod:`dcgan.report` judges a claim on the
  model only when all of them passed;
* the numbers: :func:`dcgan.intervals.nested_bootstrap` and :func:`dcgan.intervals.record_over_seeds`.
"""

from __future__ import annotations

from typing import Sequence

from .config import preset
from .gate import book_run, quality_gate

__all__ = ["seed_name", "seed_runs", "gate_seeds"]


def seed_name(name: str, seed: int) -> str:
    """The name of one seed's model in the results registry: ``emoji-32_s1``."""
    return f"{name}_s{seed}"


def seed_runs(names: Sequence[str], profile: str, seeds: Sequence[int], progress: bool = False) -> dict[str, dict]:
    """{preset name: {seed: its run at the book snapshot}}: every preset x seed in one ``train_many`` call (one
    process per core while runs are still to train; cached runs are only loaded)."""
    from .train import train_many

    if not seeds:
        raise ValueError("give at least one GAN seed")
    keys = [(n, int(s)) for n in names for s in seeds]
    runs = train_many([preset(n, profile).replace(seed=s) for n, s in keys], progress=progress)
    out: dict[str, dict] = {n: {} for n in names}
    for (n, s), run in zip(keys, runs):
        out[n][s] = book_run(run, profile)
    return out


def gate_seeds(res, runs: dict, name: str, profile: str, *, curves: dict | None = None, references=None,
               seed: int = 0) -> dict:
    """The quality gate (:func:`dcgan.gate.quality_gate`) of each seed's model in ``runs`` ({seed: run}),
    recorded as ``<name>_s<seed>_gate``, and ``<name>_gate``: 1 only when every seed passed (a verdict on the
    model needs all of them; the note says how many passed). Returns {seed: GateResult}."""
    gates = {}
    for s, run in runs.items():
        gates[s] = quality_gate(run, name, profile, curve=(curves or {}).get(s), references=references, seed=seed)
        gates[s].record(res, seed_name(name, s))
    n_pass = sum(g.passed for g in gates.values())
    ds = next(iter(gates.values())).dataset if gates else ""
    res.record(f"{name}_gate", int(bool(gates) and n_pass == len(gates)), dataset=ds, claim="quality gate",
               note=f"passes in {n_pass} of {len(gates)} GAN seeds ({', '.join(map(str, gates))}); "
                    "a verdict on the model needs every seed to pass")
    return gates
