"""aiortc's own SCTP tests, for the aiortc version installed, fetched by package name.

aiortc ships its test suite in its source distribution (not in its wheel). This module
downloads that sdist with pip (``pip download --no-binary :all: --no-deps
aiortc==VERSION``, so through whatever index pip is configured with), and keeps only
what ``tests/test_rtcsctptransport.py`` needs (the test file, ``tests/utils.py``, the
package's ``__init__.py`` and the ``sctp_*.bin`` packets it loads) under
``.cache/aiortc-tests/aiortc-VERSION/`` at the top of the checkout, which git ignores.
Nothing of aiortc's is committed.

``scripts/test`` runs ``python -m tests.aiortc_suite`` before pytest so that a failed
download is its own step; :func:`load_sctp_tests` fetches too if the cache is missing
(a run of one test file, or the run with the oldest versions allowed).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "aiortc-tests"
#: The test module, and what it imports or reads from its own folder.
_WANTED = ("__init__.py", "utils.py", "test_rtcsctptransport.py")
_WANTED_PREFIX = "sctp_"  # packets it loads: sctp_init.bin, sctp_data.bin, ...
_PIP_TIMEOUT_SECONDS = 300


def installed_aiortc() -> str:
    return version("aiortc")


def suite_dir(aiortc_version: str) -> Path:
    return CACHE / f"aiortc-{aiortc_version}"


def fetch(aiortc_version: str | None = None) -> Path:
    """The folder holding aiortc's SCTP tests for ``aiortc_version`` (the installed
    one by default), downloaded first if it is not there yet."""
    aiortc_version = aiortc_version or installed_aiortc()
    target = suite_dir(aiortc_version)
    if (target / "test_rtcsctptransport.py").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=".download-") as scratch:
        work = Path(scratch)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--dest",
            str(work / "sdist"),
            f"aiortc=={aiortc_version}",
        ]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_PIP_TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"could not download aiortc {aiortc_version}'s source distribution "
                f"({' '.join(command)}):\n{done.stdout}{done.stderr}"
            )
        (sdist,) = (work / "sdist").glob("aiortc-*.tar.gz")
        extracted = work / "tests"
        extracted.mkdir()
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                # aiortc-VERSION/tests/NAME, nothing deeper.
                if len(parts) != 3 or parts[1] != "tests" or not member.isfile():
                    continue
                name = parts[2]
                if name in _WANTED or name.startswith(_WANTED_PREFIX):
                    source = archive.extractfile(member)
                    assert source is not None
                    (extracted / name).write_bytes(source.read())
        missing = [name for name in _WANTED if not (extracted / name).is_file()]
        if missing:
            raise RuntimeError(f"{sdist.name} has no tests/{', tests/'.join(missing)}")
        (extracted / "SOURCE").write_text(
            f"tests/ of {sdist.name}, fetched with: pip download --no-binary :all: "
            f"--no-deps aiortc=={aiortc_version}\n"
        )
        try:
            os.rename(extracted, target)  # atomic: a concurrent run sees all or nothing
        except OSError:
            if not (target / "test_rtcsctptransport.py").is_file():
                raise
            shutil.rmtree(extracted)  # another run got there first
    return target


def load_sctp_tests(aiortc_version: str | None = None) -> types.ModuleType:
    """aiortc's ``tests/test_rtcsctptransport.py`` as a module, imported under a package
    name of its own (``from .utils import ...`` in it needs a package, and sfs's tests
    are already called ``tests``)."""
    aiortc_version = aiortc_version or installed_aiortc()
    folder = fetch(aiortc_version)
    package = "aiortc_upstream_tests_" + aiortc_version.replace(".", "_").replace("-", "_")
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            package, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.test_rtcsctptransport")


if __name__ == "__main__":
    print(f"aiortc {installed_aiortc()}'s SCTP tests: {fetch()}")
