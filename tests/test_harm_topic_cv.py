"""scripts/harm_topic_cv.py's training files: the card's two by default; the later train batches after them
only when asked, so the card's rows keep their indexes; a feature cache names the files it was built from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import load_script


def test_train_files_and_cached_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = load_script("harm_topic_cv")
    monkeypatch.setattr(mod, "DATA", tmp_path)
    for name in ("harm_train_batch5.csv", "harm_train_batch4.csv", "harm_train.csv", "other.csv"):
        (tmp_path / name).write_text("id\n")
    assert mod.train_files(False) == ["harm_train.csv", "judge_train.csv"]
    assert mod.train_files(True) == ["harm_train.csv", "judge_train.csv", "harm_train_batch4.csv",
                                     "harm_train_batch5.csv"]
    np.savez(tmp_path / "c.npz", y=np.zeros(2), files=np.array(mod.train_files(True)))
    assert mod.cached_files(np.load(tmp_path / "c.npz")) == mod.train_files(True)
    np.savez(tmp_path / "old.npz", y=np.zeros(2))  # a cache from before: the card's files
    assert mod.cached_files(np.load(tmp_path / "old.npz")) == ["harm_train.csv", "judge_train.csv"]
