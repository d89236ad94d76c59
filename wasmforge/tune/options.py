"""The options of ``doit tune:<model>`` and ``python -m wasmforge tune``, written once: the
CLI's argparse flags and doit's task parameters are both made from this table."""
from __future__ import annotations

from dataclasses import dataclass, fields

from wasmforge.errors import StageError


@dataclass(frozen=True)
class TuneOptions:
    trials: int = 0
    focus: int = 0
    jobs: int = 1
    threads: int = 1
    fresh: bool = False
    recheck: bool = False
    grid: bool = False
    only: str = ""

    def check(self, log_dir: str) -> None:
        """Refuse combinations that would silently ignore an option."""
        if self.only and not self.grid:
            raise StageError("tune", log_dir, "--only picks the kernels of a --grid run: give --grid")
        search = [f"--{f}" for f in ("trials", "focus", "fresh") if getattr(self, f)]
        search += ["--jobs"] if self.jobs > 1 else []
        if (self.recheck or self.grid) and search:
            raise StageError("tune", log_dir, f"{'--recheck' if self.recheck else '--grid'} does not search: "
                             f"{', '.join(search)} would be ignored; leave them out")
        if self.grid and self.recheck:
            raise StageError("tune", log_dir, "--grid and --recheck are two runs: give one")
        if self.recheck and self.threads == 1:
            raise StageError("tune", log_dir, "--recheck re-times the threads variant's log: give --threads T")

    def argv(self) -> list[str]:
        """The flags that say these options (defaults left out)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out += [f"--{f.name}"] if f.type == "bool" else [f"--{f.name}", str(value)]
        return out


HELP = {
    "trials": "trial budget, records already in the log included (default: the model's tune_trials)",
    "focus": "tune only the K kernels costing the most time by the log, an equal share each "
             "(default: every kernel)",
    "jobs": "tuning processes side by side, one per core, each on its share of the kernels (default: 1)",
    "threads": "tune the threads variant's own kernels, for T cores and measured on T threads, into "
               "models/<name>.threads.tuning/ (default: 1: the one-thread log)",
    "fresh": "search from scratch, not from the log's best schedules; the new records are added to the log",
    "recheck": "with --threads: no search; re-time the threads log's best schedules against the "
               "one-thread log's, side by side, and keep those timings (a --threads run ends with this)",
    "grid": "no search: time a small space of schedules for every convolution, matrix product, pool "
            "and other kernel with a default schedule against the log's best, side by side, and add the winners to the log (then re-time the "
            "threads log's kernels)",
    "only": "with --grid: only the kernels whose name contains TEXT (e.g. winograd)",
}
TYPES = {"int": int, "bool": bool, "str": str}


def option_table() -> list[tuple[str, type, object, str]]:
    """(name, type, default, help) of every option, in order."""
    return [(f.name, TYPES[f.type], f.default, HELP[f.name]) for f in fields(TuneOptions)]
