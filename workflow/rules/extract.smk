# Extraction, per checkpoint, of only what the enabled metrics need.
# Weights need no model (numpy, lazy reads); activations and gradients share one model load.


rule extract_weights:
    input:
        "results/{run}/checkpoints/step{step}.safetensors",
    output:
        "results/{run}/extract/weights/step{step}.safetensors",
    log:
        "results/{run}/logs/extract_weights/step{step}.log",
    params:
        patterns=lambda w: ckcfg.targets(config, w.run)["weights"],
    script:
        "../../scripts/extract_weights.py"


# Three rules over one script, so that each run extracts exactly the kinds it needs in one job.
rule extract_activations_gradients:
    input:
        "results/{run}/checkpoints/step{step}.safetensors",
    output:
        activations="results/{run}/extract/activations/step{step}.safetensors",
        gradients="results/{run}/extract/gradients/step{step}.safetensors",
    log:
        "results/{run}/logs/extract_model/step{step}.log",
    wildcard_constraints:
        run=_alternatives(runs_needing(["activations", "gradients"])),
    resources:
        gpu=1,
    params:
        targets=lambda w: canonical(ckcfg.targets(config, w.run)),
        probe=lambda w: canonical(ckcfg.probe(config, w.run)),
    script:
        "../../scripts/extract_model.py"


use rule extract_activations_gradients as extract_activations with:
    output:
        activations="results/{run}/extract/activations/step{step}.safetensors",
    wildcard_constraints:
        run=_alternatives(runs_needing(["activations"])),


use rule extract_activations_gradients as extract_gradients with:
    output:
        gradients="results/{run}/extract/gradients/step{step}.safetensors",
    wildcard_constraints:
        run=_alternatives(runs_needing(["gradients"])),
