"""The simulation of CUDA's autocast on the CPU (scripts/cuda_rules.py), proven against torch's
own CUDA autocast kernels run on fake CUDA tensors: every op of a corpus of calls and of three
models' forward passes (a transformer, a DETR-like detection head and an MLP) gets the dtype
CUDA gives it, in fp16 and in bf16, where CPU autocast gives other dtypes; and the casts go
through autograd, so each weight gets its gradient in its own dtype. The runner is
tests/e2e_ops/cuda_rules.py, on the build environment's torch."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import pytest

from scripts import releases
from tests.fixtures import ask

pytestmark = [pytest.mark.e2e]

DTYPES = ("float16", "bfloat16")
#: The runner's groups of calls, and its models
CALLS = (
    "matmul", "batched", "vectors", "contractions", "convolutions", "pointwise", "reductions", "softmax", "norms",
    "resampling", "losses", "distances", "mixed", "indexing",
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
