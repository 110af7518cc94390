"""Errors the job raises on purpose.

Every one of them carries a one-line message that says what is wrong and what to do. The CLI
prints that line and exits non-zero; anything else escaping is a bug and keeps its traceback.
"""


class JobError(Exception):
    """Base class: a failure the job detected and explained. `hint` (set where the failure is
    handled, pipeline.FAILURE_POLICIES) is what to do about it, printed after the message."""

    exit_code = 1
    hint = ""

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} [{self.hint}]" if self.hint else message


class InputError(JobError):
    """Bad input (dataset, column, parameters), found before any Spark work.

    The dataset is untouched when this is raised.
    """

    exit_code = 2


class CannotExtend(InputError):
    """`update` cannot extend this index as it is (its type, column, model or options): rebuild
    it. Found before any Spark work; the dataset is untouched."""


class MissingVersionError(InputError):
    """The dataset exists but no longer has the version asked for (cleaned up, or recreated)."""


class SegmentCheckError(JobError):
    """The segments the executors returned cannot form one correct index.

    Raised before merge, so nothing has been committed.
    """


class SparkStageError(JobError):
    """A Spark stage failed after Spark's own retries. Nothing was committed."""


class CommitCheckError(JobError):
    """The index was committed but does not cover what the job planned."""


class RecallTooLowError(JobError):
    """The index was committed, but its measured recall is under --min-recall."""

    exit_code = 3

    def __init__(self, message: str, result: object = None):
        super().__init__(message)
        self.result = result


class DatasetChangedError(JobError):
    """Planned fragments were removed or rewritten while the job ran. Nothing was committed."""


class IndexConflictError(DatasetChangedError):
    """Another index got in the way while the job ran (the same name, or a second vector index
    on the column). Nothing was committed."""


class PreflightError(JobError):
    """The executors cannot run the job (a library missing, or at another version). Nothing
    was written."""


class JobBusyError(JobError):
    """Another live run holds this job's lease. Nothing was written or deleted."""
