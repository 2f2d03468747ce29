"""Export for deployment: standard-operator ONNX and torch.export / AOTInductor programs.

    from spsr_fast.export import export_onnx, export_pt2
    export_onnx(spsr_fast.load_model("spsr.pth"), "spsr.onnx", source="spsr.pth")

Both take `lr` (float32 NCHW, RGB in [0, 1]) and return `sr` (and, for SPSRNet, the
predicted HR `gradient` map) in float32; see `spsr-fast export --help`.
"""
from .deploy import (INPUT_NAME, OUTPUTS, PRECISIONS, DeploymentModel, ExportError, StaticShape, choose_outputs,
                     parse_static)
from .onnx_export import DEFAULT_OPSET, SUPPORTED_OPSETS, OnnxExport, export_onnx
from .pt2_export import Pt2Export, aoti_package_path, export_pt2, read_pt2_metadata

__all__ = ["INPUT_NAME", "OUTPUTS", "PRECISIONS", "DeploymentModel", "ExportError", "StaticShape", "choose_outputs",
           "parse_static", "DEFAULT_OPSET", "SUPPORTED_OPSETS", "OnnxExport", "export_onnx", "Pt2Export",
           "aoti_package_path", "export_pt2", "read_pt2_metadata"]
