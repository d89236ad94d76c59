"""``python -m pipeline <stage> <model>``: run one stage of one model (what doit calls);
``python -m pipeline bench <model>``: benchmark a built model against its peers."""
from __future__ import annotations

import os
import sys

import models
from pipeline import dsl, stages
from pipeline.errors import StageError
from toolchain import ToolchainError


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: python -m pipeline <stage> <model>\n  stages: {', '.join(stages.STAGES)}",
              file=sys.stderr)
        return 2
    stage, name = argv
    try:
        models.load()
        m = dsl.lookup(name)
        if stage == "bench":
            from pipeline import bench

            p = stages.Paths(m)
            result = bench.run(name, p.published, p.source, p.root, os.path.join(p.dir, "bench.json"),
                               repeats=int(os.environ.get("WASMFORGE_BENCH_REPEATS", "5")),
                               gflop=bench.gflop(p.source))
            print(bench.table(result))
            return 0
        if stage not in stages.STAGES:
            raise dsl.DeclarationError(f"unknown stage {stage!r}; stages: {', '.join(stages.STAGES)}")
        result = stages.run_stage(m, stage)
    except (StageError, ToolchainError, dsl.DeclarationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{name}: {stage} done: {result}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
