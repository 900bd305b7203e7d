"""The autosave store: round trip, compact files, atomic writes, damaged files skipped, per-test folder."""

import os
import time

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


def test_a_save_keeps_the_older_good_copy_when_the_newest_is_damaged(autosave_dir):
    """Issue 22, item 5: two good saves, the newest truncated, a third save: the good older one stays
    as the fallback, the damaged one does not count as one."""
    store = AutosaveStore(keep=2)
    older = store.save("sig", painted_volume(slices=(1,)))
    newest = store.save("sig", painted_volume(slices=(2,)))
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    third = store.save("sig", painted_volume(slices=(3,)))
    assert older.exists() and read_snapshot(older).painted.indices.tolist() == [1]
    assert not newest.exists()  # the tool's own damaged file is cleaned up, not kept as a fallback
    assert store.latest("sig").painted.indices.tolist() == [3]
    third.write_bytes(b"")  # the newest lost as well: the older good save is still offered
    assert store.latest("sig").painted.indices.tolist() == [1]


def test_a_save_that_does_not_read_back_deletes_nothing(monkeypatch, autosave_dir):
    """A write that 'succeeds' but leaves a file that does not read back (a bad disk, a full quota) must
    not push out the last good save; the save says it failed."""
    store = AutosaveStore(keep=1)
    good = store.save("sig", painted_volume(slices=(1,)))

    def write_garbage(file, **arrays):
        file.write(b"PK\x03\x04 not a whole zip file")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="does not read back"):
        patch.setattr(autosave.np, "savez_compressed", write_garbage)
        store.save("sig", painted_volume(slices=(1, 2)))
    assert good.exists() and store.latest("sig").painted.indices.tolist() == [1]


def test_clean_up_removes_only_files_the_tool_wrote(autosave_dir):
    """Issue 22, item 6: old files in the autosave folder are removed only when both their name and
    their header say the tool wrote them (the user may point the folder at their results)."""
    store = AutosaveStore()
    old_save = store.save("oldscan", painted_volume(slices=(1,)))
    old_temp = old_save.with_name(f".{old_save.name}.k2j4h1x9.npz")  # left by a kill mid-write
    old_temp.write_bytes(old_save.read_bytes()[: old_save.stat().st_size // 2])
    user_npz = autosave_dir / "my_results.npz"
    np.savez_compressed(user_npz, mask=np.ones((4, 4), np.uint8))
    user_tmp = autosave_dir / "notes.tmp"
    user_tmp.write_text("mine")
    lookalike = autosave_dir / "oldscan-000000000000-00000000000000000001.npz"  # our name, not our header
    np.savez_compressed(lookalike, header=np.array('{"format": 1}'), mask=np.ones((4, 4), np.uint8))
    unreadable_lookalike = autosave_dir / "oldscan-000000000000-00000000000000000002.npz"
    unreadable_lookalike.write_bytes(b"someone else's bytes")
    long_ago = time.time() - autosave.MAX_AGE_S - 3600
    for path in autosave_dir.iterdir():
        os.utime(path, (long_ago, long_ago))
    store.save("newscan", painted_volume(slices=(2,)))
    assert not old_save.exists() and not old_temp.exists()  # the tool's own old files
    assert user_npz.exists() and user_tmp.exists() and lookalike.exists() and unreadable_lookalike.exists()
    assert store.latest("newscan") is not None


def test_a_save_of_another_shape_does_not_hide_the_one_that_fits(autosave_dir):
    """Issue 22, item 7: the newest save of a scan key may not fit the open image (an older version of
    the scan, a copied file); the newest save that fits is offered, not nothing."""
    store = AutosaveStore(keep=3)
    store.save("sig", painted_volume(slices=(4,)))
    store.save("sig", painted_volume(shape=(12, 64, 48), slices=(7,)))
    assert store.latest("sig").painted.shape == (12, 64, 48)  # without a shape: the newest of all
    fits = store.latest("sig", shape=(20, 64, 48))
    assert fits is not None and fits.painted.indices.tolist() == [4]
    assert np.array_equal(store.load("sig", shape=(20, 64, 48)), painted_volume(slices=(4,)))
    assert store.latest("sig", shape=(5, 5)) is None


def test_a_file_whose_header_names_another_scan_or_layer_is_not_offered(autosave_dir):
    store = AutosaveStore()
    good = store.save("sig", painted_volume(slices=(4,)))
    other = store.save("other", painted_volume(slices=(9,)))
    copied = good.with_name(good.name.rsplit("-", 1)[0] + f"-{time.time_ns() + 10**9:020d}.npz")
    copied.write_bytes(other.read_bytes())  # another scan's save under this scan's name, newer
    assert store.latest("sig").painted.indices.tolist() == [4]
