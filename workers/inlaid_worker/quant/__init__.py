"""Quantization of the shared base: GPTQ / RTN cores, the GPTQ checkpoint format, MLGPTQ Hessian
collection and aggregation, full and incremental quantization of a Hugging Face Llama directory."""

from .aggregate import aggregate, max_aggregate, pooled_aggregate
from .checkpoint import read_checkpoint, read_quantization_config
from .dequant import dequantized_state_dict, load_dequantized_model, load_quantized_model
from .gptq import PreparedHessian, gptq_quantize, prepare_hessian
from .incremental import UpdatePlan, plan_update, requantize_layers, update_checkpoint
from .layerwise import LayerResult
from .pack import PackedLinear, dequantize_packed, pack_weight, unpack_weight
from .qlinear import QuantLinear
from .quantize import METHODS, QuantSummary, TaskData, quantize_checkpoint
from .rtn import rtn_quantize
from .spec import QuantizedWeight, QuantSpec

__all__ = [
    "METHODS", "LayerResult", "PackedLinear", "PreparedHessian", "QuantLinear", "QuantSpec", "QuantSummary",
    "QuantizedWeight", "TaskData", "UpdatePlan", "aggregate", "dequantize_packed", "dequantized_state_dict",
    "gptq_quantize", "load_dequantized_model", "load_quantized_model", "max_aggregate", "pack_weight",
    "plan_update", "pooled_aggregate", "prepare_hessian", "quantize_checkpoint", "read_checkpoint",
    "read_quantization_config", "requantize_layers", "rtn_quantize", "unpack_weight", "update_checkpoint",
]
