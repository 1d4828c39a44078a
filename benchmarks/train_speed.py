"""Training throughput per preset (images/s, median of 5 timed chunks), on real Fashion-MNIST.

    .venv/bin/python benchmarks/train_speed.py [--steps 20] [--batch-size 128] [--threads N]

Prints one line per preset. Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from training.data import augment, channel_stats, load_dataset, to_input
from training.nets import PRESETS, build_net, model_args_for


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20, help="steps per timed chunk")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset("fashion-mnist", allow_download=False)
    mean, std = (torch.tensor(v) for v in channel_stats(ds.train_x[:10000]))
    x, y = torch.from_numpy(ds.train_x), torch.from_numpy(ds.train_y)
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    for preset in PRESETS:
        net = build_net(model_args_for(preset, 1, 10)).to(memory_format=torch.channels_last)
        params = sum(p.numel() for p in net.parameters())
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
        rates = []
        for chunk in range(6):  # the first chunk warms up and is not counted
            t = time.perf_counter()
            for _ in range(args.steps):
                idx = torch.randint(0, len(x), (args.batch_size,), generator=gen)
                xb = to_input(augment(x[idx], 2, True, gen), mean, std)
                xb = xb.contiguous(memory_format=torch.channels_last)
                loss = loss_fn(net(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if chunk:
                rates.append(args.steps * args.batch_size / (time.perf_counter() - t))
        print(
            f"{preset:>8}: {params:>8,} parameters  {statistics.median(rates):8.0f} images/s "
            f"(min {min(rates):.0f}, max {max(rates):.0f}); epoch of 55k ~ "
            f"{55000 / statistics.median(rates):.0f} s"
        )


if __name__ == "__main__":
    main()
