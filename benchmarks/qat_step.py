"""QAT step time over plain fine-tuning step time, default model, batch 32, sequence 128 (issue 2).

QAT step = teacher forward (no grad) + W2/A8 student forward/backward with the map+output losses +
optimizer step; plain step = float forward/backward + optimizer step. Prints both and their ratio.
Both steps run in one process with the same malloc settings as `kdqat train` (--glibc-defaults: without).
With --compile it instead times the QAT step eager against the same step with torch.compile'd teacher
and student (issue 12), after comparing the two on one step with dropout off (loss and gradients).
Run: python benchmarks/qat_step.py [--batch-size 32] [--seq-len 128] [--steps 8] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from kdqat import QuantConfig, prepare
from kdqat.cpu_memory import keep_freed_memory
from kdqat.distill import distillation_losses, run_captured
from kdqat.families import family_of
from kdqat.losses import loss_weights
from kdqat.data.source import glue_spec
from kdqat.models import DEFAULT_MODEL
from kdqat.objectives import objective_of
from kdqat.optim import OPTIMIZERS, BertAdam


def timed_pair(first, second, rounds: int) -> tuple[float, float]:
    """Median seconds of each step, warmed up twice and then run alternately, so that drift in the
    machine's speed (frequency, other load, allocator warm-up) affects both the same way."""
    for _ in range(2):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for step, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            step()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="timed rounds (one step of each kind per round)")
    parser.add_argument("--kd", default="map+output")
    parser.add_argument("--optimizer", default="bertadam", choices=OPTIMIZERS,
                        help="the student's optimizer (kdqat train's default: bertadam); the plain step uses AdamW")
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="leave glibc malloc untuned (kdqat train tunes it: see kdqat/cpu_memory.py)")
    parser.add_argument("--compile", action="store_true",
                        help="time the QAT step eager against torch.compile (inductor) instead of against plain fine-tuning")
    args = parser.parse_args()
    tuned = False if args.glibc_defaults else keep_freed_memory()
    torch.manual_seed(0)
    task = glue_spec("rte")
    teacher = objective_of(task).start_model(args.model, task).train()
    ids = torch.randint(1000, 20000, (args.batch_size, args.seq_len))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.randint(0, 2, (args.batch_size,))

    plain = copy.deepcopy(teacher)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=2e-5)

    def plain_step():
        plain_opt.zero_grad()
        plain(**inputs, labels=labels).loss.backward()
        plain_opt.step()

    student = prepare(copy.deepcopy(teacher), QuantConfig()).train()
    family_of(teacher).use_kdqat_attention(teacher)
    teacher.eval().requires_grad_(False)
    weights = loss_weights(args.kd)

    def make_qat_step(student: torch.nn.Module, compiled: bool):
        opt = (BertAdam(student.parameters(), lr=2e-5, weight_decay=0.01) if args.optimizer == "bertadam"
               else torch.optim.AdamW(student.parameters(), lr=2e-5))
        run_teacher, run_student = (torch.compile(teacher), torch.compile(student)) if compiled else (teacher, student)

        def qat_step(update: bool = True) -> float:
            opt.zero_grad()
            with torch.no_grad():
                t = run_captured(run_teacher, inputs, unwrapped=teacher)
            s = run_captured(run_student, inputs, unwrapped=student)
            terms = distillation_losses(s, t, inputs["attention_mask"], weights, regression=False)
            loss = sum(weights[k] * v for k, v in terms.items())
            loss.backward()
            if update:
                opt.step()
            return loss.item()
        return qat_step

    if args.compile:
        compare_compiled(student, make_qat_step, args)
        return
    qat_step = make_qat_step(student, compiled=False)

    t_plain, t_qat = timed_pair(plain_step, qat_step, args.steps)
    print(f"model={args.model} batch={args.batch_size} seq={args.seq_len} threads={torch.get_num_threads()} kd={args.kd} optimizer={args.optimizer} "
          f"malloc={'tuned' if tuned else 'glibc defaults'}")
    print(f"plain fine-tuning step: {t_plain * 1000:8.1f} ms")
    print(f"QAT + KD step:          {t_qat * 1000:8.1f} ms")
    print(f"ratio:                  {t_qat / t_plain:8.2f}x (target <= 1.8x)")


def compare_compiled(student: torch.nn.Module, make_qat_step, args: argparse.Namespace) -> None:
    """Eager against torch.compile'd QAT step: one step compared, then both timed alternately (dropout off in both)."""
    eager, compiled = copy.deepcopy(student), copy.deepcopy(student)
    for model in (eager, compiled):  # dropout off, so that both draw nothing random; the rest runs as in training
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    eager_step, compiled_step = make_qat_step(eager, compiled=False), make_qat_step(compiled, compiled=True)
    loss_eager = eager_step(update=False)
    start = time.perf_counter()
    loss_compiled = compiled_step(update=False)
    first = time.perf_counter() - start
    grads = [(a.grad, b.grad) for a, b in zip(eager.parameters(), compiled.parameters()) if a.grad is not None]
    grad_diff = max((a - b).abs().max().item() for a, b in grads)
    grad_max = max(a.abs().max().item() for a, _ in grads)
    t_eager, t_compiled = timed_pair(eager_step, compiled_step, args.steps)
    print(f"model={args.model} batch={args.batch_size} seq={args.seq_len} threads={torch.get_num_threads()} kd={args.kd} "
          f"optimizer={args.optimizer} torch={torch.__version__}")
    print(f"first compiled step (compilation): {first:8.1f} s")
    print(f"same inputs, dropout off: loss eager {loss_eager:.6f}, compiled {loss_compiled:.6f}; "
          f"gradients max |diff| {grad_diff:.3g} (largest gradient {grad_max:.3g})")
    print(f"QAT + KD step, eager:      {t_eager * 1000:8.1f} ms")
    print(f"QAT + KD step, compiled:   {t_compiled * 1000:8.1f} ms")
    print(f"speed-up:                  {t_eager / t_compiled:8.2f}x")


if __name__ == "__main__":
    main()
