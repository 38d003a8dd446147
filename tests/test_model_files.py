"""Model files hold up: save is atomic (a process killed mid-save leaves the old model or
the new one), a failed save leaves the old file and no litter, open files work, and a
file from a newer format names both versions."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastrnn
from fastrnn import LSTMTagger
from fastrnn.exceptions import ModelFileError


def _two_models(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 5, 3)).astype(np.float32)
    y = (np.cumsum(X[:, :, 0], axis=1) > 0).astype(int)
    paths = []
    for seed in (0, 1):
        m = LSTMTagger(hidden_size=200, max_epochs=1, random_state=seed).fit(X, y)
        paths.append(tmp_path / f"m{seed}.npz")
        m.save(paths[-1])
    return X, paths


def test_a_process_killed_while_saving_leaves_a_loadable_model(tmp_path):
    X, (a, b) = _two_models(tmp_path)
    expected = [fastrnn.load(p).predict_proba(X) for p in (a, b)]
    target = tmp_path / "model.npz"
    child = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(os.path.dirname(fastrnn.__file__))!r})
        import fastrnn
        models = [fastrnn.load({str(a)!r}), fastrnn.load({str(b)!r})]
        models[0].save({str(target)!r})
        print("ready", flush=True)
        i = 1
        while True:
            models[i % 2].save({str(target)!r})
            i += 1
    """)
    rng = np.random.default_rng(0)
    outcomes = set()
    for trial in range(8):
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(float(rng.uniform(0.01, 0.15)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        got = fastrnn.load(target).predict_proba(X)
        match = [k for k, e in enumerate(expected) if np.array_equal(got, e)]
        assert match, f"trial {trial}: the file is neither model"
        outcomes.add(match[0])
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".fastrnn-")]
    assert len(leftovers) <= 8          # at most one temporary file per killed writer


def test_a_failed_save_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    X, (a, _) = _two_models(tmp_path)
    m = fastrnn.load(a)
    target = tmp_path / "keep.npz"
    m.save(target)
    before = target.read_bytes()
    os.chmod(target, 0o640)

    def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing)
    with pytest.raises(OSError, match="disk full"):
        m.save(target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".fastrnn-")]
    m.save(target)                                   # the mode of the old file is kept
    assert os.stat(target).st_mode & 0o777 == 0o640
    with open(tmp_path / "open.npz", "wb") as f:     # an open file works too
        m.save(f)
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "open.npz").predict_proba(X),
                                  m.predict_proba(X))


def test_a_newer_format_names_both_versions(tmp_path):
    X, (a, _) = _two_models(tmp_path)
    with np.load(a) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta.update(format=7, fastrnn_version="9.1.0")
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    newer = tmp_path / "newer.npz"
    np.savez(newer, **arrays)
    with pytest.raises(ModelFileError, match=r"fastrnn 0\.2\.0.*newer fastrnn \('9\.1\.0'\)"):
        fastrnn.load(newer)
