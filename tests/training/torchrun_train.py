"""Run by test_distributed.py under torchrun: `layerskip train` twice over one output directory in
one process group (the second run resumes the first's sharded checkpoint), so that torchrun and
the workers start once. The group is the caller's, so the trainer leaves it open between runs."""

import sys

import torch.distributed as dist

from layerskip.cli import main

if __name__ == "__main__":
    steps, args = sys.argv[1].split(","), sys.argv[2:]
    dist.init_process_group("gloo")
    try:
        for n in steps:
            code = main(["train", *args, f"optim.max_steps={n}"])
            if code != 0:
                sys.exit(code)
    finally:
        dist.destroy_process_group()
