"""What the author declares, resolved against each other: model.yaml and the test cases.

Knows nothing of the engine: the run hands it model.yaml's text (given with --model-yaml,
or read from the image) and the test-data directory. Its problems are kept, not raised,
where they are a finding of one check (image.model-yaml) rather than the end of the run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from . import cases as casedata
from . import compare
from .errors import SetupError
from .metadata import ModelMetadata, load_yaml, parse_metadata
from .observe import Observation
from .rehearsal import accepted


class Declared:
    def __init__(self, observed: Observation) -> None:
        self.observed = observed
        self.metadata: ModelMetadata | None = None
        self.metadata_error: str | None = None  # model.yaml found but unusable: image.model-yaml's finding
        self.cases: list[casedata.Case] = []
        self._discovered: casedata.Found | SetupError | None = None

    def discovered(self, data_dir: Path) -> casedata.Found:
        """The cases on disk, looked for once (the battery, the report and the run all ask)."""
        if self._discovered is None:
            try:
                self._discovered = casedata.discover(data_dir)
            except SetupError as exc:
                self._discovered = exc
        if isinstance(self._discovered, SetupError):
            raise self._discovered
        return self._discovered

    def read_cases(self, data_dir: Path) -> None:
        found = self.discovered(data_dir)
        self.cases = found.cases
        for kind in found.missing_kinds:
            self.observed.warnings.append(
                f"{data_dir} has no {kind}/<case>/ directory: those checks are skipped"
            )

    def use(self, text: str, where: str) -> None:
        """Parse model.yaml; its problems are image.model-yaml's finding, not the end of the run."""
        try:
            self.metadata = parse_metadata(text, where)
            self.observed.model_yaml = where
        except SetupError as exc:
            self.metadata_error = str(exc)
            self.observed.problem(str(exc))

    def compare(self, given: str, text: str, where: str) -> None:
        """--model-yaml given while the image holds its own: say where they differ."""
        with contextlib.suppress(SetupError):
            mine, theirs = load_yaml(given, "model.yaml"), load_yaml(text, where)
            if isinstance(mine, dict) and isinstance(theirs, dict):
                fields = sorted(str(k) for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
                if fields:
                    self.observed.warnings.append(
                        f"the model.yaml given differs from the image's {where.split(':')[-1]} in: "
                        + ", ".join(fields[:10])
                    )

    def check_cases(self) -> None:
        """Every case resolved now: bad test-case data is found before any check runs."""
        if self.metadata is None:
            return
        declared = (*self.metadata.inputs, *self.metadata.outputs)
        for case in self.cases:
            self._inputs_against_declared(case, self.case_inputs(case))
            self.case_outputs(case)
            if case.kind == casedata.EXAMPLES:
                for output in self.metadata.outputs:  # a bad tolerance file is bad data too
                    compare.tolerance_for(case.path, output, declared, compare.Tolerance())
            if case.kind == casedata.VALIDATION_ERRORS:
                self.case_message(case)

    def _inputs_against_declared(self, case: casedata.Case, inputs: dict[str, Path]) -> None:
        """An example input outside what model.yaml declares: a warning, since it is the author's data."""
        if case.kind != casedata.EXAMPLES:
            return
        assert self.metadata is not None
        for name, path in inputs.items():
            limit = self.metadata.input_max.get(name)
            size = path.stat().st_size
            if limit is not None and size > limit:
                self.observed.warnings.append(
                    f"example {case.name}: {name} is {size} bytes, over its declared maxSize of {limit} bytes"
                )
            types = self.metadata.input_types.get(name, ())
            with path.open("rb") as stream:
                head = stream.read(64 * 1024)
            if types and not accepted(types, head):
                self.observed.warnings.append(
                    f"example {case.name}: {name} does not look like any of its acceptedMediaTypes "
                    f"({', '.join(types)})"
                )

    # -- the author's cases, resolved against model.yaml's names ---------------------------

    def case_inputs(self, case: casedata.Case) -> dict[str, Path]:
        assert self.metadata is not None
        return casedata.resolve_inputs(case, self.metadata.inputs, self.metadata.outputs)

    def case_outputs(self, case: casedata.Case) -> dict[str, Path]:
        assert self.metadata is not None
        return casedata.expected_outputs(case, self.metadata.outputs, self.metadata.inputs)

    def case_message(self, case: casedata.Case) -> str:
        assert self.metadata is not None
        return casedata.expected_message(case, self.metadata.inputs)
