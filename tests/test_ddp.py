"""Two gloo processes train exactly like one process with their whole batch, on DSANet and DSA-FCOS;
every model variant trains under DDP."""
import copy
from datetime import timedelta

import pytest
import torch
from detectron2.utils.events import EventStorage

from conftest import DSA_VARIANTS, make_inputs, tiny_model
from dsanet import compat
from dsanet.launch import launch

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) launch path")]

# Synchronised batch norm: with plain BN each process normalises its own images (true of any DDP).
NORM = "naiveSyncBN"
STEPS = 3
# fp32 sums taken in another order (batch-norm statistics, the gradient all-reduce) differ in the
# last bits; after STEPS SGD steps they stay far below this.
RTOL, ATOL = 1e-4, 1e-6
DDP_VARIANTS = {"retinanet": dict(dsa_levels=[]), **DSA_VARIANTS, "confidence": dict(with_confidence=True)}
# The detectors of the equality test, as (config, backbone norm, head overrides), and their losses.
# FCOS's towers are 64 wide, so that GN's 32 groups hold 2 channels each (see tests/test_fcos.py).
# Its backbone keeps FrozenBN: GN over 2 values (a 1x1 P7 of these images) divides by their tiny
# spread, which turns the last-bit differences of synchronised BN's all-reduced statistics into
# gradient differences near 1%; each image's features are then computed bit for bit alike.
DETECTORS = {
    "dsanet_conf": ("common/models/dsanet.py", NORM, dict(with_confidence=True),
                    {"loss_cls", "loss_box_reg", "loss_conf"}),
    "dsa_fcos": ("common/models/dsa_fcos.py", "FrozenBN", dict(conv_dims=[64, 64]),
                 {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}),
}
LAUNCH_TIMEOUT = timedelta(minutes=5)  # a rank waiting on a gradient that never comes fails, not hangs


def whole_batch() -> list:
    """Four images: two per process, or all four in one."""
    return make_inputs(seed=0) + make_inputs(seed=1)


def train_steps(model: torch.nn.Module, inputs: list, steps: int = STEPS) -> list:
    """SGD with momentum on the same inputs; per step the losses and every parameter's gradient."""
    module = getattr(model, "module", model)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    records = []
    model.train()
    with EventStorage():
        for _ in range(steps):
            losses = model(copy.deepcopy(inputs))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            records.append({"losses": {k: v.detach() for k, v in losses.items()},
                            "grads": {n: None if p.grad is None else p.grad.clone()
                                      for n, p in module.named_parameters()}})
            optimizer.step()
    return records


def ddp_model(config: str = "common/models/dsanet.py", norm: str = NORM, **head_overrides) -> torch.nn.Module:
    # As train_net builds it (configs/common/train.py: train.ddp).
    return compat.create_ddp_model(tiny_model(config, norm=norm, **head_overrides), broadcast_buffers=False,
                                   find_unused_parameters=False)


def _equality_worker(output_dir: str, detector: str) -> None:
    from detectron2.utils import comm

    config, norm, head, _ = DETECTORS[detector]
    rank = comm.get_rank()
    records = train_steps(ddp_model(config, norm, **head), whole_batch()[2 * rank:2 * rank + 2])
    torch.save(records, f"{output_dir}/rank{rank}.pt")


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_two_processes_of_batch_2_equal_one_process_of_batch_4(tmp_path, detector):
    launch(_equality_worker, 2, args=(str(tmp_path), detector), timeout=LAUNCH_TIMEOUT)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    config, norm, head, loss_names = DETECTORS[detector]
    single = train_steps(tiny_model(config, norm=norm, **head), whole_batch())
    for step, expected in enumerate(single):
        assert set(ranks[0][step]["losses"]) == set(expected["losses"]) == loss_names
        for name, value in expected["losses"].items():
            # Each process's loss is its share; their mean is what DDP's averaged gradient descends.
            mean = (ranks[0][step]["losses"][name] + ranks[1][step]["losses"][name]) / 2
            torch.testing.assert_close(mean, value, rtol=RTOL, atol=ATOL,
                                       msg=lambda m, step=step, name=name: f"step {step} {name}: {m}")
        for name, grad in expected["grads"].items():
            assert grad is not None, name
            torch.testing.assert_close(ranks[0][step]["grads"][name], grad, rtol=RTOL, atol=ATOL,
                                       msg=lambda m, step=step, name=name: f"step {step} gradient of {name}: {m}")
            assert torch.equal(ranks[0][step]["grads"][name], ranks[1][step]["grads"][name]), name


def _variants_worker(output_dir: str) -> None:
    from detectron2.utils import comm

    torch.set_num_threads(1)  # only gradient presence is checked here; two threads per process only contend

    rank = comm.get_rank()
    without_gradient = {}
    for variant, overrides in sorted(DDP_VARIANTS.items()):
        # find_unused_parameters=False: a parameter without gradient fails the second step.
        records = train_steps(ddp_model(**overrides), make_inputs(seed=rank), steps=2)
        without_gradient[variant] = [n for n, g in records[-1]["grads"].items() if g is None]
    torch.save(without_gradient, f"{output_dir}/rank{rank}.pt")


def test_every_variant_trains_under_ddp_without_unused_parameters(tmp_path):
    launch(_variants_worker, 2, args=(str(tmp_path),), timeout=LAUNCH_TIMEOUT)
    for rank in range(2):
        without_gradient = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(without_gradient) == set(DDP_VARIANTS)
        assert without_gradient == {variant: [] for variant in DDP_VARIANTS}
