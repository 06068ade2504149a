"""The plan of the workflow's jobs (ckptlens.plan) and the results layout (ckptlens.store.layout),
without Snakemake: which files each job reads and writes, for small configs built here."""

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ckptlens import config as ckcfg
from ckptlens import results
from ckptlens.plan import Plan, alternatives, canonical, identifier
from ckptlens.store import layout

REPO = Path(__file__).resolve().parents[1]

#: a two-layer MLP saved at steps 0, 20, 40, 60, two checkpoints per chunk: chunks [0, 20], [40, 60]
MLP = {
    "source": {
        "type": "train_mlp",
        "model": {"hidden": 8, "depth": 2},
        "train": {"steps": 60, "save_every": 20, "batch_size": 32, "lr": 0.003, "seed": 0, "data_seed": 1},
    },
    "targets": {"weights": ["blocks.*.linear"], "activations": ["blocks.*"]},
    "checkpoints_per_job": 2,
}
#: one metric per reference: none, previous and previous2, initial, final
METRICS = {
    "frobenius_norm": {},
    "update_cosine": {},
    "update_norm_initial": {},
    "cka_to_final": {},
    "svcca_to_final": {},
}


def mlp(data_seed=1, **train):
    run = copy.deepcopy(MLP)
    run["source"]["train"].update(data_seed=data_seed, **train)
    return run


def plan_of(cfg) -> Plan:
    ckcfg.validate(cfg)
    return Plan(cfg)


def checkpoint(run, chunk, step):
    return f"results/runs/{run}/checkpoints/chunk{chunk}/step{step}.safetensors"


# --------------------------------------------------------------------------- layout
def test_layout_paths():
    assert layout.step_file("r", layout.CHECKPOINTS, 1, 40) == checkpoint("r", 1, 40)
    assert layout.chunk_dir("{run}", layout.extraction("activations"), "{chunk}") == (
        "results/runs/{run}/extract/activations/chunk{chunk}"
    )
    assert layout.metric_part("r", "gradient", 0) == "results/runs/r/metrics/gradient/part0.csv"
    assert layout.run_log("r", "extract_model/chunk3") == "results/runs/r/logs/extract_model/chunk3.log"
    assert layout.run_benchmark("r", "extract_model/chunk3") == "results/runs/r/benchmarks/extract_model/chunk3.tsv"
    assert layout.task_vector_benchmark("tv", "task_vectors") == "results/task_vectors/tv/benchmarks/task_vectors.tsv"
    assert layout.figure_benchmark("f") == "results/figures/benchmarks/f.tsv"
    assert layout.sample_file("tv", 2) == "results/task_vectors/tv/samples/sample2.safetensors"
    assert layout.metrics_table("*", "elsewhere") == "elsewhere/runs/*/metrics.parquet"
    # a hub download sits beside the run's chunk folders, not in them
    assert layout.download_dir(checkpoint("r", 0, 8)) == Path("results/runs/r/downloads/step8")


def test_notebook_loaders_read_the_layout(tmp_path):
    row = {"run": "a", "step": 0, "layer": "l", "metric": "m", "value": 1.0}
    for run in ("a", "b"):
        for path in (layout.metrics_table(run, tmp_path), layout.analysis_table(run, "dynamics", tmp_path)):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{**row, "run": run}]).to_parquet(layout.metrics_table(run, tmp_path))
        pd.DataFrame([{**row, "run": run}]).to_csv(layout.analysis_table(run, "dynamics", tmp_path), index=False)
    for name in ("pca", "pca_loadings", "correlation"):
        pd.DataFrame([row]).to_csv(layout.analysis_table("a", name, tmp_path), index=False)
    assert sorted(results.load_metrics(tmp_path)["run"]) == ["a", "b"]
    assert list(results.load_metrics(tmp_path, run="b")["run"]) == ["b"]
    assert sorted(results.load_dynamics(tmp_path)["run"]) == ["a", "b"]
    assert sorted(results.load_analysis(tmp_path, run="a")) == ["correlation", "dynamics", "pca", "pca_loadings"]
    assert results.run_dir(tmp_path, "a") == tmp_path / "runs" / "a"
    assert results.load_task_vectors(tmp_path).empty  # no task-vector sets (the demo's config)
    with pytest.raises(FileNotFoundError, match="task_vectors"):
        results.load_task_vectors(tmp_path, name="none")


# --------------------------------------------------------------------------- params text
def test_params_helpers():
    assert canonical({"b": 1, "a": [2]}) == canonical({"a": [2], "b": 1}) == '{"a": [2], "b": 1}'
    assert identifier("pythia-70m.attn_mlp") == "pythia_70m_attn_mlp"
    assert alternatives(["a.b", "c"]) == r"a\.b|c"
    assert alternatives([]) == "(?!x)x"  # matches nothing


# --------------------------------------------------------------------------- chunks and metric inputs
def test_chunks_and_their_step_files():
    plan = plan_of({"runs": {"a": mlp()}, "metrics": METRICS})
    assert plan.steps == {"a": [0, 20, 40, 60]}
    assert plan.chunks == {"a": [[0, 20], [40, 60]]}
    assert plan.parts == {"a": [[0, 1]]}  # metric jobs carry at least 32 checkpoints
    assert plan.chunk_steps("a", "1") == [40, 60]
    assert plan.chunk_step_files("a", layout.CHECKPOINTS, 1) == {40: checkpoint("a", 1, 40), 60: checkpoint("a", 1, 60)}
    assert plan.step_file("a", layout.extraction("activations"), 20) == (
        "results/runs/a/extract/activations/chunk0/step20.safetensors"
    )
    assert plan.model_extractions("a") == ["activations"]  # svcca_to_final's; cka_to_final keeps terms
    assert plan.family_tables("a") == [
        f"results/runs/a/metrics/{fam}/part0.csv"
        for fam in ("activation_similarity", "similarity_to_final", "weight_spectrum", "weight_update")
    ]


def test_metric_step_inputs_take_only_the_references_the_family_needs():
    plan = plan_of({"runs": {"a": mlp()}, "metrics": METRICS})
    # no reference: each step's own checkpoint (weights are read from the checkpoints, not copied)
    assert plan.metric_step_inputs("a", "weight_spectrum", 0) == {
        0: {"current": checkpoint("a", 0, 0)},
        20: {"current": checkpoint("a", 0, 20)},
        40: {"current": checkpoint("a", 1, 40)},
        60: {"current": checkpoint("a", 1, 60)},
    }
    # previous and previous2 where the step has them, the initial step always
    assert plan.metric_step_inputs("a", "weight_update", "0") == {
        0: {"current": checkpoint("a", 0, 0), "initial": checkpoint("a", 0, 0)},
        20: {"current": checkpoint("a", 0, 20), "initial": checkpoint("a", 0, 0), "previous": checkpoint("a", 0, 0)},
        40: {
            "current": checkpoint("a", 1, 40),
            "initial": checkpoint("a", 0, 0),
            "previous": checkpoint("a", 0, 20),
            "previous2": checkpoint("a", 0, 0),
        },
        60: {
            "current": checkpoint("a", 1, 60),
            "initial": checkpoint("a", 0, 0),
            "previous": checkpoint("a", 1, 40),
            "previous2": checkpoint("a", 0, 20),
        },
    }
    # CKA to the final checkpoint: each step's similarity terms alone (the extraction compared the
    # step's activations with the final checkpoint's, which is its input)
    sims = plan.metric_step_inputs("a", "similarity_to_final", 0)
    assert sims[20] == {"current": "results/runs/a/extract/similarity_terms/chunk0/step20.safetensors"}
    assert plan.similarity_extraction("a")
    assert plan.similarity_reference("a") == checkpoint("a", 1, 60)
    assert plan.similarity_reference_dir("a") == "results/runs/a/checkpoints/chunk1"
    assert plan.model_reference("a") is None and plan.model_reference_inputs("a") == {}
    # with_model: the terms come from the model-extraction jobs, which then read the final checkpoint
    run = {**mlp(), "similarity_terms": "with_model"}
    merged = plan_of({"runs": {"a": run}, "metrics": METRICS})
    assert not merged.similarity_extraction("a") and merged.model_extractions("a") == [
        "activations",
        "similarity_terms",
    ]
    assert merged.model_reference("a") == checkpoint("a", 1, 60)
    assert merged.model_reference_inputs("a") == {"reference": "results/runs/a/checkpoints/chunk1"}
    assert merged.metric_step_inputs("a", "similarity_to_final", 0) == sims
    assert list(plan.family_metrics("a", "weight_update")) == ["update_cosine", "update_norm_initial"]
    assert plan.family_layers("a", "weight_update") is None


def test_a_metric_part_reads_the_chunks_of_its_references():
    """81 steps in chunks of 32: one metric job per chunk, reading the chunks its references are in."""
    run = mlp(steps=80, save_every=1)
    run["checkpoints_per_job"] = 32
    plan = plan_of({"runs": {"b": run}, "metrics": METRICS})
    assert plan.parts == {"b": [[0], [1], [2]]}
    assert plan.part_steps("b", 2) == list(range(64, 81))
    chunks = "results/runs/b/extract/{}/chunk{}".format
    checkpoints = "results/runs/b/checkpoints/chunk{}".format
    assert plan.metric_inputs("b", "weight_spectrum", 1) == [checkpoints(1)]
    # step 32's previous steps (31, 30) and the initial step are in chunk 0
    assert plan.metric_inputs("b", "weight_update", 1) == [checkpoints(0), checkpoints(1)]
    assert plan.family_weight_patterns("b", "weight_update") == run["targets"]["weights"]
    assert plan.family_weight_patterns("b", "activation_similarity") is None
    # the final step is in chunk 2; CKA to it reads only the part's own terms
    assert plan.metric_inputs("b", "activation_similarity", 0) == [chunks("activations", 0), chunks("activations", 2)]
    assert plan.metric_inputs("b", "similarity_to_final", 0) == [chunks("similarity_terms", 0)]
    assert plan.family_tables("b")[:3] == [
        f"results/runs/b/metrics/activation_similarity/part{p}.csv" for p in range(3)
    ]


# --------------------------------------------------------------------------- sources and final outputs
def test_final_outputs_of_the_default_config():
    plan = plan_of(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    d = "results/runs/demo"
    assert plan.final_outputs() == [
        f"{d}/metrics.parquet",
        f"{d}/analysis/pca.csv",
        f"{d}/analysis/correlation.csv",
        f"{d}/analysis/dynamics.csv",
        f"{d}/plots/trajectories",
        f"{d}/plots/pca.png",
        f"{d}/plots/correlation.png",
        f"{d}/plots/training.png",
    ]
    pages = ("pca", "correlation", "dynamics", "metrics", "explorer")
    study = ("study.html", "study_landing.html", "explorer.html")
    assert plan.report_outputs() == [f"{d}/report/{t}.html" for t in pages] + [f"results/figures/{p}" for p in study]
    assert plan.analysis_inputs("demo") == {
        "table": f"{d}/metrics.parquet",
        "missing": f"{d}/missing_steps.csv",
        "log": f"{d}/train_log.csv",
    }
    assert plan.dynamics_inputs("demo") == {"table": f"{d}/metrics.parquet", "log": f"{d}/train_log.csv"}


def test_trained_fetched_and_table_runs(tmp_path):
    table = tmp_path / "metrics.csv"
    pd.DataFrame(
        [{"run": "pub", "step": s, "layer": "l0", "metric": "weight_magnitudes", "value": 1.0} for s in (0, 10)]
    ).to_csv(table, index=False)
    hub = {
        "source": {"type": "huggingface", "model": "EleutherAI/pythia-70m-deduped", "steps": [0, 1, 2, 4]},
        "checkpoints_per_job": 2,
        "targets": {"weights": ["gpt_neox.layers.*.attention.dense"]},
    }
    cfg = {
        "runs": {"own": mlp(), "hub": hub, "pub": {"source": {"type": "table", "path": str(table)}}},
        "metrics": {"frobenius_norm": {}},
    }
    plan = plan_of(cfg)
    assert (plan.trained_runs, plan.fetched_runs, plan.table_runs) == (["own"], ["hub"], ["pub"])
    assert plan.computed_runs == ["own", "hub"] and list(plan.chunks) == ["own", "hub"]
    assert plan.temporary_runs == ["hub"]  # delete_after defaults to true
    # the weights are read from checkpoints deleted once read: one metric job per chunk, so that
    # a chunk's checkpoints go once its own jobs ran (a part of 32 would keep 16 chunks on disk)
    assert plan.parts["hub"] == [[0], [1]] and plan.metric_inputs("hub", "weight_spectrum", 1) == [
        "results/runs/hub/checkpoints/chunk1"
    ]
    kept = {**cfg, "runs": {**cfg["runs"], "hub": {**hub, "source": {**hub["source"], "delete_after": False}}}}
    assert plan_of(kept).parts["hub"] == [[0, 1]]
    assert plan.checkpoint_digests("hub") == [
        "results/runs/hub/digests/chunk0.txt",
        "results/runs/hub/digests/chunk1.txt",
    ]
    assert plan.source_inputs("hub", 1) == []  # downloads: no local files
    assert {s: p["revision"] for s, p in plan.source_params("hub", 1).items()} == {2: "step2", 4: "step4"}
    out = plan.final_outputs()
    assert out[0] == "results/runs/hub/identical_steps.csv"
    assert "results/runs/own/plots/training.png" in out
    assert not [p for p in out if "training.png" in p and "/own/" not in p]
    assert plan.analysis_inputs("pub") == {"table": "results/runs/pub/metrics.parquet"}
    assert plan.dynamics_inputs("hub") == {"table": "results/runs/hub/metrics.parquet"}
    assert plan.enabled_metrics["pub"] == {} and plan.run_families["pub"] == {}


# --------------------------------------------------------------------------- task vectors and figures
def test_catalogue_task_vectors_and_figures():
    plan = plan_of(yaml.safe_load((REPO / "tests" / "configs" / "catalogue.yaml").read_text()))
    out = plan.final_outputs()
    assert out[-7:] == [
        "results/task_vectors/mlp_seeds/task_vectors.csv",
        "results/task_vectors/mlp_seeds/task_vectors.png",
        "results/figures/tf_circuits.png",
        "results/figures/tf_rotary.png",
        "results/figures/tf_linearity.png",
        "results/figures/mlp_gradients.png",
        "results/figures/mlp_seeds_cka.png",
    ]
    assert len(out) == 4 * 8 + 7 and plan.tv_sample == {}
    assert plan.task_vector_files("mlp_seeds") == {
        "base": checkpoint("mlp_a", 0, 0),
        "mlp_a": checkpoint("mlp_a", 0, 60),
        "mlp_b": checkpoint("mlp_b", 0, 60),
        "mlp_c": checkpoint("mlp_c", 0, 60),
    }
    assert plan.task_vector_dirs("mlp_seeds") == [
        f"results/runs/{r}/checkpoints/chunk0" for r in ("mlp_a", "mlp_b", "mlp_c")
    ]
    # a comparison reads each run's table and dynamics; the induction figure the training log too
    assert plan.figure_inputs("mlp_seeds_cka") == {
        f"{what}:{run}": f"results/runs/{run}/{path}"
        for run in ("mlp_a", "mlp_b", "mlp_c")
        for what, path in (("table", "metrics.parquet"), ("dynamics", "analysis/dynamics.csv"))
    }
    assert plan.figure_inputs("tf_circuits")["log:tf"] == "results/runs/tf/train_log.csv"
    assert list(plan.figure_descriptions("mlp_seeds_cka")) == ["cka_to_final", "frobenius_norm"]
    # cross-layer activation metrics read the consecutive-layer chain only
    assert plan.family_layers("tf", "activation_pairs") == ["blocks.*"]


def sampled_config(**tv):
    runs = {f"mlp_{s}": mlp(data_seed=s) for s in (1, 2, 3)}
    sample = {"n_samples": 2, "seed": 4, "evaluate": {"task": "minilm_sentiment", "tokenizer": "tok"}}
    task_vectors = {"seeds": {"base_run": "mlp_1", "base_step": 0, "runs": list(runs), "sample": sample, **tv}}
    return {"runs": runs, "metrics": {"frobenius_norm": {}}, "task_vectors": task_vectors}


def test_sampled_task_vectors_checkpoints_and_evaluation_rows():
    plan = plan_of(sampled_config())
    assert plan.tv_evaluated == ["seeds"]
    assert plan.tv_checkpoints("seeds") == {
        "base": checkpoint("mlp_1", 0, 0),
        "runs": {r: checkpoint(r, 1, 60) for r in ("mlp_1", "mlp_2", "mlp_3")},
        # every run is checked to start from the base; the base run's own step 0 is the base itself
        "starts": {r: checkpoint(r, 0, 0) for r in ("mlp_2", "mlp_3")},
    }
    samples = "results/task_vectors/seeds/samples"
    assert plan.tv_sample_files("seeds") == {
        "mean": f"{samples}/mean.safetensors",
        "samples": [f"{samples}/sample0.safetensors", f"{samples}/sample1.safetensors"],
    }
    assert "evaluate" not in plan.tv_sample_params("seeds") and plan.tv_sample_params("seeds")["n_samples"] == 2
    rows = plan.tv_evaluation_rows("seeds")
    assert [(r["kind"], r["name"]) for r in rows] == [
        ("base", "mlp_1@step0"),
        ("finetuned", "mlp_1@step60"),
        ("finetuned", "mlp_2@step60"),
        ("finetuned", "mlp_3@step60"),
        ("mean", "mean"),
        ("sample", "sample0"),
        ("sample", "sample1"),
    ]
    assert rows[0]["path"] == checkpoint("mlp_1", 0, 0) and rows[-1]["path"] == f"{samples}/sample1.safetensors"
    dirs = [f"results/runs/{r}/checkpoints/chunk{c}" for r in ("mlp_1", "mlp_2", "mlp_3") for c in (0, 1)]
    assert plan.tv_checkpoint_dirs("seeds") == dirs
    assert plan.evaluation_inputs("seeds") == dirs + [
        f"{samples}/mean.safetensors",
        *plan.tv_sample_files("seeds")["samples"],
    ]
    assert plan.final_outputs()[-5:] == [
        "results/task_vectors/seeds/task_vectors.csv",
        "results/task_vectors/seeds/task_vectors.png",
        f"{samples}/components.csv",
        "results/task_vectors/seeds/samples.csv",
        "results/task_vectors/seeds/samples.png",
    ]
    json.loads(canonical(plan.tv_checkpoints("seeds")))  # a param: JSON text


def test_task_vectors_at_another_step_and_base():
    plan = plan_of(sampled_config(step=40, base_step=20))
    c = plan.tv_checkpoints("seeds")
    assert c["base"] == checkpoint("mlp_1", 0, 20)
    assert c["runs"] == {r: checkpoint(r, 1, 40) for r in ("mlp_1", "mlp_2", "mlp_3")}
    assert plan.tv_evaluation_rows("seeds")[1]["name"] == "mlp_1@step40"
    assert plan.task_vector_files("seeds")["base"] == checkpoint("mlp_1", 0, 20)


# --------------------------------------------------------------------------- one more checkpoint
def test_one_more_checkpoint_changes_the_last_part_and_every_part_reading_the_final_step():
    """Parts of one chunk each (checkpoints_per_metric_job: 2): a step added at the end changes
    what the last part reads for metrics without a final reference, and every part's inputs for a
    family with a ``*_to_final`` metric (each part reads the final step)."""
    metrics = {"frobenius_norm": {}, "update_cosine": {}, "cka_to_final": {}, "svcca_to_final": {}}

    def inputs(steps):
        run = mlp(steps=steps)
        run["checkpoints_per_metric_job"] = 2
        plan = plan_of({"runs": {"m": run}, "metrics": metrics})
        return plan, {
            (family, part): plan.metric_step_inputs("m", family, part)
            for family in plan.run_families["m"]
            for part in range(len(plan.parts["m"]))
        }

    before_plan, before = inputs(60)  # steps 0..60: chunks [0, 20] [40, 60], one part each
    after_plan, after = inputs(80)  # step 80 added: chunk [80], a part of its own
    assert before_plan.parts["m"] == [[0], [1]] and after_plan.parts["m"] == [[0], [1], [2]]
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {("activation_similarity", 0), ("activation_similarity", 1)}  # svcca_to_final
    # cka_to_final's terms are compared with another checkpoint: every chunk's similarity
    # extraction reruns (its reference changed), its metric inputs keep their names
    assert before_plan.similarity_reference("m") != after_plan.similarity_reference("m")
    assert ("weight_update", 2) in after and ("weight_spectrum", 2) in after  # the new part: new jobs
    # the last chunk partial ([40]) and completed by the new step ([40, 60]): the last part of
    # every family changes, and the other parts of the family reading the final step
    _, partial = inputs(40)
    _, completed = inputs(60)
    changed = {key for key in partial if partial[key] != completed[key]}
    families = {family for family, _ in partial}
    assert changed == {(family, 1) for family in families} | {("activation_similarity", 0)}
