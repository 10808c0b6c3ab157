"""
Runs a fixed set of compatibility tests on every minor release of :epkg:`transformers`
(the latest patch of each, from the oldest tested one to the latest on PyPI) and on one or
several versions of :epkg:`torch`, each pair in its own virtual environment, and writes
the table of ``_doc/versions.rst`` ("Supported versions").

::

    python _bench/version_matrix.py                       # the whole matrix, torch 2.13.0
    python _bench/version_matrix.py --dry-run             # prints the plan, runs nothing
    python _bench/version_matrix.py --transformers 4.57.6,5.23.0 --torch 2.13.0,2.14.1 \\
        --work /tmp/vm_work --tests _unittests/ut_torch_models/test_llms.py \\
        --output /tmp/vm_work/versions_table.md

For every pair ``(transformers, torch)``, the script creates ``<work>/tr<T>-torch<V>`` with
the interpreter running it (``--python`` to change it), installs ``torch==<V>`` first (pinned,
the CPU wheel when pip finds it), then ``pip install -e <repo>[dev] transformers==<T>`` (torch
pinned again so that nothing replaces it), and runs ``python -m pytest <tests> -q -rfE``
inside it from the root of the repository, offline (``HF_HUB_OFFLINE=1``). A virtual
environment that already holds the right versions (and this repository installed in
editable mode) is reused, so a second run only runs the tests; ``--reinstall`` rebuilds them,
``--remove-venvs`` deletes each one after its tests (about 1.6 GB each with the torch CPU wheel).
Tests run in one environment at a time, while the next environment installs (one ahead at
most); ``--jobs N`` gives ``-n N`` to pytest (pytest-xdist), ``--jobs 1`` runs the tests in
one process.

Outputs, written at the end and after every pair (an interrupted run keeps what it did):

* ``--output`` (default ``_doc/versions_table.md``): a markdown table, one row per
  transformers version, one column per torch version, cells ``✓ 123 passed`` or
  ``✗ 3 failed / 120 passed`` with a footnote naming the first failing tests;
* the same table in reStructuredText beside it (``versions_table.rst``, included by
  ``_doc/versions.rst`` since the documentation has no markdown parser);
* the raw results beside it (``versions_table.json``);
* logs of every installation and test run in ``<work>/logs``.

The default list of transformers versions starts at the oldest one of
``TESTED_VERSIONS["transformers"]`` in ``onnx_diagnostic/helpers/compat.py`` (read as text:
this script only uses the standard library, it imports neither torch nor transformers).
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

#: The compatibility set: text-generation parity on the shipped model ids, the custom
#: exporter, onnx-dynamo with the patches, the gallery (the seeds).
COMPAT_TESTS: tuple[str, ...] = (
    "_unittests/ut_torch_models/test_model_inputs.py",
    "_unittests/ut_export/test_custom_parity.py",
    "_unittests/ut_torch_export_patches/test_patch_parity.py",
    "_unittests/ut_xrun_doc/test_documentation_examples.py",
)

#: torch versions tested when ``--torch`` is not given.
DEFAULT_TORCH: tuple[str, ...] = ("2.13.0",)

#: First transformers minor release when compat.py cannot be read.
FALLBACK_SINCE = "4.57"

#: Number of failing tests named per cell.
MAX_FAILURES = 5

_COUNT_NAMES = {
    "passed": "passed",
    "failed": "failed",
    "error": "errors",
    "errors": "errors",
    "skipped": "skipped",
    "xfailed": "xfailed",
    "xpassed": "xpassed",
    "warning": "warnings",
    "warnings": "warnings",
    "deselected": "deselected",
    "rerun": "rerun",
}
_COUNT_RE = re.compile(r"(\d+) (" + "|".join(sorted(_COUNT_NAMES, key=len, reverse=True)) + r")\b")
_DURATION_RE = re.compile(r"\bin (\d+(?:\.\d+)?)s\b")
_RELEASE_RE = re.compile(r"^\d+(\.\d+)*$")


# versions


def release_tuple(version: str) -> tuple[int, ...] | None:
    """
    Returns the numbers of a final release (``"5.23.0"`` -> ``(5, 23, 0)``), None for a
    pre-release, a development or a local version (``"5.0.0rc1"``, ``"2.13.0+cpu"``).
    """
    version = version.strip()
    if not _RELEASE_RE.match(version):
        return None
    return tuple(int(p) for p in version.split("."))


def parse_pip_index_versions(text: str) -> list[str]:
    """
    Returns the versions listed by ``pip index versions <package>``, as printed
    (newest first), from the line ``Available versions: 5.24.0, 5.23.0, ...``.

    :raises ValueError: if the output has no such line
    """
    for line in text.splitlines():
        line = line.strip()
        if line.lower().startswith("available versions:"):
            values = line.split(":", 1)[1]
            return [v.strip() for v in values.split(",") if v.strip()]
    raise ValueError(
        f"no line 'Available versions:' in the output of pip index versions: {text[:300]!r}"
    )


def latest_patch_per_minor(versions: Sequence[str], since: str = FALLBACK_SINCE) -> list[str]:
    """
    Keeps the latest patch release of every minor release ``>= since``, oldest first.
    Pre-releases and local versions are ignored.
    """
    first = release_tuple(since)
    if first is None:
        raise ValueError(f"since={since!r} is not a release number")
    best: dict[tuple[int, ...], tuple[tuple[int, ...], str]] = {}
    for v in versions:
        t = release_tuple(v)
        if t is None:
            continue
        t3 = (t + (0, 0, 0))[:3]
        if t3[: len(first)] < first:
            continue
        minor = t3[:2]
        if minor not in best or t3 > best[minor][0]:
            best[minor] = (t3, v)
    return [best[k][1] for k in sorted(best)]


def split_list(text: str | None) -> list[str]:
    """Splits ``"a,b, c"`` into ``["a", "b", "c"]``, an empty or None text into ``[]``."""
    if not text:
        return []
    return [v.strip() for v in text.split(",") if v.strip()]


def tested_since(repo: str = ROOT) -> str:
    """
    Returns the oldest tested transformers of ``TESTED_VERSIONS`` in
    ``onnx_diagnostic/helpers/compat.py``, read with :mod:`ast` (nothing is imported),
    :data:`FALLBACK_SINCE` if it cannot be read.
    """
    path = os.path.join(repo, "onnx_diagnostic", "helpers", "compat.py")
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError):
        return FALLBACK_SINCE
    for node in tree.body:
        target = None
        if isinstance(node, ast.AnnAssign):
            target = node.target
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "TESTED_VERSIONS" and node.value:
            try:
                value = ast.literal_eval(node.value)
                return str(value["transformers"][0])
            except (ValueError, KeyError, IndexError, TypeError):
                return FALLBACK_SINCE
    return FALLBACK_SINCE


def available_versions(package: str, python: str = sys.executable) -> list[str]:
    """Runs ``python -m pip index versions <package>`` and returns the listed versions."""
    proc = subprocess.run(
        [python, "-m", "pip", "index", "versions", package],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"'pip index versions {package}' failed ({proc.returncode}): "
            f"{proc.stderr.strip()[-500:]}; give the versions with --transformers"
        )
    return parse_pip_index_versions(proc.stdout)


# pytest


def parse_pytest_summary(text: str) -> dict[str, Any] | None:
    """
    Parses the closing line of pytest (``=== 3 failed, 120 passed, 2 skipped in 12.3s ===``,
    or without the ``=`` with ``-q``): returns the counts (``passed``, ``failed``, ``errors``,
    ``skipped``... 0 when absent) and ``duration`` (seconds, None if not printed),
    None if no closing line is found.
    """
    for line in reversed(text.splitlines()):
        line = line.strip().strip("=").strip()
        duration = _DURATION_RE.search(line)
        if duration is None:
            continue
        counts = _COUNT_RE.findall(line[: duration.start()])
        if not counts and not line.startswith("no tests ran"):
            continue
        res: dict[str, Any] = {name: 0 for name in sorted(set(_COUNT_NAMES.values()))}
        for n, name in counts:
            res[_COUNT_NAMES[name]] += int(n)
        res["duration"] = float(duration.group(1))
        return res
    return None


def parse_failures(text: str) -> list[str]:
    """
    Returns the ids of the failing tests (``FAILED``, ``SUBFAILED(...)`` for a failing
    subtest) and of the tests in error (``ERROR``) from the short summary pytest prints with
    ``-rfE``, in order, without duplicates.
    """
    found: list[str] = []
    for line in text.splitlines():
        if line.startswith("SUBFAILED(") and ") " in line:
            # SUBFAILED(i='2') path::test - message: the subtest parameters come first
            line = "FAILED " + line[line.index(") ") + 2 :]
        for prefix in ("FAILED ", "ERROR "):
            if line.startswith(prefix):
                rest = line[len(prefix) :]
                name = rest.split(" - ", 1)[0]
                if name.count("[") > name.count("]") and "]" in rest:
                    # a parametrized id holding " - ": the id ends with its bracket
                    name = rest[: rest.rindex("]") + 1]
                name = name.strip()
                if name and name not in found:
                    found.append(name)
    return found


# tables


def format_cell(result: dict[str, Any] | None) -> str:
    """
    Returns the text of a cell: ``✓ 123 passed``, ``✗ 3 failed / 120 passed``,
    ``✗ install failed``..., ``not run`` when the pair was not run.
    """
    if result is None:
        return "not run"
    status = result.get("status")
    if status in ("install-failed", "timeout", "no-summary"):
        return f"✗ {status.replace('-', ' ')}"
    passed = result.get("passed", 0)
    bad = []
    if result.get("errors"):
        bad.append(f"{result['errors']} error{'s' if result['errors'] > 1 else ''}")
    if result.get("failed"):
        bad.append(f"{result['failed']} failed")
    extra = f", {result['skipped']} skipped" if result.get("skipped") else ""
    if not bad and status == "failed":
        bad.append(f"exit code {result.get('returncode')}")
    if bad:
        return f"✗ {', '.join(bad)} / {passed} passed{extra}"
    if status == "no-tests" or passed == 0:
        return f"✗ no test passed{extra}"
    return f"✓ {passed} passed{extra}"


def _failed(result: dict[str, Any] | None) -> bool:
    return result is not None and format_cell(result).startswith("✗")


def _footnote(result: dict[str, Any]) -> str:
    names = result.get("failures") or []
    total = result.get("n_failures", len(names))
    if names:
        text = ", ".join(names)
        if total > len(names):
            text += f" (+{total - len(names)} more)"
    else:
        text = result.get("message") or f"see {result.get('log', 'the log')}"
    return f"transformers {result['transformers']}, torch {result['torch']}: {text}"


def _grid(
    results: Sequence[dict[str, Any]],
) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    def key(v: str) -> tuple[int, ...]:
        return release_tuple(v) or (0,)

    cells = {(r["transformers"], r["torch"]): r for r in results}
    rows = sorted({r["transformers"] for r in results}, key=key, reverse=True)
    cols = sorted({r["torch"] for r in results}, key=key)
    return rows, cols, cells


def _annotated_grid(
    results: Sequence[dict[str, Any]],
) -> tuple[list[str], list[tuple[str, list[tuple[str, int | None]]]], list[str]]:
    """
    Columns, rows of ``(cell text, footnote number or None)`` and footnotes, shared by both
    table formats: a failing cell gets the number of the footnote naming its failing tests.
    """
    rows, cols, cells = _grid(results)
    notes: list[str] = []
    grid = []
    for r in rows:
        values: list[tuple[str, int | None]] = []
        for c in cols:
            res = cells.get((r, c))
            note = None
            if _failed(res):
                notes.append(_footnote(res))
                note = len(notes)
            values.append((format_cell(res), note))
        grid.append((r, values))
    return cols, grid, notes


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """
    Returns the markdown table of ``results`` (rows: transformers, newest first; columns:
    torch), failing cells refer to a footnote listing the first failing tests.
    """
    cols, grid, notes = _annotated_grid(results)
    lines = [
        "| transformers | " + " | ".join(f"torch {c}" for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for r, values in grid:
        texts = [text if n is None else f"{text} [^{n}]" for text, n in values]
        lines.append(f"| {r} | " + " | ".join(texts) + " |")
    if notes:
        lines.append("")
        lines.extend(f"[^{i}]: {n}" for i, n in enumerate(notes, 1))
    return "\n".join(lines) + "\n"


def rst_table(results: Sequence[dict[str, Any]]) -> str:
    """Returns the same table as :func:`markdown_table` as a reStructuredText list-table."""
    cols, grid, notes = _annotated_grid(results)
    lines = [".. list-table::", "    :header-rows: 1", ""]
    lines.append("    * - transformers")
    lines.extend(f"      - torch {c}" for c in cols)
    for r, values in grid:
        lines.append(f"    * - {r}")
        for text, n in values:
            lines.append(f"      - {text}" + ("" if n is None else f" [#vm{n}]_"))
    if notes:
        lines.append("")
        for i, n in enumerate(notes, 1):
            head, _, names = n.partition(": ")
            lines.append(f".. [#vm{i}] {head}: ``{names}``")
    return "\n".join(lines) + "\n"


def write_outputs(output: str, results: Sequence[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Writes ``output`` (markdown), the rst table and the raw results (json) beside it."""
    base = os.path.splitext(output)[0]
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    header = (
        f"Generated by `_bench/version_matrix.py` on {meta['date']} "
        f"(python {meta['python']}, {meta['platform']}), tests: "
        + ", ".join(f"`{t}`" for t in meta["tests"])
        + ".\n\n"
    )
    with open(output, "w", encoding="utf-8") as f:
        f.write(header + markdown_table(results))
    rst_header = header.replace("`", "``")
    with open(base + ".rst", "w", encoding="utf-8") as f:
        f.write(rst_header + rst_table(results))
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(dict(meta=meta, results=list(results)), f, indent=2)
        f.write("\n")


# virtual environments


def venv_name(transformers: str, torch: str) -> str:
    """Name of the virtual environment of a pair."""
    return f"tr{transformers}-torch{torch}"


def venv_python(venv: str) -> str:
    """The interpreter of a virtual environment."""
    if sys.platform == "win32":
        return os.path.join(venv, "Scripts", "python.exe")
    return os.path.join(venv, "bin", "python")


_PROBE = """
import importlib.metadata as md, importlib.util as iu, json
def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
spec = iu.find_spec("onnx_diagnostic")
print(json.dumps(dict(torch=v("torch"), transformers=v("transformers"), pytest=v("pytest"),
                      xdist=v("pytest-xdist"), origin=spec.origin if spec else None)))
"""


def installed_versions(venv: str) -> dict[str, Any] | None:
    """
    Returns the versions installed in ``venv`` (torch, transformers, pytest, xdist) and where
    ``onnx_diagnostic`` comes from, without importing them; None if the venv is unusable.
    """
    python = venv_python(venv)
    if not os.path.exists(python):
        return None
    proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def venv_matches(
    installed: dict[str, Any] | None, transformers: str, torch: str, repo: str, jobs: int
) -> bool:
    """Tells if a venv described by :func:`installed_versions` can be reused."""
    if not installed:
        return False
    origin = installed.get("origin") or ""
    return (
        (installed.get("torch") or "").split("+")[0] == torch.split("+")[0]
        and installed.get("transformers") == transformers
        and bool(installed.get("pytest"))
        and (jobs <= 1 or bool(installed.get("xdist")))
        and os.path.abspath(origin).startswith(os.path.join(os.path.abspath(repo), ""))
    )


def install_commands(
    venv: str, transformers: str, torch: str, repo: str, python: str
) -> list[list[str]]:
    """The commands creating ``venv``: venv, torch first (pinned), the project and transformers."""
    py = venv_python(venv)
    return [
        [python, "-m", "venv", "--clear", venv],
        [py, "-m", "pip", "install", "-q", f"torch=={torch}"],
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "-e",
            f"{repo}[dev]",
            f"transformers=={transformers}",
            f"torch=={torch}",
        ],
    ]


def pytest_command(venv: str, tests: Sequence[str], jobs: int) -> list[str]:
    """The pytest command run in ``venv`` from the root of the repository."""
    cmd = [venv_python(venv), "-m", "pytest", *tests, "-q", "-rfE", "-p", "no:cacheprovider"]
    if jobs > 1:
        cmd.extend(["-n", str(jobs)])
    return cmd


def _env(venv: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        VIRTUAL_ENV=venv,
        PATH=os.path.dirname(venv_python(venv)) + os.pathsep + os.environ.get("PATH", ""),
    )
    return env


def _run(cmd: list[str], log: str, cwd: str, env: dict[str, str], timeout: float) -> int | None:
    """Runs ``cmd``, appends its output to ``log``, returns its exit code (None on timeout)."""
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # the process group started above: pytest and its xdist workers
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            f.write(f"\n!!! killed after {timeout}s\n")
            return None
        except KeyboardInterrupt:
            # a new session does not receive the Ctrl+C of the terminal
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def _log(msg: str) -> None:
    print(f"[version_matrix] {msg}", file=sys.stderr, flush=True)


def _pair_paths(transformers: str, torch: str, work: str) -> tuple[str, str, str]:
    """The venv, installation log and test log of a pair."""
    name = venv_name(transformers, torch)
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    return (
        os.path.join(work, name),
        os.path.join(logs, f"{name}.install.log"),
        os.path.join(logs, f"{name}.pytest.log"),
    )


def prepare_pair(transformers: str, torch: str, args: argparse.Namespace) -> dict[str, Any]:
    """Creates (or reuses) the venv of a pair; returns the result so far.

    ``status`` is ``install-failed`` when an installation step failed, absent otherwise.
    """
    venv, install_log, test_log = _pair_paths(transformers, torch, args.work)
    res: dict[str, Any] = dict(transformers=transformers, torch=torch, venv=venv, log=test_log)
    env = _env(venv)
    begin = time.perf_counter()
    installed = None if args.reinstall else installed_versions(venv)
    if venv_matches(installed, transformers, torch, args.repo, args.jobs):
        _log(f"reuses {venv}")
        res["reused"] = True
    else:
        res["reused"] = False
        _log(f"creates {venv} (log {install_log})")
        open(install_log, "w").close()
        for cmd in install_commands(venv, transformers, torch, args.repo, args.python):
            rc = _run(cmd, install_log, args.repo, env, args.timeout)
            if rc != 0:
                res.update(
                    status="install-failed",
                    message=f"{shlex.join(cmd)} exited with {rc}, see {install_log}",
                    log=install_log,
                    install_time=round(time.perf_counter() - begin, 1),
                )
                return res
        installed = installed_versions(venv)
    res["install_time"] = round(time.perf_counter() - begin, 1)
    res["installed"] = installed
    return res


def test_pair(
    res: dict[str, Any], args: argparse.Namespace, tests: Sequence[str]
) -> dict[str, Any]:
    """Runs the tests in the venv :func:`prepare_pair` made; completes and returns ``res``."""
    if res.get("status") == "install-failed":
        return res
    venv, _, test_log = _pair_paths(res["transformers"], res["torch"], args.work)
    env = _env(venv)
    cmd = pytest_command(venv, tests, args.jobs)
    _log(f"runs {shlex.join(cmd[1:])} (log {test_log})")
    with open(test_log, "w", encoding="utf-8"):
        pass
    begin = time.perf_counter()
    rc = _run(cmd, test_log, args.repo, env, args.timeout)
    res["duration"] = round(time.perf_counter() - begin, 1)
    res["returncode"] = rc
    with open(test_log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    summary = parse_pytest_summary(text)
    failures = parse_failures(text)
    res["n_failures"] = len(failures)
    res["failures"] = failures[:MAX_FAILURES]
    if summary:
        res["pytest_duration"] = summary.pop("duration")
        res.update(summary)
    if rc is None:
        res["status"] = "timeout"
        res["message"] = f"killed after {args.timeout}s, see {test_log}"
    elif summary is None:
        res["status"] = "no-summary"
        res["message"] = f"pytest exited with {rc} without a summary line, see {test_log}"
    elif rc == 5:
        res["status"] = "no-tests"
    else:
        res["status"] = "ok" if rc == 0 else "failed"
    return res


# main


def get_parser() -> argparse.ArgumentParser:
    """The parser of the command line."""
    parser = argparse.ArgumentParser(
        prog="python _bench/version_matrix.py",
        description=(
            "Runs the compatibility tests on every transformers minor release (latest patch) "
            "and the given torch versions, one virtual environment per pair, and writes the "
            "table of the page 'Supported versions'."
        ),
    )
    parser.add_argument(
        "--transformers",
        default=None,
        help="comma-separated transformers versions; default: the latest patch of every "
        "minor release from --since to the latest on PyPI (pip index versions)",
    )
    parser.add_argument(
        "--since",
        default=None,
        help="first transformers minor release of the default list; default: the oldest "
        "tested one in TESTED_VERSIONS (onnx_diagnostic/helpers/compat.py)",
    )
    parser.add_argument(
        "--torch",
        default=",".join(DEFAULT_TORCH),
        help="comma-separated torch versions, default %(default)s",
    )
    parser.add_argument(
        "--tests",
        default=",".join(COMPAT_TESTS),
        help="comma-separated test files or ids, relative to the repository; default: the "
        "compatibility set %(default)s",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="pytest workers (pytest -n N), 1 runs the tests in one process; "
        "environments always run one at a time; default %(default)s",
    )
    parser.add_argument(
        "--work",
        default=None,
        help="folder of the virtual environments and logs, reused by the next run; "
        "default: a new temporary folder",
    )
    parser.add_argument(
        "--output",
        default=os.path.join(ROOT, "_doc", "versions_table.md"),
        help="markdown table, the .rst and .json are written beside it; default %(default)s",
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter creating the virtual environments"
    )
    parser.add_argument("--repo", default=ROOT, help="the repository, default %(default)s")
    parser.add_argument(
        "--timeout",
        type=float,
        default=7200,
        help="seconds allowed to each installation step and each test run, default %(default)s",
    )
    parser.add_argument(
        "--reinstall", action="store_true", help="rebuilds the virtual environments"
    )
    parser.add_argument(
        "--remove-venvs",
        action="store_true",
        help="removes every virtual environment once its tests ran (about 1.6 GB each with the "
        "torch CPU wheel, more with a CUDA build); the next run reinstalls them",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="prints the versions and commands, runs nothing"
    )
    return parser


def plan_versions(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Returns the transformers and torch versions to test."""
    torch_versions = split_list(args.torch)
    if not torch_versions:
        raise SystemExit("--torch is empty")
    transformers_versions = split_list(args.transformers)
    if not transformers_versions:
        since = args.since or tested_since(args.repo)
        transformers_versions = latest_patch_per_minor(
            available_versions("transformers", args.python), since
        )
    return transformers_versions, torch_versions


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the matrix; returns 0 when every pair passes, 1 otherwise (0 for a dry run)."""
    args = get_parser().parse_args(argv)
    args.repo = os.path.abspath(args.repo)
    tests = split_list(args.tests)
    if not tests:
        raise SystemExit("--tests is empty")
    transformers_versions, torch_versions = plan_versions(args)
    pairs = [(t, v) for t in transformers_versions for v in torch_versions]

    if args.dry_run:
        work = args.work or "<temporary folder>"
        print(f"transformers: {', '.join(transformers_versions)}")
        print(f"torch: {', '.join(torch_versions)}")
        print(f"tests: {', '.join(tests)}")
        print(f"{len(pairs)} virtual environments in {work}, output {args.output}")
        for t, v in pairs:
            venv = os.path.join(work, venv_name(t, v))
            print(f"\n# transformers {t}, torch {v} (skipped if {venv} already matches)")
            for cmd in install_commands(venv, t, v, args.repo, args.python):
                print(shlex.join(cmd))
            print(
                f"cd {shlex.quote(args.repo)} && HF_HUB_OFFLINE=1 "
                + shlex.join(pytest_command(venv, tests, args.jobs))
            )
        return 0

    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="version_matrix_")
    args.work = os.path.abspath(args.work)
    os.makedirs(args.work, exist_ok=True)
    meta = dict(
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        python=platform.python_version(),
        platform=platform.platform(terse=True),
        tests=tests,
        jobs=args.jobs,
        work=args.work,
        command=shlex.join([os.path.relpath(__file__, args.repo), *(argv or sys.argv[1:])]),
    )
    _log(f"{len(pairs)} pairs, work folder {args.work}")
    results: list[dict[str, Any]] = []
    # the next pair installs (mostly disk and network) while the current one runs its tests
    # (mostly CPU); one installation ahead at most, so that --remove-venvs bounds the disk
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare_pair, *pairs[0], args) if pairs else None
        for i, (t, v) in enumerate(pairs, 1):
            assert pending is not None
            res = pending.result()
            pending = pool.submit(prepare_pair, *pairs[i], args) if i < len(pairs) else None
            _log(f"[{i}/{len(pairs)}] transformers {t}, torch {v}")
            res = test_pair(res, args, tests)
            if args.remove_venvs and os.path.isdir(res["venv"]):
                shutil.rmtree(res["venv"], ignore_errors=True)
                _log(f"removed {res['venv']}")
            _log(f"[{i}/{len(pairs)}] transformers {t}, torch {v}: {format_cell(res)}")
            results.append(res)
            write_outputs(args.output, results, meta)
    print(open(args.output, encoding="utf-8").read())
    base = os.path.splitext(args.output)[0]
    _log(f"wrote {args.output}, {base}.rst, {base}.json")
    return 1 if any(_failed(r) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
