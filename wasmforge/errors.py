"""One error type for every stage: it names the file and the problem; and warnings."""
import sys


class StageError(RuntimeError):
    """A stage failed on bad input; ``str()`` is ``<file>: <problem>`` (plus the stage)."""

    def __init__(self, stage: str, path: str, problem: str):
        self.stage, self.path, self.problem = stage, str(path), problem
        super().__init__(f"{self.path}: {problem} [stage {stage}]")


def warn(msg: str) -> None:
    """A problem the build survives (a remote cache down, ignored tuning records): one line
    on stderr, prefixed so it stands out in doit's output."""
    print(f"wasmforge: warning: {msg}", file=sys.stderr)
