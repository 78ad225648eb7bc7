"""The writer under faults injected at exact points: SIGKILL after N chunk writes, while zarr
writes a chunk or consolidates, before the store is marked, during creation and during
resume; concurrent resumes; a full disk (``RLIMIT_FSIZE``).

Each writer runs in a child process (``tests/_faults_writer.py``) that kills itself at the
point named; children are forked from a fork server that imported xccm, xarray, Dask and zarr
once, so each costs a fraction of a second. After each fault the store must not read as
complete, and a resume must give a store byte-identical to an uninterrupted write.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import _faults_writer
import pytest

from xccm.io import IncompleteStoreError, is_complete, open_zarr, to_zarr

pytest.importorskip("zarr", minversion="3")

KILLED = -9
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["__main__", "_faults_writer"])


def _start(store: Path, mode: str = "w-", fault: str = "none", fsize: int | None = None):
    child = _CONTEXT.Process(target=_faults_writer.run, args=(str(store), mode, fault, fsize))
    child.start()
    return child


def _finish(child, store: Path) -> tuple[int, str]:
    child.join(120)
    if child.is_alive():
        child.kill()
        pytest.fail("the writer hung")
    err = Path(f"{store}.err")
    return child.exitcode, err.read_text() if err.exists() else ""


def _write(store: Path, mode: str = "w-", fault: str = "none", fsize: int | None = None):
    """Run the writer in a child process; return its exit status (-9: it killed itself)."""
    return _finish(_start(store, mode, fault, fsize), store)


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def _resume(store: Path) -> None:
    """Finish the write in this process, without a fault."""
    to_zarr(_faults_writer.dataset(), store, mode="resume", encoding=_faults_writer.ENCODING)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """The files of an uninterrupted write."""
    path = tmp_path_factory.mktemp("reference") / "out.zarr"
    to_zarr(_faults_writer.dataset(), path, encoding=_faults_writer.ENCODING)
    return _files(path)


def _assert_not_complete(store: Path) -> None:
    if (store / "zarr.json").exists():
        assert not is_complete(store)
        with pytest.raises(IncompleteStoreError):
            open_zarr(store)


@pytest.mark.parametrize(
    "fault",
    [
        "chunk:1",
        "chunk:16",  # the last chunk
        "record:3",
        "rename:2",
        "zarr-partial",
        "consolidate",
        "mark",
        "create",
    ],
)
def test_killed_writer_resumes_to_the_uninterrupted_store(tmp_path, reference, fault):
    out = tmp_path / "out.zarr"
    status, err = _write(out, "w-", fault)
    assert status == KILLED, err
    _assert_not_complete(out)
    _resume(out)
    assert is_complete(out, verify="checksum")
    assert _files(out) == reference


def test_killed_twice_during_resume(tmp_path, reference):
    out = tmp_path / "out.zarr"
    assert _write(out, "w-", "chunk:4")[0] == KILLED
    assert _write(out, "resume", "chunk:3")[0] == KILLED  # killed while resuming
    _assert_not_complete(out)
    _resume(out)
    assert _files(out) == reference


def test_concurrent_resumes_end_complete_and_identical(tmp_path, reference):
    out = tmp_path / "out.zarr"
    assert _write(out, "w-", "chunk:3")[0] == KILLED
    runs = [_start(out, "resume") for _ in range(2)]
    statuses = [_finish(run, out) for run in runs]
    # A resume may fail when another finishes first and tidies up its temporary files; the
    # store is then complete all the same. At least one finishes.
    assert any(status == 0 for status, _ in statuses), statuses
    assert is_complete(out, verify="checksum")
    assert _files(out) == reference


def test_a_full_disk_leaves_no_temporary_file_and_resumes(tmp_path, reference):
    out = tmp_path / "out.zarr"
    status, err = _write(out, "w-", "none", fsize=8 * 1024)  # a chunk is 12 KiB
    assert status not in (0, KILLED)
    assert "File too large" in err or "No space" in err, err
    _assert_not_complete(out)
    assert not list(out.rglob("*.xccm-tmp")) and not list(out.rglob("*.partial"))
    _resume(out)
    assert _files(out) == reference


def test_many_variables_killed_and_resumed_equal_an_uninterrupted_write(tmp_path):
    # Most variables' metadata are copies of one of their kind (not written by xarray), and
    # completion lists the store once: a kill mid-write still resumes to the same bytes.
    reference = tmp_path / "reference.zarr"
    to_zarr(_faults_writer.many(), reference, encoding=_faults_writer.MANY_ENCODING)
    for fault in ("chunk:31", "record:7", "mark"):
        out = tmp_path / f"{fault.replace(':', '_')}.zarr"
        child = _CONTEXT.Process(
            target=_faults_writer.run, args=(str(out), "w-", fault, None, "many")
        )
        child.start()
        status, err = _finish(child, out)
        assert status == KILLED, err
        _assert_not_complete(out)
        to_zarr(_faults_writer.many(), out, mode="resume", encoding=_faults_writer.MANY_ENCODING)
        assert is_complete(out, verify="checksum")
        assert _files(out) == _files(reference), fault
