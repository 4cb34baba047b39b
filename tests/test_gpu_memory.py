"""The per-GPU memory estimate (benchmarks/gpu_memory.py): a step measured in a fresh process, the rule that
turns an estimate into card verdicts, and the tables rendered from its results file."""
import pytest

from benchmarks import gpu_memory
from benchmarks.memory import call_in_fresh_process
from dsanet_lab.pages import gpu_memory as pages


def test_a_step_is_measured_in_a_fresh_process_and_more_images_need_more():
    one = call_in_fresh_process("benchmarks.gpu_memory", "measure_step", "COCO-Detection/retinanet_R_50_FPN_1x.py",
                                50, "fp32", 1, (320, 480))
    two = call_in_fresh_process("benchmarks.gpu_memory", "measure_step", "COCO-Detection/retinanet_R_50_FPN_1x.py",
                                50, "fp32", 2, (320, 480))
    assert 0 < one["step_rise_mib"] < two["step_rise_mib"]  # activations grow with the images
    assert one["state_mib"] == pytest.approx(two["state_mib"])  # weights and momentum do not grow with the batch
    assert 100 < one["state_mib"] < 400  # R50-FPN RetinaNet: about 36M weights, fp32, and SGD momentum


def test_a_card_fits_when_the_estimate_and_cuda_overhead_stay_under_its_usable_part():
    usable = {card: gpu_memory.USABLE_FRACTION * card - gpu_memory.CUDA_OVERHEAD_GIB for card in gpu_memory.CARDS_GIB}
    just_under = gpu_memory.fits((usable[16] - 0.01) * 1024)
    just_over = gpu_memory.fits((usable[16] + 0.01) * 1024)
    assert just_under["16"] and not just_over["16"] and just_over["24"]


def test_the_tables_show_the_files_numbers_and_verdicts():
    row = {"model": "RetinaNet", "config": "COCO-Detection/retinanet_R_50_FPN_1x.py", "depth": 101,
           "precision": "amp", "measured_under": "bf16", "images": 2, "step_rise_mib": 20480.0, "state_mib": 512.0, "estimate_mib": 20992.0,
           "fits": gpu_memory.fits(20992.0), "fits_with_1_image": gpu_memory.fits(10752.0)}
    data = {"image_size": [800, 1333], "cards_gib": list(gpu_memory.CARDS_GIB), "rows": [row],
            "cuda_overhead_gib": gpu_memory.CUDA_OVERHEAD_GIB, "usable_fraction": gpu_memory.USABLE_FRACTION,
            "fp16_proxy_check": [{"config": "a.py", "image_size": [320, 480], "fp16_rise_mib": 410.0, "bf16_rise_mib": 400.0}]}
    steps = pages.memory_per_step(data)
    assert "| RetinaNet | R101 | — | 20.0 + 0.5 = **20.5**; 24, 32, 80 (16, 24, 32, 80) |" in steps
    assert "ran under CPU bf16 autocast" in steps and "`a.py` 410 MiB in fp16, 400 MiB in bf16" in steps
    cards = pages.cards_per_recipe(data)
    assert "| `COCO-Detection/retinanet_R_50_FPN_1x.py` | — | — | — | 24 GiB |" in cards
