"""How much of a model's weights each weight quantizer keeps: per bit width and scale granularity, the share of
weights quantized to zero and the relative squared error ||Q(W) - W||^2 / ||W||^2, averaged over the Linears
`kdqat.prepare` quantizes (the encoder's and the pooler's; the word embeddings, always per row, are left out).

Issue 12: it shows why a W4/A8 stage with one scale per tensor (symmetric max) is no better than ternary.
Run: python benchmarks/weight_error.py [MODEL] [--task cola]   (MODEL: a fine-tuned folder, default the embedded model)
"""

from __future__ import annotations

import argparse
import copy

import torch

from kdqat import QuantConfig, prepare
from kdqat.data.source import glue_spec
from kdqat.models import DEFAULT_MODEL
from kdqat.objectives import objective_of
from kdqat.modules import QuantLinear


def weight_error(model: torch.nn.Module, config: QuantConfig) -> tuple[float, float]:
    """Mean share of zero codes and mean relative squared error over the quantized Linears of `model`."""
    student = prepare(copy.deepcopy(model), config)
    zeros, errors = [], []
    with torch.no_grad():
        for module in student.modules():
            if isinstance(module, QuantLinear):
                w = module.weight
                codes, scale = module.weight_quantizer.codes_and_scale(w)
                zeros.append((codes == 0).float().mean().item())
                errors.append(((codes * scale - w).pow(2).sum() / w.pow(2).sum()).item())
    return sum(zeros) / len(zeros), sum(errors) / len(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    parser.add_argument("--task", default="cola", help="GLUE task of the model's head (only its label count matters)")
    args = parser.parse_args()
    task = glue_spec(args.task)
    model = objective_of(task).start_model(args.model, task).eval()
    print(f"{args.model}: weight quantizers over the Linears kdqat quantizes")
    print(f"{'bits':>4} {'scale':>8} {'zero codes':>11} {'rel. sq. error':>15}")
    for bits in (2, 4, 8):
        for scale in ("tensor", "channel"):
            zero, error = weight_error(model, QuantConfig.for_bits(bits, weight_scale=scale))
            print(f"{bits:>4} {scale:>8} {zero:>11.3f} {error:>15.4f}")


if __name__ == "__main__":
    main()
