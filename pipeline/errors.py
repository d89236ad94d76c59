"""One error type for every stage: it names the file and the problem."""


class StageError(RuntimeError):
    """A stage failed on bad input; ``str()`` is ``<file>: <problem>`` (plus the stage)."""

    def __init__(self, stage: str, path: str, problem: str):
        self.stage, self.path, self.problem = stage, str(path), problem
        super().__init__(f"{self.path}: {problem} [stage {stage}]")
