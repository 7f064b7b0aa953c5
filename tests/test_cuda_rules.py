"""The simulation of CUDA's autocast on the CPU (scripts/cuda_rules.py), proven against torch's
own CUDA autocast kernels run on fake CUDA tensors: every op of a corpus of calls and of three
models' forward passes (a transformer, a DETR-like detection head and an MLP) gets the dtype
CUDA gives it, in fp16 and in bf16, where CPU autocast gives other dtypes; and the casts go
through autograd, so each weight gets its gradient in its own dtype. The runner is
tests/e2e_ops/cuda_rules.py, on the build environment's torch. Then mmcv's compiled ops held
to their CUDA launchers' dtypes, and the references that run for the ops mmcv builds for
CUDA only, checked against what they can be checked against (tests/e2e_ops/mmcv_kernels.py
and mmcv_references.py, on mmcv 2.1.0's CPU-ops build)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from scripts import releases
from tests.fixtures import ask

pytestmark = [pytest.mark.e2e]

DTYPES = ("float16", "bfloat16")
#: The runner's groups of calls, and its models
CALLS = (
    "matmul", "batched", "vectors", "contractions", "convolutions", "pointwise", "reductions", "softmax", "norms",
    "resampling", "losses", "distances", "mixed", "indexing", "autocast-off",
)  # fmt: skip
MODELS = ("transformer", "detection-head", "mlp")
TARGETS = [*CALLS, *MODELS]


@pytest.fixture(scope="module")
def answers() -> Dict[Tuple[Any, ...], Dict[str, Any]]:
    """The runner's answer for every target in each dtype, from one process."""
    return ask(releases.buildenv(), "cuda_rules", [(target, dtype) for target in TARGETS for dtype in DTYPES])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", TARGETS)
def test_every_op_gets_the_dtype_torchs_cuda_autocast_gives_it(
    answers: Dict[Tuple[Any, ...], Dict[str, Any]], target: str, dtype: str
) -> None:
    found = answers[(target, dtype)]
    assert "error" not in found, found
    assert found["ops"] > 0 and found["difference"] is None, found


def test_cpu_autocast_gives_other_dtypes_than_cuda_where_the_simulation_gives_cudas(
    answers: Dict[Tuple[Any, ...], Dict[str, Any]],
) -> None:
    differ: List[str] = [target for target in TARGETS if answers[(target, "float16")]["cpu_differs"]]
    # CUDA runs these in fp32 where the CPU keeps the low dtype, or the other way round
    assert {"pointwise", "reductions", "softmax", "norms", "losses", "detection-head", "mlp"} <= set(differ), differ


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", list(MODELS))
def test_each_weight_gets_its_gradient_in_its_own_dtype_through_the_simulated_casts(
    answers: Dict[Tuple[Any, ...], Dict[str, Any]], model: str, dtype: str
) -> None:
    assert answers[(model, dtype)]["gradients"] == ["torch.float32"]


def test_with_fp32_arithmetic_fp16_ops_compute_as_a_gpus_kernels_and_every_op_gets_cudas_inputs() -> None:
    """What model steps run under (``fp32_arithmetic``): the ops CUDA runs in fp16 (a
    convolution, a transposed one, a linear layer, a batched matmul) give exactly the fp32 op
    of their fp16-rounded inputs, rounded to fp16; on every target of the corpus the same ops
    run as under CUDA, in CUDA's dtypes but where an op inside one of those runs in fp32."""
    found = ask(releases.buildenv(), "cuda_rules", [("fp32-arithmetic", "float16")])[("fp32-arithmetic", "float16")]
    assert found["dtypes"] == ["torch.float16"] * 4 and found["as_a_gpu"] == [True] * 4, found
    assert found["gradients"] == ["torch.float32"], found
    assert found["differences"] == {} and found["widened"] > 0, found


# --- mmcv's kernels held to their CUDA launchers' dtypes -----------------------------------------

#: (op, its tensors' dtypes) and what the op gives under the rules of mmcv 2.1.0's CUDA launchers
KERNEL_CASES = [
    pytest.param("nms", ("float32", "float32"), {"dtype": "torch.int64"}, id="nms-fp32"),
    # the RPN's boxes and scores under CUDA autocast: CUDA's kernel sorts the scores apart and
    # takes the boxes alone, so it runs where the CPU's refuses fp16 scores beside fp32 boxes
    pytest.param("nms", ("float32", "float16"), {"dtype": "torch.int64"}, id="nms-fp32-boxes-fp16-scores"),
    pytest.param(
        "nms",
        ("float16", "float16"),
        {"error": "RuntimeError: expected scalar type Float but found Half"},
        id="nms-fp16",
    ),
    pytest.param("roi_align", ("float16", "float16"), {"dtype": "torch.float16"}, id="roi-align-fp16"),
    pytest.param(
        "roi_align",
        ("bfloat16", "bfloat16"),
        {"error": "NotImplementedError: \"roi_align_forward_cuda_kernel\" not implemented for 'BFloat16'"},
        id="roi-align-bf16",
    ),
    pytest.param(
        "roi_align",
        ("float16", "float32"),
        {"error": "RuntimeError: expected scalar type Half but found Float"},
        id="roi-align-fp16-features-fp32-rois",
    ),
    # no CPU kernels: what CUDA's would refuse raises its message, the rest runs the references
    pytest.param("sigmoid_focal_loss", ("float16",), {"dtype": "torch.float16"}, id="sigmoid-focal-loss-fp16"),
    pytest.param(
        "sigmoid_focal_loss",
        ("bfloat16",),
        {"error": "NotImplementedError: \"sigmoid_focal_loss_forward_cuda_kernel\" not implemented for 'BFloat16'"},
        id="sigmoid-focal-loss-bf16",
    ),
    pytest.param("carafe", ("float16", "float16"), {"dtype": "torch.float16"}, id="carafe-fp16"),
    pytest.param(
        "carafe",
        ("bfloat16", "bfloat16"),
        {"error": "NotImplementedError: \"NCHW2NHWC_Feature\" not implemented for 'BFloat16'"},
        id="carafe-bf16",
    ),
    pytest.param("deform_roi_pool", ("float16", "float16"), {"dtype": "torch.float16"}, id="deform-roi-pool-fp16"),
    pytest.param(
        "deform_roi_pool",
        ("bfloat16", "bfloat16"),
        {"error": "NotImplementedError: \"deform_roi_pool_forward_cuda_kernel\" not implemented for 'BFloat16'"},
        id="deform-roi-pool-bf16",
    ),
    pytest.param("ms_deform_attn", ("float16", "float16"), {"dtype": "torch.float16"}, id="ms-deform-attn-fp16"),
    # its Function casts the locations to the value's dtype
    pytest.param("ms_deform_attn", ("float16", "float32"), {"dtype": "torch.float16"}, id="ms-deform-attn-fp16-fp32"),
    pytest.param(
        "ms_deform_attn",
        ("bfloat16", "bfloat16"),
        {"error": "NotImplementedError: \"ms_deform_attn_forward_cuda\" not implemented for 'BFloat16'"},
        id="ms-deform-attn-bf16",
    ),
]


@pytest.fixture(scope="module")
def ops_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv's python with mmcv 2.1.0's CPU-ops build."""
    return releases.torch_venv(tmp_path_factory.mktemp("ops") / "venv", releases.ops_wheel())


@pytest.fixture(scope="module")
def kernels(ops_python: Path) -> Dict[Tuple[Any, ...], Dict[str, Any]]:
    """What tests/e2e_ops/mmcv_kernels.py answers for every case, in one process."""
    return ask(ops_python, "mmcv_kernels", [tuple(case.values[:2]) for case in KERNEL_CASES])


@pytest.mark.parametrize("op, dtypes, answered", KERNEL_CASES)
def test_mmcvs_kernels_take_what_their_cuda_launchers_take(
    kernels: Dict[Tuple[Any, ...], Dict[str, Any]], op: str, dtypes: Tuple[str, ...], answered: Dict[str, Any]
) -> None:
    assert kernels[(op, dtypes)] == answered


# --- the references for mmcv's CUDA-only kernels --------------------------------------------------

#: tests/e2e_ops/mmcv_references.py's checks: each through mmcv's own op, forward and gradients
REFERENCE_CHECKS = [
    pytest.param("deform_roi_pool-no-offset-adaptive", id="deform-roi-pool-is-roi-align-without-offset"),
    pytest.param("deform_roi_pool-no-offset-2x2", id="deform-roi-pool-is-roi-align-without-offset-2x2-samples"),
    pytest.param("deform_roi_pool-moved", id="deform-roi-pool-offset-moves-the-bins-as-roi-align-of-moved-rois"),
    pytest.param("carafe", id="carafe-is-its-unfolded-definition"),
    pytest.param("carafe_naive", id="carafe-naive-is-its-unfolded-definition"),
    pytest.param("sigmoid_focal_loss", id="sigmoid-focal-loss-is-alpha-t-focal-bce"),
    pytest.param("softmax_focal_loss", id="softmax-focal-loss-is-focal-cross-entropy"),
    pytest.param("ms_deform_attn", id="ms-deform-attn-is-mmcvs-pytorch-path"),
    pytest.param("branches-only", id="cuda-is-said-in-the-branches-only-and-not-after"),
    pytest.param("moves-only", id="a-cuda-move-stays-on-the-cpu-in-the-listed-moves-only-and-not-after"),
]


@pytest.fixture(scope="module")
def references(ops_python: Path) -> Dict[Tuple[Any, ...], Dict[str, Any]]:
    """What tests/e2e_ops/mmcv_references.py answers for every check, in one process."""
    return ask(ops_python, "mmcv_references", [(check.values[0],) for check in REFERENCE_CHECKS])


@pytest.mark.parametrize("check", REFERENCE_CHECKS)
def test_each_reference_for_a_cuda_only_kernel_agrees_with_what_it_can_be_checked_against(
    references: Dict[Tuple[Any, ...], Dict[str, Any]], check: str
) -> None:
    found = references[(check,)]
    assert found.get("difference", 1.0) < 1e-5, found
