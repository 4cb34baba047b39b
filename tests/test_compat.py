"""Each shim in dsanet.compat: the detectron2 feature it restores works, and nothing leaks beyond it."""
import importlib
import sys

import numpy as np
import pytest
import torch

from dsanet import compat
from dsanet.launch import launch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_apply_is_idempotent_and_reports_each_shim():
    first = compat.apply()
    assert compat.apply() is first
    assert set(first) == {"pillow_linear_alias", "compiled_ops_stand_in", "numpy_aliases",
                          "model_zoo_pkg_resources", "map_dataset_sampling", "retinanet_head_group_norm"}
    assert compat.applied_shims() == [name for name, did in first.items() if did]


def test_detectron2_is_left_as_installed_where_a_shim_was_not_needed():
    """On a detectron2 that needs no shim (main), importing dsanet replaces no detectron2 attribute."""
    from detectron2.data import build, common
    from detectron2.layers import get_norm
    from detectron2.modeling.meta_arch import retinanet

    applied = compat.apply()
    replaced = {
        "map_dataset_sampling": common.MapDataset.__init__.__module__ != "detectron2.data.common",
        "retinanet_head_group_norm": retinanet.get_norm is not get_norm,
        "numpy_aliases": build.np is not np,
    }
    for shim, is_replaced in replaced.items():
        assert is_replaced == bool(applied[shim]), f"{shim}: applied={applied[shim]!r} but replaced={is_replaced}"
    if not compat.applied_shims():
        assert not any(replaced.values())


def test_a_retinanet_head_with_group_norm_builds_and_normalises_its_towers():
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

    head = RetinaNetHead(input_shape=[ShapeSpec(channels=32)] * 2, num_classes=3, num_anchors=1,
                         conv_dims=[32, 32], norm="GN")
    norms = [m for m in head.cls_subnet if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 2 and all(m.num_groups == 32 and m.num_channels == 32 for m in norms)


def test_map_dataset_takes_another_element_when_the_map_function_skips_one():
    from detectron2.data.common import MapDataset

    dataset = MapDataset(list(range(6)), lambda x: None if x % 3 == 0 else x)
    assert [dataset[i] for i in range(6)][1::3] == [1, 4]
    assert all(dataset[i] % 3 != 0 for i in range(6))  # 0 and 3 are replaced by others
    if compat.apply()["map_dataset_sampling"]:  # the stand-in also names an empty pool in one line
        from dsanet.errors import UserInputError

        with pytest.raises(UserInputError, match="no element of the dataset"):
            MapDataset([0, 3], lambda x: None)[0]


def test_detectron2_transforms_import_and_default_to_bilinear():
    from PIL import Image
    from detectron2.data.transforms import ExtentTransform

    transform = ExtentTransform(src_rect=(0, 0, 10, 10), output_size=(5, 5))
    assert transform.interp == Image.BILINEAR


@pytest.mark.skipif(compat.has_compiled_ops(), reason="this detectron2 has its compiled ops")
def test_calling_an_absent_compiled_op_names_it_and_how_to_get_a_full_build():
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated  # importable although it needs detectron2._C

    boxes = torch.tensor([[10.0, 10.0, 4.0, 6.0, 30.0]])
    with pytest.raises(compat.MissingCompiledOpError, match=r"_C\.box_iou_rotated.*git\+https"):
        pairwise_iou_rotated(boxes, boxes)
    # The stand-in lives only inside the modules that import it: detectron2._C still reports absent.
    with pytest.raises(ImportError):
        importlib.import_module("detectron2._C")


def test_class_histogram_runs_without_adding_aliases_to_numpy():
    from detectron2.data.build import print_instances_class_histogram

    dataset_dicts = [{"annotations": [{"category_id": 0}, {"category_id": 1}, {"category_id": 1}]}]
    print_instances_class_histogram(dataset_dicts, ["a", "b"])
    if np.lib.NumpyVersion(np.__version__) >= "1.24.0":
        assert not hasattr(np, "int"), "the numpy alias shim must stay inside detectron2's modules"


def test_detectron2_model_zoo_loads_its_lazy_configs():
    from detectron2 import model_zoo

    cfg = model_zoo.get_config("common/models/retinanet.py")
    assert cfg.model.num_classes == 80
    if compat.apply()["model_zoo_pkg_resources"]:
        assert "pkg_resources" not in sys.modules, "the pkg_resources stand-in must not leak"


def _two_process_worker(output_dir: str) -> None:
    """Runs in each launched process: one DDP step whose gradients must be averaged across ranks."""
    from detectron2.utils import comm

    torch.manual_seed(0)
    model = compat.create_ddp_model(torch.nn.Linear(3, 1, bias=False))
    x = torch.full((1, 3), float(comm.get_rank() + 1))  # rank 0 sees 1s, rank 1 sees 2s
    model(x).sum().backward()
    grad = model.module.weight.grad if comm.get_world_size() > 1 else model.weight.grad
    with open(f"{output_dir}/rank{comm.get_rank()}.txt", "w") as f:
        f.write(f"{comm.get_world_size()} {comm.get_local_rank()} {grad.tolist()}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) launch path")
def test_launch_runs_two_cpu_processes_over_gloo_with_ddp(tmp_path):
    launch(_two_process_worker, 2, dist_url="auto", args=(str(tmp_path),))
    results = [(tmp_path / f"rank{r}.txt").read_text().split(" ", 2) for r in range(2)]
    assert [r[:2] for r in results] == [["2", "0"], ["2", "1"]]
    assert results[0][2] == results[1][2] == str([[1.5, 1.5, 1.5]])  # mean of 1s and 2s
