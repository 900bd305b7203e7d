"""The autosave store: round trip, compact files, atomic writes, damaged files skipped, per-test folder."""

import os

import numpy as np
import pytest

from napari_fewshot.io import autosave
from napari_fewshot.io.autosave import AutosaveStore, Painted, read_snapshot, scan_signature


def painted_volume(shape=(20, 64, 48), slices=(3, 11), value=2, dtype=np.uint8):
    labels = np.zeros(shape, dtype)
    for k, z in enumerate(slices):
        labels[z, 10 + k:30, 5:20 + k] = value
    return labels


def test_round_trip_keeps_only_painted_slices(autosave_dir):
    store = AutosaveStore()
    assert store.root == autosave_dir  # the env var, read at call time
    labels = painted_volume()
    path = store.save("abc", labels, name="support")
    assert path.parent == autosave_dir and path.suffix == ".npz"
    snap = read_snapshot(path)
    assert snap.painted.indices.tolist() == [3, 11] and snap.painted.planes.shape == (2, 64, 48)
    assert path.stat().st_size < 2000  # two compressed slices, not the volume
    restored = store.load("abc")
    assert restored.dtype == np.uint8 and np.array_equal(restored, labels)
    assert store.load("other scan") is None
    assert not [p for p in autosave_dir.iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("labels", [
    np.pad(np.ones((5, 7), np.uint8), 20),  # 2D support of a single image
    painted_volume(dtype=np.uint32, value=70000),
    painted_volume(dtype=np.int16, value=300),
])
def test_round_trip_2d_and_wide_labels(labels):
    store = AutosaveStore()
    store.save("sig", labels)
    restored = store.load("sig")
    assert restored.dtype == labels.dtype and np.array_equal(restored, labels)


def test_nothing_painted_is_not_saved_and_keeps_earlier_saves():
    store = AutosaveStore()
    store.save("sig", painted_volume())
    assert store.save("sig", np.zeros((20, 64, 48), np.uint8)) is None
    assert np.array_equal(store.load("sig"), painted_volume())


def test_newest_save_wins_and_only_a_few_are_kept(autosave_dir):
    store = AutosaveStore(keep=2)
    for z in range(5):
        store.save("sig", painted_volume(slices=(z,)))
    assert len(list(autosave_dir.glob("sig-*.npz"))) == 2
    assert store.latest("sig").painted.indices.tolist() == [4]
    # layers of other names are kept apart; latest() is the newest of all
    store.save("sig", painted_volume(slices=(9,)), name="second")
    names = [s.name for s in store.snapshots("sig")]
    assert names == ["second", "support"]
    assert store.discard("sig", "second") == 1
    assert store.latest("sig").name == "support"
    assert store.discard("sig") == 2 and store.latest("sig") is None


def test_failed_write_leaves_the_previous_save_valid(monkeypatch, autosave_dir):
    store = AutosaveStore()
    first = painted_volume(slices=(1,))
    store.save("sig", first)

    def crash_mid_write(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")  # what a crash would leave behind
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="No space left"):
        patch.setattr(autosave.np, "savez_compressed", crash_mid_write)
        store.save("sig", painted_volume(slices=(1, 2, 3)))
    assert np.array_equal(store.load("sig"), first)
    assert [p.suffix for p in autosave_dir.iterdir()] == [".npz"]  # the temporary file was removed


def test_killed_write_leaves_only_a_temp_file_that_is_ignored(monkeypatch, autosave_dir):
    store = AutosaveStore()
    store.save("sig", painted_volume(slices=(1,)))

    def killed_before_rename(src, dst):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(autosave.os, "replace", killed_before_rename)
        store.save("sig", painted_volume(slices=(5,)))
    (autosave_dir / ".sig-leftover.tmp").write_bytes(b"garbage")  # a hard kill leaves its temp file
    assert store.latest("sig").painted.indices.tolist() == [1]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong header"])
def test_damaged_file_is_ignored_with_a_message(damage, autosave_dir):
    store = AutosaveStore()
    store.save("sig", painted_volume(slices=(1,)))
    newest = store.save("sig", painted_volume(slices=(2,)))
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        newest.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        newest.write_bytes(b"")
    else:
        np.savez_compressed(newest, header=np.array('{"format": 1, "shape": [20, 64, 48], "dtype": "uint8"}'),
                            indices=np.array([99]), planes=np.zeros((1, 64, 48), np.uint8))
    problems = []
    snap = store.latest("sig", problems)
    assert snap is not None and snap.painted.indices.tolist() == [1]  # the save before it
    assert len(problems) == 1 and problems[0].startswith("Ignored the damaged autosave file")
    assert "\n" not in problems[0]
    for path in autosave_dir.glob("*.npz"):
        path.write_bytes(b"")  # every save damaged
    assert store.load("sig") is None


def test_painted_from_labels_and_equals():
    labels = painted_volume()
    painted = Painted.from_labels(labels)
    assert painted.indices.tolist() == [3, 11] and painted.equals(Painted.from_labels(labels.copy()))
    labels[3, 0, 0] = 1
    assert not Painted.from_labels(labels).equals(painted)
    assert not Painted.from_labels(labels.astype(np.uint16)).equals(Painted.from_labels(labels))
    assert Painted.from_labels(np.zeros((4, 8, 8), np.uint8)).indices.size == 0


def test_scan_signature_depends_on_pixels_shape_and_dtype():
    image = np.arange(2 * 16 * 16, dtype=np.int16).reshape(2, 16, 16)
    sig = scan_signature(image)
    assert sig == scan_signature(image.copy()) and len(sig) == 32
    changed = image.copy()
    changed[1, 5, 5] += 1
    assert scan_signature(changed) != sig
    assert scan_signature(image.astype(np.int32)) != sig
    assert scan_signature(image.reshape(4, 8, 16)) != sig
    assert scan_signature(image[0]) == scan_signature(image[0].copy())  # 2D images too


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(autosave.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert autosave.default_autosave_dir() == tmp_path / "cache" / "napari-fewshot" / "autosave"
    monkeypatch.setenv(autosave.ENV, str(tmp_path / "mine"))
    assert AutosaveStore().root == tmp_path / "mine"
