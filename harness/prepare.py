"""Bringing one image into the engine, once: connect, upload or pull or load, find model.yaml.

An error is kept: preparing again would load the image again, and every later check of the
image says it was not evaluated.
"""

from __future__ import annotations

import contextlib
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .budget import Budget
from .declared import Declared
from .dockerengine import DockerRuntime, ImageSource
from .errors import NotRun, SetupError
from .metadata import MODEL_YAML_MAX
from .observe import Observation, timed
from .options import RunOptions
from .platform import UPLOAD_STEP
from .runtime import ModelProcess, PreparedImage, ProgressLine, Runtime

_WRONG_VARIANT = {
    "grpc": "{source} declares the gRPC variant (specification 0.4, type grpc): "
    "check the image with --model-protocol grpc",
    "http": "{source} declares the HTTP contract (specification 0.3, type file): "
    "check the image without --model-protocol grpc",
}


class Preparation:
    def __init__(
        self,
        source: ImageSource,
        options: RunOptions,
        declared: Declared,
        budget: Budget,
        observed: Observation,
        progress: ProgressLine | None,
    ) -> None:
        self.source = source
        self.options = options
        self.declared = declared
        self.budget = budget
        self.observed = observed
        self.progress = progress  # live lines while an image is uploaded
        self.runtime: Runtime | None = None
        self.image: PreparedImage | None = None
        self.setup_error: SetupError | None = None
        self._prepared = False
        self._uploaded = 0.0
        self._upload_began: float | None = None

    def prepare(self, created: Callable[[], ModelProcess] | None = None) -> None:
        """Connect, bring the image into the engine, find model.yaml. Once; errors are kept.

        ``created`` gives the model's container, created but not started, to read the
        image's model.yaml from (no extra container).
        """
        if self.setup_error is not None:
            raise NotRun(f"the image was not evaluated: {self.setup_error}")
        if self._prepared:
            return
        try:
            self._prepare(created)
        except SetupError as exc:
            self.setup_error = exc
            self.observed.problem(str(exc))
            raise
        except Exception as exc:  # kept too: preparing again would load the image again
            self.setup_error = SetupError(f"preparing the image failed: {type(exc).__name__}: {exc}")
            self.observed.problem(str(self.setup_error))
            raise self.setup_error from None
        self._prepared = True

    @contextlib.contextmanager
    def _uploading(self) -> Iterator[None]:
        self._upload_began = time.monotonic()
        try:
            yield
        finally:
            self._uploaded += time.monotonic() - self._upload_began
            self._upload_began = None

    @property
    def uploading(self) -> bool:
        return self._upload_began is not None

    def upload_seconds(self) -> float:
        """Time spent bringing the image in so far (an upload under way included): the time
        bound leaves it out, since an upload is bounded by the engine's progress instead."""
        began = self._upload_began
        return self._uploaded + (time.monotonic() - began if began is not None else 0.0)

    def _prepare(self, created: Callable[[], ModelProcess] | None) -> None:
        if self.source.error is not None:
            raise SetupError(self.source.error)
        declared = self.declared
        if self.options.model_data is not None:
            declared.read_cases(self.options.model_data)
        given_yaml = None
        if self.options.model_yaml is not None:
            self.observed.model_yaml_note = f"model.yaml from {self.options.model_yaml}"
            given_yaml = read_metadata_text(self.options.model_yaml)
            declared.use(given_yaml, str(self.options.model_yaml))
        runtime = self.runtime = self.choose_runtime()
        self.observed.engine_version = runtime.connect()
        # What runs killed outright left behind goes first (never a live run's).
        self.observed.reaped = runtime.reap()
        with timed(self.observed.load_steps, *UPLOAD_STEP) as details, self._uploading():
            self.image = runtime.bring_in(self.observed, self.progress)
            # The report's words, as plain text: observations cross to xdist's controller.
            self.observed.source = self.source.source.value
            details.update(source=self.source.source.value, uploadPercentage=100)
        self.observed.image_id = self.image.image_id
        self.observed.digest = self.image.digest
        self.observed.image_bytes = self.image.size
        if self.has_command and created is not None:
            container = created()
            in_image = runtime.read_model_yaml(container, self.image)
            if in_image is not None and given_yaml is not None:
                declared.compare(given_yaml, *in_image)
            elif in_image is not None:
                text, where = in_image
                self.observed.model_yaml_note = f"model.yaml found in the image at {where.split(':')[-1]}"
                declared.use(text, where)
                container.set_limits(self.budget.limits)
            elif given_yaml is None:
                self.observed.model_yaml_note = (
                    "no model.yaml: given none, and none in the image's working directory or /opt/app; "
                    "the container gets the default limits"
                )
        metadata = declared.metadata
        if metadata is not None and metadata.protocol != self.options.protocol:
            raise SetupError(_WRONG_VARIANT[metadata.protocol].format(source=metadata.source))
        declared.check_cases()

    def choose_runtime(self) -> Runtime:
        """Where the model runs: the one place a runtime is chosen."""
        return DockerRuntime(self.source, self.options.engine_host)

    @property
    def has_command(self) -> bool:
        assert self.image is not None
        return self.image.has_command

    @property
    def model_name(self) -> str:
        metadata = self.declared.metadata
        return metadata.name if metadata else self.source.label

    def close(self) -> list[Callable[[], None]]:
        """The steps that undo what preparing did: the image it loaded or pulled, the connection."""
        return self.runtime.close() if self.runtime is not None else []


def read_metadata_text(path: Path) -> str:
    try:
        found = path.stat()
        if not stat.S_ISREG(found.st_mode):  # a FIFO would block the run before any check
            raise SetupError(f"model.yaml {path} is not a regular file")
        if found.st_size > MODEL_YAML_MAX:
            raise SetupError(f"model.yaml {path} is larger than 1 MiB")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SetupError(f"model.yaml {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read model.yaml {path}: {exc}") from None
