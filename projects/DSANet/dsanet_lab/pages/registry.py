"""Which table each marker of the pages names: the results files it is rendered from and its renderer.

A marker ``<!-- render: NAME -->`` on a page names one entry of :data:`TABLES`. Files are named from
``benchmarks/results/``; the caption lists the ``sources``; ``inputs`` are read too and passed after
them, without a caption line (the paper's quoted numbers, cited in the page's own text)."""
from typing import Callable, Dict, NamedTuple, Tuple

from . import benchmarks, gpu_memory, paper, pretraining, setups, shipped, sizing, studies

PAPER = "../paper_coco.json"  # benchmarks/paper_coco.json, from benchmarks/results/
# the trained model that ships in the package, beside its weights (dsanet.model_zoo), from benchmarks/results/
TRAINED = "../../projects/DSANet/dsanet/trained/Demo/dsanet_conf_synthetic_cpu/metrics.json"


class Table(NamedTuple):
    """A marker's files (named from benchmarks/results/) and the function that renders them."""
    sources: Tuple[str, ...]
    render: Callable[..., str]
    inputs: Tuple[str, ...] = ()


TABLES: Dict[str, Table] = {
    # the quick start (README.md): the shipped trained model, and the make targets a user runs first
    "trained_model": Table((TRAINED,), shipped.trained_model),
    "make_setup": Table(("demo/make_setup.json",), shipped.setup_run),
    "make_demo": Table(("demo/make_demo.json",), shipped.timed_run),
    # cost benchmarks (benchmarks/README.md)
    "attention": Table(("attention.json",), benchmarks.attention),
    "p3_budget": Table(("attention.json",), benchmarks.p3_budget),
    "speed_fp32": Table(("speed.json", "model_cost.json"), benchmarks.speed_fp32),
    "speed_bf16": Table(("speed.json",), benchmarks.speed_bf16),
    "speed_goals": Table(("speed.json",), benchmarks.speed_goals),
    "make_bench_summary": Table(("summary.json",), benchmarks.make_bench_summary),
    "profile_step": Table(("profile_step.json",), benchmarks.profile_step),
    "eval_memory": Table(("eval_memory.json",), benchmarks.eval_memory),
    # memory per GPU of the COCO recipes, estimated on a CPU (GPU.md, README.md)
    "gpu_memory": Table(("gpu_memory.json",), gpu_memory.memory_per_step),
    "gpu_memory_cards": Table(("gpu_memory.json",), gpu_memory.cards_per_recipe),
    # sizing the embedded benchmark, and the pretrained backbone
    "sizing_validation": Table(("sizing/bootstrap_sizes_train600.json", "sizing/bootstrap_sizes_train4000.json"),
                               sizing.sizing_validation),
    "sizing_training": Table(("sizing/training_size.json",), sizing.sizing_training),
    "pretrain_accuracy": Table(("pretrain_backbone/accuracy.json", "pretrain_backbone/pretrain_args.json"),
                               pretraining.pretrain_accuracy),
    # studies (tools/compare_variants.py, benchmarks/compare_studies.py)
    "study_first": Table(("study/results.json",), studies.study_ap50_75),
    "study_benchmark": Table(("study_benchmark/results.json",), studies.study),
    "study_benchmark_3seeds": Table(("study_benchmark/retinanet_dsanet_conf_3seeds/results.json",), studies.study),
    "study_bf16": Table(("study_bf16/results.json",), studies.study),
    "study_bf16_vs_fp32": Table(("study_bf16/bf16_vs_fp32.json",), studies.paired_studies),
    "study_fp32_control": Table(("study_bf16/fp32_control/results.json",
                                 "study_benchmark/retinanet_dsanet_conf_3seeds/results.json"), studies.retrained),
    "study_fcos": Table(("study_fcos/results.json",), studies.study),
    "study_finetune": Table(("study_finetune/results.json",), studies.study),
    "study_default": Table(("study_default/results.json",), studies.study),
    "study_small_custom": Table(("study_small_custom/results.json",), studies.study_recipes),
    # the headline study (README.md, STUDIES.md) and the noise model over setups
    "headline": Table(("study_headline/results.json",), setups.headline),
    "study_headline": Table(("study_headline/results.json",), studies.study),
    "study_headline_noise": Table(("study_headline/results.json",), setups.study_setup),
    "reproduction": Table(("study_headline/results.json",), setups.reproduction),
    "headline_reproduced": Table(("study_headline/results.json", "study_paper/results.json", "study_default/results.json"),
                                 setups.imported_and_reproduced),
    "seed_check": Table(("study_headline/seed_check.json",), setups.seed_check),
    "first_commit_rerun": Table(("study_benchmark/retinanet_dsanet_conf_3seeds/results.json",
                                 "study_headline/first_commit_rerun/results.json", "study_headline/results.json"),
                                setups.first_commit_rerun),
    "earlier_seeds": Table(("study_benchmark/retinanet_dsanet_conf_3seeds/results.json", "study_headline/results.json"),
                           setups.earlier_seeds),
    "study_setup": Table(("study_setup/results.json",), setups.study_setup),
    # the paper
    "study_paper": Table(("study_paper/results.json",), paper.study_paper, inputs=(PAPER,)),
    "paper_coco_configs": Table((PAPER,), paper.paper_configs("coco")),
    "paper_ablation_configs": Table((PAPER,), paper.paper_configs("ablations")),
}
