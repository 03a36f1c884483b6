"""The run-result contract between a Thresher job and the operator.

Every Thresher job writes one small JSON object to its container's termination
message path (``/dev/termination-log``), on success and on failure. The kubelet
copies it into the Pod's ``status.containerStatuses[].state.terminated.message``
where the operator reads it. Kubernetes keeps at most 4096 bytes of it, so
``to_message`` guarantees the encoded form fits, trimming the least important
parts first (warnings, then the error text), and ``parse_message`` says exactly
what was wrong with a message that is missing, truncated or not JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Kubernetes truncates termination messages to 4096 bytes; keep a margin.
MESSAGE_LIMIT_BYTES = 4096
_BUDGET_BYTES = 4000

SCHEMA_VERSION = 1


class RunResult(BaseModel):
    """What one run of a job produced, as the job itself reports it."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: Literal[1] = Field(default=SCHEMA_VERSION, description="Schema version of this message.")
    job_type: str = Field(alias="jobType", description="tmdb, drone, or a free-form name for other jobs.")
    succeeded: bool = Field(description="Whether the job considers its run a success.")
    items: int | None = Field(default=None, ge=0, description="Items collected or processed.")
    valid: int | None = Field(default=None, ge=0, description="Items that passed validation.")
    quality: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Data-quality rate in [0, 1], defined by the job."
    )
    failed: int | None = Field(default=None, ge=0, description="Items or pages that failed.")
    output: str | None = Field(default=None, description="Where the run's output was written.")
    duration_seconds: float | None = Field(default=None, alias="durationSeconds", ge=0.0)
    warnings: list[str] = Field(default_factory=list, description="Human-readable warnings.")
    error: str | None = Field(default=None, description="Why the run failed, when it did.")
    exit_code: int | None = Field(default=None, alias="exitCode", description="The process exit code.")

    def to_message(self) -> str:
        """Compact JSON that always fits the termination-message limit."""
        return encode_bounded(self)


def _encode(result: RunResult) -> str:
    return json.dumps(
        result.model_dump(by_alias=True, exclude_none=True), separators=(",", ":"), ensure_ascii=False
    )


def encode_bounded(result: RunResult, budget: int = _BUDGET_BYTES) -> str:
    """Encode, dropping warnings and then shortening the error until it fits ``budget`` bytes."""
    text = _encode(result)
    if len(text.encode()) <= budget:
        return text
    trimmed = result.model_copy(deep=True)
    dropped = 0
    while trimmed.warnings and len(_encode(trimmed).encode()) > budget:
        trimmed.warnings.pop()
        dropped += 1
    if dropped:
        trimmed.warnings.append(f"... {dropped} more warnings omitted (termination message limit)")
    while len(_encode(trimmed).encode()) > budget and trimmed.warnings:
        trimmed.warnings.pop(0)
    if len(_encode(trimmed).encode()) > budget and trimmed.error:
        overflow = len(_encode(trimmed).encode()) - budget
        keep = max(0, len(trimmed.error.encode()) - overflow - 16)
        trimmed.error = trimmed.error.encode()[:keep].decode(errors="ignore") + " [truncated]"
    if len(_encode(trimmed).encode()) > budget and trimmed.output:
        trimmed.output = trimmed.output[:200]
    return _encode(trimmed)


@dataclass(frozen=True)
class ParsedMessage:
    """A termination message read back: the result, or why there is none."""

    result: RunResult | None
    problem: str | None  # None when the message was a valid RunResult

    @property
    def ok(self) -> bool:
        return self.result is not None


def parse_message(text: str | None) -> ParsedMessage:
    """Read a termination message; never raises."""
    if text is None or not text.strip():
        return ParsedMessage(None, "missing: the job wrote no run result")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        size = len(text.encode())
        if size >= MESSAGE_LIMIT_BYTES - 8:
            return ParsedMessage(None, f"truncated: message is {size} bytes, the Kubernetes limit")
        return ParsedMessage(None, f"not JSON: {err.msg} at position {err.pos}")
    if not isinstance(data, dict):
        return ParsedMessage(None, f"not a run result: JSON {type(data).__name__}, expected an object")
    try:
        return ParsedMessage(RunResult.model_validate(data), None)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        return ParsedMessage(None, f"invalid run result: {where}: {first['msg']}")
