"""Time one training step of the reference synthetic CLIP on this CPU in fp32 and in bf16 autocast.

    python tools/bench/cpu_precision.py [--threads 2] [--steps 4] [--batch 128]

On a CPU without native bf16 (x86 without AVX512-BF16 or AMX) bf16 autocast is emulated; this measures what that
costs for the recipe ``seg_trainers.clip.SyntheticClipRecipe`` asks for (bf16). Prints the median seconds per step
(``clip_step``'s forward and InfoNCE loss, backward, AdamW) of each precision after one warm-up step, and what
``seg_train.cpu_bf16_is_native()`` says. Copy the line into docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from seg_train import cpu_bf16_is_native
from seg_trainers.clip import SyntheticClipRecipe, build_synthetic_clip, clip_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per precision (after one warm-up)")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    recipe = SyntheticClipRecipe()
    model = build_synthetic_clip(recipe).model
    size = recipe.world.size
    images = torch.randn(args.batch, 3, size, size)
    tokens = torch.randint(0, 49407, (args.batch, 32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    medians: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        times = []
        for step in range(args.steps + 1):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = clip_step(model, {"images": images, "tokens": tokens}).loss
            torch.autograd.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            if step > 0:
                times.append(time.perf_counter() - start)
        medians[precision] = statistics.median(times)
    print(
        f"batch {args.batch}, {args.threads} threads, cpu_bf16_is_native() = {cpu_bf16_is_native()}: "
        f"fp32 {medians['fp32']:.2f} s/step, bf16 {medians['bf16']:.2f} s/step "
        f"(bf16 / fp32 = {medians['bf16'] / medians['fp32']:.1f}x)"
    )


if __name__ == "__main__":
    main()
