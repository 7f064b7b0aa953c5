"""scripts/mmcv_cuda_dtypes.py reads what each op of mmcv's ``_ext`` takes on CUDA from its
sources: from the op's binding, through its ``*_impl`` and the CUDA function registered for
it, to the launcher's dispatch macro and ``data_ptr`` calls. Small synthetic sources, shaped
as mmcv's are."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from scripts import mmcv_cuda_dtypes

SOURCES = {
    "pybind.cpp": """
        PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
          m.def("nms", &nms, "nms (CPU/CUDA) ", py::arg("boxes"), py::arg("scores"),
                py::arg("iou_threshold"), py::arg("offset"));
          m.def("roi_align_forward", &roi_align_forward, "roi_align forward", py::arg("input"),
                py::arg("rois"), py::arg("output"), py::arg("spatial_scale"));
        }
    """,
    "nms.cpp": """
        Tensor nms_impl(Tensor boxes, Tensor scores, float iou_threshold, int offset) {
          return DISPATCH_DEVICE_IMPL(nms_impl, boxes, scores, iou_threshold, offset);
        }
        Tensor nms(Tensor boxes, Tensor scores, float iou_threshold, int offset) {
          return nms_impl(boxes, scores, iou_threshold, offset);
        }
    """,
    "roi_align.cpp": """
        void roi_align_forward_impl(Tensor input, Tensor rois, Tensor output, float spatial_scale) {
          DISPATCH_DEVICE_IMPL(roi_align_forward_impl, input, rois, output, spatial_scale);
        }
        void roi_align_forward(Tensor input, Tensor rois, Tensor output, float spatial_scale) {
          roi_align_forward_impl(input, rois, output, spatial_scale);
        }
    """,
    "cuda/cudabind.cpp": """
        Tensor nms_cuda(Tensor boxes, Tensor scores, float iou_threshold, int offset) {
          return NMSCUDAKernelLauncher(boxes, scores, iou_threshold, offset);
        }
        Tensor nms_impl(Tensor boxes, Tensor scores, float iou_threshold, int offset);
        REGISTER_DEVICE_IMPL(nms_impl, CUDA, nms_cuda);
        void roi_align_forward_cuda(Tensor input, Tensor rois, Tensor output, float spatial_scale) {
          ROIAlignForwardCUDAKernelLauncher(input, rois, output, spatial_scale);
        }
        REGISTER_DEVICE_IMPL(roi_align_forward_impl, CUDA, roi_align_forward_cuda);
    """,
    "cuda/nms_cuda.cu": """
        Tensor NMSCUDAKernelLauncher(Tensor boxes, Tensor scores, float iou_threshold, int offset) {
          auto order_t = std::get<1>(scores.sort(0, /*descending=*/true));
          auto boxes_sorted = boxes.index_select(0, order_t);
          Tensor mask = at::empty({boxes_num, col_blocks}, boxes.options().dtype(at::kLong));
          nms_cuda<<<blocks, threads, 0, stream>>>(boxes_num, iou_threshold, offset,
              boxes_sorted.data_ptr<float>(), (unsigned long long*)mask.data_ptr<int64_t>());
          return order_t.masked_select(keep_t);
        }
    """,
    "cuda/roi_align_cuda.cu": """
        void ROIAlignForwardCUDAKernelLauncher(Tensor input, Tensor rois, Tensor output, float spatial_scale) {
          AT_DISPATCH_FLOATING_TYPES_AND_HALF(
              input.scalar_type(), "roi_align_forward_cuda_kernel", [&] {
                roi_align_forward_cuda_kernel<scalar_t><<<1, 1>>>(
                    input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), output.data_ptr<scalar_t>());
              });
        }
    """,
}


def _checkout(root: Path) -> Path:
    for name, text in SOURCES.items():
        path = root / "mmcv" / "ops" / "csrc" / "pytorch" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_launcher_that_takes_fp32_boxes_alone_holds_the_op_to_them(tmp_path: Path) -> None:
    ops: Dict[str, Dict[str, object]] = mmcv_cuda_dtypes.read(_checkout(tmp_path))
    assert ops["nms"] == {
        "params": ["boxes", "scores", "iou_threshold", "offset"],
        "launcher": "NMSCUDAKernelLauncher",
        "args": {"boxes": "float32"},  # through boxes_sorted; the mask is made anew, in int64
    }


def test_a_dispatching_launcher_holds_every_tensor_it_reads_to_the_dispatched_dtype(tmp_path: Path) -> None:
    ops = mmcv_cuda_dtypes.read(_checkout(tmp_path))
    assert ops["roi_align_forward"] == {
        "params": ["input", "rois", "output", "spatial_scale"],
        "launcher": "ROIAlignForwardCUDAKernelLauncher",
        "dispatched": "input",
        "dtypes": ["float64", "float32", "float16"],
        "kernel": "roi_align_forward_cuda_kernel",
        "args": {"input": "dispatched", "rois": "dispatched", "output": "dispatched"},
    }
